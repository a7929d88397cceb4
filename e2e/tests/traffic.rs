//! The traffic client against the real servers, in-process (the library
//! runs) and as the built binary (output and exit codes).

// Helpers outside `#[test]` functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use e2e::summary::{Protocol, Summary};
use e2e::traffic::{HttpRun, HttpTarget, TcpRun, TcpTarget};
use e2e::{echo_http, echo_tcp};
use support::{start_echo_http, start_echo_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn http_run(url: &str, requests: u64, concurrency: usize) -> HttpRun {
    HttpRun {
        target: HttpTarget::parse(url).unwrap(),
        requests,
        concurrency,
        timeout: Duration::from_secs(5),
    }
}

fn tcp_run(addr: SocketAddr, connections: u64, payload_bytes: usize) -> TcpRun {
    TcpRun {
        target: TcpTarget::parse(&addr.to_string()).unwrap(),
        connections,
        payload_bytes,
        timeout: Duration::from_secs(5),
    }
}

/// An address where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Runs the built `traffic` binary to its end.
async fn traffic(args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_traffic"))
            .args(args)
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("traffic did not finish within 30s")
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn http_counts_statuses_and_servers() {
    let server = start_echo_http(echo_http::Config::new("pod-a", "v1").unwrap()).await;
    let url = format!("http://{}/path", server.addr);
    let summary = http_run(&url, 25, 4).run().await;
    assert_eq!(summary.protocol, Protocol::Http);
    assert_eq!(summary.attempts, 25);
    assert_eq!(summary.succeeded, 25);
    assert!(summary.all_succeeded());
    assert_eq!(summary.statuses.get(&200), Some(&25));
    assert_eq!(summary.servers.get("pod-a"), Some(&25));
    assert_eq!(summary.errors, 0);
    let latency = summary.latency.unwrap();
    assert!(latency.p50_ms <= latency.p90_ms && latency.p90_ms <= latency.p99_ms);
    assert!(latency.p99_ms <= latency.max_ms && latency.max_ms > 0.0);

    let failing = http_run(&format!("{url}?fail=1.0"), 10, 3).run().await;
    assert_eq!(failing.statuses.get(&503), Some(&10));
    assert_eq!(failing.succeeded, 0);
    assert!(!failing.all_succeeded());
    // A 503 is an answer, not an error.
    assert_eq!(failing.errors, 0);
    server.stop().await;
}

#[tokio::test]
async fn http_latency_reflects_the_delay() {
    let server = start_echo_http(echo_http::Config::new("pod-a", "v1").unwrap()).await;
    let url = format!("http://{}/?delay=200ms", server.addr);
    let summary = http_run(&url, 4, 2).run().await;
    assert!(summary.all_succeeded());
    let latency = summary.latency.unwrap();
    assert!(latency.p50_ms >= 200.0, "{latency:?}");
    // Two workers, two rounds of 200ms: about 400ms in all, not the 800ms
    // of one worker.
    assert!(
        summary.elapsed_ms >= 400.0 && summary.elapsed_ms < 780.0,
        "{summary:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn http_keeps_one_connection_per_worker() {
    let server = start_echo_http(echo_http::Config::new("pod-a", "v1").unwrap()).await;
    // A forwarder in front of the server that counts connections.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let backend = server.addr;
    tokio::spawn(async move {
        loop {
            let (mut client, _) = front.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });

    let summary = http_run(&format!("http://{front_addr}/"), 30, 3)
        .run()
        .await;
    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // More workers than requests: no idle connections.
    let summary = http_run(&format!("http://{front_addr}/"), 2, 8).run().await;
    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    server.stop().await;
}

#[tokio::test]
async fn http_counts_errors_by_cause() {
    let addr = closed_port().await;
    let summary = http_run(&format!("http://{addr}/"), 3, 1).run().await;
    assert_eq!(summary.errors, 3);
    assert_eq!(summary.succeeded, 0);
    assert_eq!(summary.latency, None);
    let (reason, count) = summary.error_reasons.iter().next().unwrap();
    assert_eq!(*count, 3);
    assert!(reason.starts_with("connect: "), "{reason}");
    assert!(reason.contains("refused"), "{reason}");
}

#[tokio::test]
async fn http_times_out_a_slow_answer() {
    let server = start_echo_http(echo_http::Config::new("pod-a", "v1").unwrap()).await;
    let mut run = http_run(&format!("http://{}/?delay=2s", server.addr), 1, 1);
    run.timeout = Duration::from_millis(200);
    let summary = run.run().await;
    assert_eq!(summary.errors, 1);
    assert_eq!(
        summary.error_reasons.get("no answer within 200ms"),
        Some(&1)
    );
    server.stop().await;
}

#[tokio::test]
async fn tcp_checks_echoes_and_counts_banners() {
    let server = start_echo_tcp(echo_tcp::Config::new(Some("db-1"))).await;
    let summary = tcp_run(server.addr, 5, 200_000).run().await;
    assert_eq!(summary.protocol, Protocol::Tcp);
    assert_eq!(summary.attempts, 5);
    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!(summary.servers.get("db-1"), Some(&5));
    assert!(summary.statuses.is_empty());
    assert!(summary.latency.is_some());
    server.stop().await;
}

#[tokio::test]
async fn tcp_notices_a_wrong_echo() {
    // Sends back what it read with the bytes reversed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = Vec::new();
            stream.read_to_end(&mut read).await.unwrap();
            read.reverse();
            stream.write_all(&read).await.unwrap();
        }
    });
    let summary = tcp_run(addr, 2, 64).run().await;
    assert_eq!(summary.errors, 2);
    let reasons: Vec<_> = summary.error_reasons.keys().collect();
    assert!(reasons[0].starts_with("wrong echo"), "{reasons:?}");
}

#[tokio::test]
async fn the_binary_exits_non_zero_when_a_request_fails() {
    let server = start_echo_http(echo_http::Config::new("pod-a", "v1").unwrap()).await;
    let url = format!("http://{}/?fail=1.0", server.addr);

    let output = traffic(&["http", &url, "-n", "5", "-c", "2"]).await;
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("5 requests in "), "{stdout}");
    assert!(stdout.contains("status   503 x 5"), "{stdout}");
    assert!(stdout.contains("servers  pod-a x 5"), "{stdout}");
    assert!(stdout.contains("latency  p50 "), "{stdout}");
    assert!(
        stderr.contains("5 of 5 requests got no 2xx answer"),
        "{stderr}"
    );

    let allowed = traffic(&["http", &url, "-n", "3", "--allow-errors"]).await;
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));

    let ok = traffic(&["http", &format!("http://{}/", server.addr), "-n", "3"]).await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("status   200 x 3"));
    server.stop().await;
}

#[tokio::test]
async fn the_binary_prints_json() {
    let server = start_echo_http(echo_http::Config::new("pod-j", "v1").unwrap()).await;
    let url = format!("http://{}/?fail=1.0", server.addr);
    let output = traffic(&["http", &url, "-n", "4", "-o", "json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let summary: Summary = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary.attempts, 4);
    assert_eq!(summary.statuses.get(&503), Some(&4));
    assert_eq!(summary.servers.get("pod-j"), Some(&4));
    server.stop().await;
}

#[tokio::test]
async fn the_binary_echoes_over_tcp() {
    let server = start_echo_tcp(echo_tcp::Config::new(Some("pod-t"))).await;
    let addr = server.addr.to_string();
    let output = traffic(&[
        "tcp",
        &addr,
        "-n",
        "3",
        "--payload-bytes",
        "100000",
        "-o",
        "json",
    ])
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: Summary = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary.protocol, Protocol::Tcp);
    assert_eq!(summary.succeeded, 3);
    assert_eq!(summary.servers.get("pod-t"), Some(&3));

    let text_output = traffic(&["tcp", &addr, "-n", "2"]).await;
    let stdout = text(&text_output.stdout);
    assert!(stdout.starts_with("2 connections in "), "{stdout}");
    assert!(stdout.contains("servers  pod-t x 2"), "{stdout}");
    server.stop().await;
}

#[tokio::test]
async fn the_binary_fails_on_refused_connections() {
    let addr = closed_port().await.to_string();
    let output = traffic(&["tcp", &addr, "-n", "2"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("connect: "),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("2 of 2 connections got no correct echo"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn the_binary_refuses_bad_arguments() {
    for args in [
        &["http", "https://backend/"][..],
        &["http", "backend:8080"][..],
        &["http", "http://backend/", "-n", "0"][..],
        &["tcp", "backend"][..],
        &["http", "http://backend/", "--timeout", "5"][..],
    ] {
        let output = traffic(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
    let output = traffic(&["http", "https://backend/"]).await;
    assert!(
        text(&output.stderr).contains("use http://"),
        "{}",
        text(&output.stderr)
    );
}
