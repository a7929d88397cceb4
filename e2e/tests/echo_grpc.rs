//! echo-grpc against a real gRPC client (tonic's, the one `traffic grpc`
//! uses): replies, chosen error statuses with their messages, refused
//! controls; `traffic grpc` counting statuses and servers; the binary
//! serving and stopping on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use e2e::echo_grpc::{self, EchoClient, EchoRequest, X_ECHO_POD};
use e2e::summary::Protocol;
use e2e::traffic::grpc::parse_metadata;
use e2e::traffic::{GrpcRun, GrpcTarget};
use support::{Process, start_echo_grpc};
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn client(addr: std::net::SocketAddr) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
}

fn call(message: &str, metadata: &[(&'static str, &'static str)]) -> Request<EchoRequest> {
    let mut request = Request::new(EchoRequest {
        message: message.to_owned(),
    });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

fn run(target: &str, calls: u64, metadata: &[&str]) -> GrpcRun {
    GrpcRun {
        target: GrpcTarget::parse(target).unwrap(),
        calls,
        concurrency: 3,
        timeout: Duration::from_secs(5),
        message: "hi".into(),
        metadata: metadata
            .iter()
            .map(|m| parse_metadata(m).unwrap())
            .collect(),
    }
}

#[tokio::test]
async fn replies_with_the_message_and_who_answered() {
    let server = start_echo_grpc(echo_grpc::Config::new("pod-g", "v2").unwrap()).await;
    let mut client = client(server.addr).await;
    let response = client
        .echo(call("hello there", &[("x-trace", "abc")]))
        .await
        .unwrap();
    assert_eq!(response.metadata().get(X_ECHO_POD).unwrap(), "pod-g");
    let reply = response.into_inner();
    assert_eq!(reply.message, "hello there");
    assert_eq!(
        (reply.pod.as_str(), reply.version.as_str()),
        ("pod-g", "v2")
    );
    assert!(reply.peer.starts_with("127.0.0.1:"), "{}", reply.peer);
    assert_eq!(reply.metadata["x-trace"], "abc");
    // The gRPC headers a client sends are there too: a proxy that drops
    // them would show.
    assert_eq!(reply.metadata["te"], "trailers");
    server.stop().await;
}

#[tokio::test]
async fn answers_the_status_and_message_asked_for() {
    let server = start_echo_grpc(echo_grpc::Config::new("pod-g", "v1").unwrap()).await;
    let mut client = client(server.addr).await;
    let status = client
        .echo(call(
            "x",
            &[
                ("x-echo-grpc-status", "UNAVAILABLE"),
                ("x-echo-grpc-message", "backend is warming up"),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "backend is warming up");
    assert_eq!(status.metadata().get(X_ECHO_POD).unwrap(), "pod-g");

    let status = client
        .echo(call("x", &[("x-echo-grpc-status", "5")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "echo-grpc pod-g answers NOT_FOUND as asked"
    );

    // A control it cannot obey is named in an INVALID_ARGUMENT.
    let status = client
        .echo(call("x", &[("x-echo-grpc-status", "SOMETIMES")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("x-echo-grpc-status"),
        "{status:?}"
    );

    // The connection is still good for a normal call.
    assert_eq!(
        client
            .echo(call("ok", &[]))
            .await
            .unwrap()
            .into_inner()
            .message,
        "ok"
    );
    server.stop().await;
}

#[tokio::test]
async fn traffic_grpc_counts_statuses_and_servers() {
    let server = start_echo_grpc(echo_grpc::Config::new("pod-g", "v1").unwrap()).await;
    let ok = run(&server.addr.to_string(), 20, &[]).run().await;
    assert_eq!(ok.protocol, Protocol::Grpc);
    assert_eq!((ok.attempts, ok.succeeded, ok.errors), (20, 20, 0));
    assert_eq!(ok.statuses.get(&0), Some(&20));
    assert_eq!(ok.grpc_statuses.get("OK"), Some(&20));
    assert_eq!(ok.servers.get("pod-g"), Some(&20));

    let target = format!("http://{}", server.addr);
    let failing = run(&target, 6, &["x-echo-grpc-status=14"]).run().await;
    assert_eq!((failing.succeeded, failing.errors), (0, 0));
    assert_eq!(failing.grpc_statuses.get("UNAVAILABLE"), Some(&6));
    // Error statuses say who answered too.
    assert_eq!(failing.servers.get("pod-g"), Some(&6));
    assert_eq!(
        failing
            .grpc_messages
            .get("UNAVAILABLE: echo-grpc pod-g answers UNAVAILABLE as asked"),
        Some(&6),
        "{:?}",
        failing.grpc_messages
    );
    server.stop().await;

    // Nobody listening: failures with a reason, not statuses.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nobody = run(&closed.to_string(), 2, &[]).run().await;
    assert_eq!((nobody.errors, nobody.statuses.len()), (2, 0));
    assert!(
        nobody
            .error_reasons
            .keys()
            .all(|r| r.starts_with("connect: ") && r.contains("Connection refused")),
        "{:?}",
        nobody.error_reasons
    );
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let mut server = Process::spawn(
        env!("CARGO_BIN_EXE_echo-grpc"),
        &["--listen", "127.0.0.1:0"],
        &[("POD_NAME", "pod-bin")],
    );
    let addr = server.listening_addr().await;
    let traffic = tokio::process::Command::new(env!("CARGO_BIN_EXE_traffic"))
        .args(["grpc", &addr.to_string(), "-n", "3", "-o", "json"])
        .args(["--metadata", "x-echo-grpc-status=ABORTED"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    // Not OK, so traffic exits 1; the summary is on stdout either way.
    assert_eq!(traffic.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&traffic.stdout).unwrap();
    assert_eq!(summary["grpc_statuses"]["ABORTED"], 3, "{summary}");
    assert_eq!(summary["servers"]["pod-bin"], 3, "{summary}");
    assert_eq!(
        summary["grpc_messages"]["ABORTED: echo-grpc pod-bin answers ABORTED as asked"], 3,
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&traffic.stderr).contains("3 of 3 calls got no OK"));

    server.terminate().await;
    let (status, log) = server.wait().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("echo-grpc stopped"), "{log}");
}
