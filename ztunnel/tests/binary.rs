//! The `ztunnel` binary itself: its two runtimes, signals and exit codes,
//! against a real istiod-lite in this process (explicit mode, pods on
//! loopback `127.78.9.x`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node_support::*;

#[test]
fn bad_settings_exit_non_zero_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_ztunnel"))
        .args(["--node-name", "n", "--admin-addr", "0.0.0.0:15000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not on loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_pods_changes_its_log_filter_and_drains_on_sigterm() {
    let net = 9;
    let plane = ControlPlane::start().await;
    plane.apply(&mesh_yaml(net)).await;
    let args = plane.ztunnel_args(NODE_A, &[]);
    // Its own loopback address, and ports below the ephemeral range: a
    // port like 45921 on 127.0.0.1 can be taken, now and then, by the
    // source port of some other test's outgoing connection.
    let host = pod_ip(net, 250);
    let admin = format!("{host}:15000");
    let stats = format!("{host}:15020");
    let readiness = format!("{host}:15021");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ztunnel"))
        .args(["--node-name", NODE_A, "--xds-address", &args.xds_address])
        .arg("--xds-root-ca")
        .arg(&args.xds_root_ca)
        .arg("--auth-token")
        .arg(&args.auth_token)
        .args(["--alt-xds-hostname", "istiod.istio-system.svc"])
        .args(["--alt-ca-hostname", "istiod.istio-system.svc"])
        .args(["--capture", "explicit", "--drain-deadline", "1s"])
        .args(["--admin-addr", &admin, "--stats-addr", &stats])
        .args(["--readiness-addr", &readiness])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            panic!("ztunnel exited early ({status}): {stderr}");
        }
        let addr = readiness.parse().unwrap();
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/healthz/ready").await.0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "ztunnel never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its pods are served: pod a's HBONE listener answers.
    tokio::net::TcpStream::connect((pod_ip(net, 10), 15008))
        .await
        .unwrap();
    assert_log_level_changes_at_run_time(admin.parse().unwrap()).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(exited.status.success(), "{:?}", exited.status);
    let log = String::from_utf8_lossy(&exited.stderr);
    assert!(
        log.contains("draining") && log.contains("ztunnel stopped"),
        "{log}"
    );
    assert!(
        tokio::net::TcpStream::connect((pod_ip(net, 10), 15008))
            .await
            .is_err()
    );
}

/// `/logging` on the admin port: POST changes the filter; a filter that
/// does not parse is refused and leaves the one in force; GET cannot change it.
async fn assert_log_level_changes_at_run_time(admin: std::net::SocketAddr) {
    let (status, body) = http_request(admin, "POST", "/logging?level=ztunnel=debug").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ztunnel=debug"), "{body}");

    let (status, body) = http_request(admin, "POST", "/logging?level=ztunnel=loud").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_get(admin, "/logging").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("ztunnel=debug"),
        "a refused filter replaced the last good one: {body}"
    );

    let (status, body) = http_get(admin, "/logging?level=info").await;
    assert_eq!(status, 405, "{body}");
    let (_, body) = http_get(admin, "/logging").await;
    assert!(body.contains("ztunnel=debug"), "{body}");
}
