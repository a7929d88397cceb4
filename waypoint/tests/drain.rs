//! Drain: readiness turns 503, new tunnels are refused, and a request in
//! flight finishes.

mod support;

use std::time::Duration;

use support::{Mesh, get1, http_get_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_the_request_in_flight_finish_and_takes_no_new_one() {
    let mesh = Mesh::start(30, "").await;
    let mut client = mesh.http1().await;
    let readiness = mesh.waypoint.readiness_addr();
    let hbone = mesh.waypoint.hbone_addr();
    let in_flight = tokio::spawn(async move { get1(&mut client, "/slow", &[]).await });
    // Let the request reach the app before draining.
    tokio::time::sleep(support::SLOW / 5).await;
    let Mesh { waypoint, .. } = mesh;
    let drained = tokio::spawn(waypoint.drain());
    support::eventually("readiness to turn 503", || async move {
        http_get_status(readiness, "/healthz/ready").await != Some(200)
    })
    .await;
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1 GET /slow HTTP/1.1"));
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drain should end once the request is done")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(hbone).await.is_err(),
        "the HBONE listener is closed after drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_drain_deadline_open_tunnels_are_closed() {
    let mesh = Mesh::start_with(31, "", &["--drain-seconds", "0"]).await;
    let mut client = mesh.http1().await;
    let in_flight = tokio::spawn(async move {
        client.ready().await.unwrap();
        let request = http::Request::get("/slow")
            .header("host", support::ECHO_HOST)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        client.send_request(request).await
    });
    tokio::time::sleep(support::SLOW / 5).await;
    let Mesh { waypoint, .. } = mesh;
    tokio::time::timeout(support::SLOW, waypoint.drain())
        .await
        .expect("drain ends at its deadline, before the slow answer");
    let answer = in_flight.await.unwrap();
    assert!(answer.is_err(), "the request was cut off: {answer:?}");
}
