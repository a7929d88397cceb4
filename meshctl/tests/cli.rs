//! The `meshctl` binary as a user runs it: help, usage errors and the
//! message when ztunnel is not there, with their exit codes.

// Test helpers may panic: that is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn meshctl(args: &[&str], admin_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    command.args(args).env_remove("MESHCTL_ZTUNNEL_ADMIN");
    if let Some(admin) = admin_env {
        command.env("MESHCTL_ZTUNNEL_ADMIN", admin);
    }
    command.output().unwrap()
}

/// A loopback address where nothing listens: bound, then released.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn help_lists_the_ztunnel_views_and_only_them() {
    let output = meshctl(&["ztunnel", "--help"], None);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for view in [
        "status",
        "workloads",
        "services",
        "policies",
        "certs",
        "connections",
    ] {
        assert!(
            help.contains(&format!("  {view} ")),
            "{view} missing from:\n{help}"
        );
    }
    assert!(help.contains("MESHCTL_ZTUNNEL_ADMIN"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:15000]"), "{help}");

    let top = String::from_utf8(meshctl(&["--help"], None).stdout).unwrap();
    assert!(top.contains("ztunnel") && top.contains("waypoint"), "{top}");
    let waypoint = String::from_utf8(meshctl(&["waypoint", "--help"], None).stdout).unwrap();
    for action in ["apply", "list", "delete"] {
        assert!(
            waypoint.contains(&format!("  {action} ")),
            "{action} missing from:\n{waypoint}"
        );
    }
}

#[test]
fn an_unreachable_admin_fails_with_advice() {
    let addr = dead_addr();
    let output = meshctl(&["ztunnel", "status", "--admin", &addr], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        format!(
            "error: cannot reach ztunnel's admin API at {addr}: connection refused: \
             is ztunnel running on this node? (set --admin or MESHCTL_ZTUNNEL_ADMIN)\n"
        )
    );
}

#[test]
fn the_admin_address_comes_from_the_environment_too() {
    let addr = dead_addr();
    let output = meshctl(&["ztunnel", "certs", "-o", "json"], Some(&addr));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("at {addr}: connection refused")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["ztunnel", "status", "-o", "xml"][..],
        &["ztunnel", "status", "--admin", "127.0.0.1"],
        &["ztunnel"],
        &["up"],
    ] {
        let output = meshctl(args, None);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = meshctl(&["ztunnel", "status", "--admin", "localhost"], None);
    assert!(
        stderr(&output).contains("`localhost` is not host:port"),
        "{}",
        stderr(&output)
    );
}
