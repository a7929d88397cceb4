//! echo-http, in-process and as the built binary: the report, every
//! control, bad controls, bodies, a clean stop, and upstreams (chains of
//! echo-http, echo-tcp behind it, and upstreams that fail).

// Helpers outside `#[test]` functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::echo_http::{Config, Upstream};
use hyper::{Method, StatusCode};
use serde_json::Value;
use support::{Process, get, read_body, request, start_echo_http};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ECHO_HTTP: &str = env!("CARGO_BIN_EXE_echo-http");
const ECHO_TCP: &str = env!("CARGO_BIN_EXE_echo-tcp");

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
    assert_eq!(report["http_version"], "HTTP/1.1");
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
    // Without upstreams, the report is what it was before they existed.
    assert!(report.get("upstreams").is_none(), "{report}");

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

/// A port on 127.0.0.1 that nothing listens on: bound, then closed.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that accepts, sends `greeting`, and then holds every
/// connection open without a word more, until the test ends.
async fn hold_connections(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(greeting).await.unwrap();
            held.push(stream);
        }
    });
    addr
}

fn upstreams(report: &Value) -> &Vec<Value> {
    report["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstreams in {report}"))
}

#[tokio::test]
async fn an_http_upstream_chain_nests_each_hops_report() {
    let mut backend = Process::spawn(
        ECHO_HTTP,
        &[
            "--listen",
            "127.0.0.1:0",
            "--pod",
            "backend-0",
            "--version",
            "v2",
        ],
        &[],
    );
    let port = backend.listening_addr().await.port();
    // `localhost` goes through the system resolver, as a service's
    // /etc/hosts entry does in a pod.
    let backend_url = format!("http://localhost:{port}/orders?page=2");
    let mut frontend = Process::spawn(
        ECHO_HTTP,
        &[
            "--listen",
            "127.0.0.1:0",
            "--pod",
            "frontend-0",
            "--upstream",
            &backend_url,
        ],
        &[],
    );
    let addr = frontend.listening_addr().await;

    let answer = get(addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let report = answer.json();
    assert_eq!(report["pod"], "frontend-0");
    let hops = upstreams(&report);
    assert_eq!(hops.len(), 1, "{report}");
    let hop = &hops[0];
    assert_eq!(hop["url"], backend_url.as_str());
    assert_eq!(hop["status"], 200);
    assert_eq!(hop["ok"], true);
    assert_eq!(hop["error"], Value::Null);
    // The backend's own report, as JSON.
    let nested = &hop["body"];
    assert_eq!(nested["pod"], "backend-0");
    assert_eq!(nested["version"], "v2");
    assert_eq!(nested["path"], "/orders");
    assert_eq!(nested["query"], "page=2");
    assert_eq!(
        nested["headers"]["host"],
        format!("localhost:{port}").as_str()
    );
    let user_agent = nested["headers"]["user-agent"].as_str().unwrap();
    assert!(user_agent.starts_with("e2e-echo-http/"), "{user_agent}");
    // The last hop has no upstreams and says nothing of them.
    assert!(nested.get("upstreams").is_none(), "{nested}");

    for process in [frontend, backend] {
        process.terminate().await;
        let (status, log) = process.wait().await;
        assert!(status.success(), "exit {status}: {log}");
    }
}

#[tokio::test]
async fn a_tcp_upstream_reports_echo_tcps_banner_and_echo() {
    let mut database = Process::spawn(
        ECHO_TCP,
        &["--listen", "127.0.0.1:0", "--banner", "db-0"],
        &[],
    );
    let db_addr = database.listening_addr().await;
    // From the environment, comma-separated: by address, then by name.
    let urls = [
        format!("tcp://{db_addr}"),
        format!("tcp://localhost:{}", db_addr.port()),
    ];
    let mut backend = Process::spawn(
        ECHO_HTTP,
        &["--listen", "127.0.0.1:0"],
        &[("POD_NAME", "backend-0"), ("UPSTREAMS", &urls.join(","))],
    );
    let addr = backend.listening_addr().await;

    let answer = get(addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let report = answer.json();
    let hops = upstreams(&report);
    assert_eq!(hops.len(), 2, "{report}");
    for (hop, url) in hops.iter().zip(&urls) {
        assert_eq!(hop["url"], url.as_str());
        assert_eq!(hop["status"], Value::Null, "{hop}");
        assert_eq!(hop["ok"], true, "{hop}");
        assert_eq!(hop["error"], Value::Null);
        assert_eq!(hop["body"], "db-0\nhello from backend-0\n");
    }

    for process in [backend, database] {
        process.terminate().await;
        let (status, log) = process.wait().await;
        assert!(status.success(), "exit {status}: {log}");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_naming_it() {
    let port = closed_port().await;
    let urls = [
        format!("http://127.0.0.1:{port}/db"),
        format!("tcp://127.0.0.1:{port}"),
    ];
    let mut frontend = Process::spawn(
        ECHO_HTTP,
        &[
            "--listen",
            "127.0.0.1:0",
            "--pod",
            "frontend-0",
            "--upstream",
            &urls[0],
            "--upstream",
            &urls[1],
        ],
        &[],
    );
    let addr = frontend.listening_addr().await;

    let answer = get(addr, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    let report = answer.json();
    assert_eq!(report["status"], 502);
    assert_eq!(report["pod"], "frontend-0");
    let hops = upstreams(&report);
    assert_eq!(hops.len(), 2, "{report}");
    for (hop, url) in hops.iter().zip(&urls) {
        assert_eq!(hop["url"], url.as_str());
        assert_eq!(hop["ok"], false, "{hop}");
        assert_eq!(hop["status"], Value::Null, "{hop}");
        assert_eq!(hop["body"], Value::Null, "{hop}");
        let error = hop["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("{url}: connect to 127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(error.contains("listening"), "says what to check: {error}");
    }

    // A status the request asks for wins; the failure is still reported.
    let asked = get(addr, "/?status=200").await;
    assert_eq!(asked.status, StatusCode::OK);
    assert_eq!(upstreams(&asked.json())[0]["ok"], false);

    frontend.terminate().await;
    let (status, log) = frontend.wait().await;
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("upstream call failed"), "{log}");
}

#[tokio::test]
async fn an_upstream_error_status_is_a_502_with_its_report() {
    let backend = start_echo_http(config("backend-0", "v1")).await;
    let url = format!("http://{}/?status=503", backend.addr);
    let mut frontend_config = config("frontend-0", "v1");
    frontend_config.upstreams = vec![Upstream::parse(&url).unwrap()];
    let frontend = start_echo_http(frontend_config).await;

    let answer = get(frontend.addr, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let report = answer.json();
    let hop = &upstreams(&report)[0];
    assert_eq!(hop["status"], 503);
    assert_eq!(hop["ok"], false);
    assert_eq!(hop["body"]["pod"], "backend-0");
    assert_eq!(hop["body"]["status"], 503);
    assert_eq!(
        hop["error"],
        format!("{url}: answered 503 Service Unavailable: its reply is in `body`").as_str()
    );

    // A 503 that `fail` rolls at the frontend stays a 503.
    let rolled = get(frontend.addr, "/?fail=1").await;
    assert_eq!(rolled.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rolled.json()["injected_failure"], true);

    // A refused request calls nobody.
    let refused = get(frontend.addr, "/?status=bad").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.json().get("upstreams").is_none());

    frontend.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_times_out_keeping_what_it_sent() {
    let silent = hold_connections(b"").await;
    let bannered = hold_connections(b"db banner\n").await;
    let mut frontend_config = config("frontend-0", "v1");
    frontend_config.upstream_timeout = Duration::from_millis(300);
    frontend_config.upstreams = vec![
        Upstream::parse(&format!("http://{silent}/")).unwrap(),
        Upstream::parse(&format!("tcp://{bannered}")).unwrap(),
    ];
    let frontend = start_echo_http(frontend_config).await;

    let started = Instant::now();
    let answer = get(frontend.addr, "/").await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    // One deadline each, one after the other.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let report = answer.json();
    let hops = upstreams(&report);
    let http_error = hops[0]["error"].as_str().unwrap();
    assert!(
        http_error.contains("no answer within 300ms"),
        "{http_error}"
    );
    assert_eq!(hops[0]["body"], Value::Null);
    let tcp_error = hops[1]["error"].as_str().unwrap();
    assert!(
        tcp_error.contains("no end of the reply within 300ms"),
        "{tcp_error}"
    );
    assert_eq!(hops[1]["body"], "db banner\n");
    frontend.stop().await;
}

#[tokio::test]
async fn the_binary_refuses_an_upstream_it_cannot_call() {
    let process = Process::spawn(
        ECHO_HTTP,
        &[
            "--listen",
            "127.0.0.1:0",
            "--pod",
            "a",
            "--upstream",
            "https://backend/",
        ],
        &[],
    );
    let (status, log) = process.wait().await;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("`https://backend/` is https://"), "{log}");

    // An empty UPSTREAMS, as a manifest sets for the last hop, is none.
    let mut process = Process::spawn(
        ECHO_HTTP,
        &["--listen", "127.0.0.1:0"],
        &[("POD_NAME", "a"), ("UPSTREAMS", "")],
    );
    let addr = process.listening_addr().await;
    let answer = get(addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json().get("upstreams").is_none());
    process.terminate().await;
    let (status, log) = process.wait().await;
    assert!(status.success(), "exit {status}: {log}");
}

/// HTTP/2 with prior knowledge on the same port as HTTP/1.1, as curl
/// --http2-prior-knowledge and gRPC clients send it: two streams on one
/// connection, controls obeyed, the version in the report.
#[tokio::test]
async fn serves_h2c_with_prior_knowledge_on_the_same_port() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let server = start_echo_http(Config::new("pod-h2", "v1").unwrap()).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for (target, status) in [("/h2?status=418", 418), ("/h2", 200)] {
        let request = hyper::Request::builder()
            .uri(format!("http://{}{target}", server.addr))
            .body(String::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.headers()["x-echo-pod"], "pod-h2");
        let report: Value = serde_json::from_str(&read_body(response.into_body()).await).unwrap();
        assert_eq!(report["http_version"], "HTTP/2.0");
        assert_eq!(report["path"], "/h2");
    }
    // HTTP/1.1 still works beside it.
    let answer = get(server.addr, "/h1").await;
    assert_eq!(answer.json()["http_version"], "HTTP/1.1");
    server.stop().await;
}
