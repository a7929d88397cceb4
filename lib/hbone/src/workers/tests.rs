use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// A connected pair on loopback: (accepted side, client side).
async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (accepted, client) = tokio::join!(listener.accept(), client);
    (accepted.unwrap().0, client.unwrap())
}

#[test]
fn no_workers_is_an_error() {
    let error = Workers::start("w", 0).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_connection_and_what_it_spawns_run_on_one_worker_thread() {
    let workers = Workers::start("test-worker", 2).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (accepted, mut client) = pair(&listener).await;
    let (seen, mut names) = mpsc::unbounded_channel();
    workers
        .serve(accepted, move |mut tcp| async move {
            seen.send(thread_name()).unwrap();
            let spawned = seen.clone();
            tokio::spawn(async move { spawned.send(thread_name()).unwrap() })
                .await
                .unwrap();
            // The stream works on the worker's reactor.
            let mut buf = [0u8; 4];
            tcp.read_exact(&mut buf).await.unwrap();
            tcp.write_all(&buf).await.unwrap();
        })
        .unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    let first = names.recv().await.unwrap();
    let second = names.recv().await.unwrap();
    assert!(first.starts_with("test-worker-"), "ran on {first:?}");
    assert_eq!(first, second, "a spawned task left its connection's worker");
    assert_ne!(first, thread_name(), "ran on the accepting thread");
}

#[tokio::test]
async fn a_new_connection_goes_to_the_worker_with_fewest_open() {
    let workers = Workers::start("w", 2).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (names_tx, mut names) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    let mut hold = Vec::new();
    for _ in 0..4 {
        let (accepted, client) = pair(&listener).await;
        clients.push(client);
        let (release, released) = oneshot::channel::<()>();
        hold.push(release);
        let names_tx = names_tx.clone();
        workers
            .serve(accepted, move |_tcp| async move {
                names_tx.send(thread_name()).unwrap();
                let _ = released.await;
            })
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(names.recv().await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["w-0", "w-0", "w-1", "w-1"]);
    assert_eq!(workers.open_connections(), [2, 2]);

    // Ties go in turn, so w-0 took the first and the third; both end ...
    drop(hold.remove(0));
    drop(hold.remove(1));
    wait_until(|| workers.open_connections() == [0, 2]).await;
    // ... and the next connection goes to the idle worker, whose turn it
    // is not.
    workers.next.store(1, Ordering::Relaxed);
    let (accepted, _client) = pair(&listener).await;
    let names_tx = names_tx.clone();
    workers
        .serve(accepted, move |_tcp| async move {
            names_tx.send(thread_name()).unwrap();
            std::future::pending::<()>().await;
        })
        .unwrap();
    assert_eq!(names.recv().await.unwrap(), "w-0");
}

#[tokio::test]
async fn dropping_the_workers_cancels_their_connections() {
    let workers = Workers::start("w", 1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (accepted, mut client) = pair(&listener).await;
    let (started, is_started) = oneshot::channel();
    workers
        .serve(accepted, move |tcp| async move {
            let _tcp = tcp;
            started.send(()).unwrap();
            std::future::pending::<()>().await;
        })
        .unwrap();
    is_started.await.unwrap();
    drop(workers);
    // The task is dropped with its runtime, and with it the socket: the
    // client reads end of stream.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
    assert_eq!(
        read.expect("the connection outlived its worker").unwrap(),
        0
    );
}

async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn a_placement_counts_on_its_worker_until_dropped_and_keeps_its_tasks_there() {
    let workers = Workers::start("p", 2).unwrap();
    let first = workers.place();
    let second = workers.place();
    assert_eq!(workers.open_connections(), [1, 1]);

    let (names_tx, mut names) = mpsc::unbounded_channel();
    first.handle().spawn(async move {
        names_tx.send(thread_name()).unwrap();
        let names_tx = names_tx.clone();
        tokio::spawn(async move { names_tx.send(thread_name()).unwrap() });
    });
    let (parent, child) = (names.recv().await.unwrap(), names.recv().await.unwrap());
    assert!(parent.starts_with("p-"), "ran on {parent:?}");
    assert_eq!(
        parent, child,
        "a task spawned by a placed task left its worker"
    );

    // Dropped, a placement frees its worker for the next one.
    let freed = if parent == "p-0" { [0, 1] } else { [1, 0] };
    drop(first);
    assert_eq!(workers.open_connections(), freed);
    let third = workers.place();
    assert_eq!(workers.open_connections(), [1, 1]);
    drop((second, third));
    assert_eq!(workers.open_connections(), [0, 0]);
}

#[tokio::test]
async fn each_worker_thread_knows_its_own_id_and_other_threads_have_none() {
    assert_eq!(current_worker(), None, "a test's runtime is no worker");
    let workers = Workers::start("id", 2).unwrap();
    let others = Workers::start("id-other", 1).unwrap();
    // Held together, two placements are on the two workers.
    let (first, second, other) = (workers.place(), workers.place(), others.place());
    // The id seen by a task on `placement`, and by a task it spawns.
    let ids = |placement: &Placement| {
        placement.handle().spawn(async {
            let spawned = tokio::spawn(async { current_worker() });
            (current_worker(), spawned.await.unwrap())
        })
    };
    let (id, spawned) = ids(&first).await.unwrap();
    let id = id.expect("a worker has an id");
    assert_eq!(spawned, Some(id), "a spawned task has its worker's id");
    assert_eq!(
        ids(&first).await.unwrap().0,
        Some(id),
        "the same worker, the same id"
    );
    let (second, _) = ids(&second).await.unwrap();
    assert!(
        second.is_some_and(|s| s != id),
        "two workers, one id: {id:?}"
    );
    let (other, _) = ids(&other).await.unwrap();
    assert!(
        other.is_some_and(|o| o != id && Some(o) != second),
        "ids repeat across groups of workers: {other:?}"
    );
}
