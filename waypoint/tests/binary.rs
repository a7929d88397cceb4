//! The `waypoint` binary itself: settings, readiness and SIGTERM, against
//! a real istiod-lite in this process.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{ControlPlane, NODE_W, WAIT, http_get_status, ip, mesh_yaml};

#[test]
fn a_waypoint_without_an_identity_exits_non_zero_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .args(["--pod-namespace", "b", "--service-account", "not/valid"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SERVICE_ACCOUNT"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_becomes_ready_and_drains_on_sigterm() {
    let net = 40;
    let plane = ControlPlane::start().await;
    plane.apply(&mesh_yaml(net)).await;
    let args = plane.waypoint_args(net, &[]);
    // Its own loopback address, and ports below the ephemeral range: a
    // port like 46021 on 127.0.0.1 can be taken, now and then, by the
    // source port of some other test's outgoing connection.
    let readiness = format!("{}:15021", ip(net, 51));
    let stats = format!("{}:15020", ip(net, 51));
    let hbone = std::net::SocketAddr::new(ip(net, 50), 15008);
    let mut child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .args(["--xds-address", &args.xds_address])
        .arg("--xds-root-ca")
        .arg(&args.xds_root_ca)
        .arg("--auth-token")
        .arg(&args.auth_token)
        .args(["--alt-xds-hostname", "istiod.istio-system.svc"])
        .args(["--alt-ca-hostname", "istiod.istio-system.svc"])
        .args(["--pod-namespace", "b", "--service-account", "waypoint"])
        .args(["--node-name", NODE_W, "--drain-seconds", "1"])
        .args(["--hbone-addr", &hbone.to_string()])
        .args(["--readiness-addr", &readiness])
        .args(["--stats-addr", &stats])
        .args(["--admin-addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let addr = readiness.parse().unwrap();
    while http_get_status(addr, "/healthz/ready").await != Some(200) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            panic!("the waypoint exited early ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "the waypoint never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::net::TcpStream::connect(hbone).await.unwrap();
    let stats = stats.parse().unwrap();
    assert_eq!(http_get_status(stats, "/metrics").await, Some(200));
    assert_eq!(http_get_status(stats, "/stats/prometheus").await, Some(200));
    assert_eq!(http_get_status(stats, "/other").await, Some(404));

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
        log.contains("draining") && log.contains("waypoint stopped"),
        "{log}"
    );
    assert!(tokio::net::TcpStream::connect(hbone).await.is_err());
}
