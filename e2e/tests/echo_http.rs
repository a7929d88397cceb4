//! echo-http, in-process and as the built binary: the report, every
//! control, bad controls, bodies, and a clean stop.

// Helpers outside `#[test]` functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use e2e::echo_http::Config;
use hyper::{Method, StatusCode};
use support::{Process, get, read_body, request, start_echo_http};

fn config(pod: &str, version: &str) -> Config {
    Config::new(pod, version).unwrap()
}

#[tokio::test]
async fn reports_pod_version_and_the_request() {
    let server = start_echo_http(config("backend-v2-abc", "v2")).await;
    let answer = request(
        server.addr,
        Method::GET,
        "/api/items?color=blue&n=3",
        &[("x-marker", "m-123"), ("accept", "application/json")],
        String::new(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-echo-pod"], "backend-v2-abc");
    assert_eq!(answer.headers["x-echo-version"], "v2");
    assert_eq!(answer.headers["content-type"], "application/json");
    let report = answer.json();
    assert_eq!(report["pod"], "backend-v2-abc");
    assert_eq!(report["version"], "v2");
    assert_eq!(report["method"], "GET");
    assert_eq!(report["path"], "/api/items");
    assert_eq!(report["query"], "color=blue&n=3");
    assert_eq!(report["headers"]["x-marker"], "m-123");
    assert_eq!(report["headers"]["host"], "echo.test");
    assert_eq!(report["headers"]["accept"], "application/json");
    assert_eq!(report["status"], 200);
    assert_eq!(report["injected_failure"], false);
    assert_eq!(report["body_bytes"], 0);
    // The peer is this test's socket: loopback, some ephemeral port.
    let peer: std::net::SocketAddr = report["peer"].as_str().unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_ne!(peer.port(), server.addr.port());

    let bare = get(server.addr, "/").await.json();
    assert_eq!(bare["path"], "/");
    assert_eq!(bare["query"], serde_json::Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn counts_the_request_body() {
    let server = start_echo_http(config("a", "v1")).await;
    let body = "x".repeat(300_000);
    let answer = request(server.addr, Method::POST, "/upload", &[], body).await;
    assert_eq!(answer.status, StatusCode::OK);
    let report = answer.json();
    assert_eq!(report["method"], "POST");
    assert_eq!(report["body_bytes"], 300_000);
    server.stop().await;
}

#[tokio::test]
async fn answers_the_status_asked_for() {
    let server = start_echo_http(config("a", "v1")).await;
    let answer = get(server.addr, "/?status=418").await;
    assert_eq!(answer.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(answer.json()["status"], 418);
    assert_eq!(answer.headers["x-echo-pod"], "a");

    let by_header = request(
        server.addr,
        Method::GET,
        "/",
        &[("x-echo-status", "503")],
        String::new(),
    )
    .await;
    assert_eq!(by_header.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(by_header.json()["injected_failure"], false);
    server.stop().await;
}

#[tokio::test]
async fn waits_the_delay_asked_for() {
    let server = start_echo_http(config("a", "v1")).await;
    let started = Instant::now();
    let answer = get(server.addr, "/?delay=300ms").await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(took >= Duration::from_millis(300), "took only {took:?}");

    let started = Instant::now();
    let answer = request(
        server.addr,
        Method::GET,
        "/",
        &[("x-echo-delay", "0.2s")],
        String::new(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(took >= Duration::from_millis(200), "took only {took:?}");

    // Without a delay it answers well under the delays above.
    let started = Instant::now();
    get(server.addr, "/").await;
    assert!(started.elapsed() < Duration::from_millis(200));
    server.stop().await;
}

#[tokio::test]
async fn fail_one_always_fails_and_fail_zero_never_does() {
    let server = start_echo_http(config("a", "v1")).await;
    for _ in 0..20 {
        let failed = get(server.addr, "/?fail=1.0").await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(failed.json()["injected_failure"], true);

        // fail wins over status when it strikes, and leaves it alone when
        // it does not.
        let passed = get(server.addr, "/?fail=0.0&status=201").await;
        assert_eq!(passed.status, StatusCode::CREATED);
        assert_eq!(passed.json()["injected_failure"], false);
    }
    server.stop().await;
}

#[tokio::test]
async fn fail_a_half_fails_some_and_not_others() {
    let server = start_echo_http(config("a", "v1")).await;
    let mut failed = 0;
    for _ in 0..200 {
        let answer = request(
            server.addr,
            Method::GET,
            "/",
            &[("x-echo-fail", "0.5")],
            String::new(),
        )
        .await;
        match answer.status {
            StatusCode::SERVICE_UNAVAILABLE => failed += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial(200, 0.5): outside 50..=150 happens less than once in 10^12.
    assert!((50..=150).contains(&failed), "{failed} of 200 failed");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_control_is_a_400_naming_it() {
    let server = start_echo_http(config("a", "v1")).await;
    for (target, parameter, words) in [
        ("/?status=abc", "status", "200 to 599"),
        ("/?status=700", "status", "200 to 599"),
        ("/?delay=150", "delay", "no unit"),
        ("/?delay=soon", "delay", "150ms"),
        ("/?fail=2", "fail", "from 0 to 1"),
    ] {
        let answer = get(server.addr, target).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{target}");
        let body = answer.json();
        assert_eq!(body["parameter"], parameter, "{target}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("query parameter `{parameter}`")),
            "{error}"
        );
        assert!(error.contains(words), "{target}: {error}");
        assert_eq!(body["pod"], "a");
    }

    let answer = request(
        server.addr,
        Method::GET,
        "/",
        &[("x-echo-fail", "lots")],
        String::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["parameter"], "fail");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("header `x-echo-fail`"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn keeps_the_connection_alive_across_requests() {
    let server = start_echo_http(config("a", "v1")).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut peers = Vec::new();
    // A 400 too, whose body is read first, leaves the connection usable.
    for target in ["/one", "/?status=bad", "/two"] {
        sender.ready().await.unwrap();
        let request = hyper::Request::get(target)
            .header("host", "echo.test")
            .body(String::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (head, body) = response.into_parts();
        let json: serde_json::Value = serde_json::from_str(&read_body(body).await).unwrap();
        if head.status == StatusCode::OK {
            peers.push(json["peer"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0], peers[1], "both requests came on one connection");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let server = start_echo_http(config("a", "v1")).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/?delay=500ms").await });
    // Let the request reach the server and start its delay.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = Instant::now();
    server.stop().await;
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(stopping.elapsed() >= Duration::from_millis(300));
    // And it no longer accepts.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_after_the_drain_timeout() {
    let mut slow = config("a", "v1");
    slow.drain_timeout = Duration::from_millis(200);
    let server = start_echo_http(slow).await;
    let addr = server.addr;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/?delay=30s")
        .header("host", "echo.test")
        .body(String::new())
        .unwrap();
    let in_flight = tokio::spawn(sender.send_request(request));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = Instant::now();
    server.stop().await;
    // It waited the drain timeout, not the 30s of the request.
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    // The connection was closed under the request.
    let result = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    // --pod (or POD_NAME) is required: a pod that cannot say who it is
    // would make every "which endpoint answered" assertion meaningless.
    let process = Process::spawn(
        env!("CARGO_BIN_EXE_echo-http"),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let (status, log) = process.wait().await;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--pod"), "{log}");

    let mut process = Process::spawn(
        env!("CARGO_BIN_EXE_echo-http"),
        &["--listen", "127.0.0.1:0"],
        &[("POD_NAME", "from-env"), ("VERSION", "v9")],
    );
    let addr = process.listening_addr().await;
    let answer = get(addr, "/hello").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["pod"], "from-env");
    assert_eq!(answer.json()["version"], "v9");

    process.terminate().await;
    let (status, log) = process.wait().await;
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("signal=SIGTERM"), "{log}");
    assert!(log.contains("echo-http stopped"), "{log}");
}
