//! `meshctl up` and `down` themselves: the README's demo works as its
//! hints say, a second `up` is refused without harm, `down` cleans up
//! after an `up` killed halfway, and `up` without root says it needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_support::{Mesh, bin_dir, can_run, eventually, kill, text, topology};

fn demo_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/demo.yaml")
        .display()
        .to_string()
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// examples/demo.yaml, as README.md's first command brings it up: the
/// chain client -> frontend -> backend -> database answers, and the two
/// refusals its hints promise happen.
#[test]
fn the_demo_does_what_its_hints_say() {
    if !can_run() {
        return;
    }
    let text_of = std::fs::read_to_string(demo_file()).unwrap();
    let mesh = Mesh::up(&text_of.replace("name: demo\n", "name: e2e-demo\n"));
    let body = mesh
        .curl("client", "http://frontend.shop.pod:8080/")
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["pod"], "frontend");
    let backend = &report["upstreams"][0]["body"];
    assert!(
        backend["pod"].as_str().unwrap().starts_with("backend-v"),
        "{report}"
    );
    let database = backend["upstreams"][0]["body"].as_str().unwrap();
    assert!(database.starts_with("database\n"), "{report}");

    assert!(
        mesh.curl("client", "http://backend-v1.shop.pod:8080/")
            .is_err(),
        "only the frontend may call the backends"
    );
    let out = mesh.exec("frontend", &["traffic", "tcp", "database.data:9000"]);
    assert!(
        !out.status.success(),
        "only the backends may reach the database: {}",
        text(&out)
    );
    let out = mesh.meshctl(&["ztunnel", "status", "--node", "node-a"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 captured"),
        "{}",
        text(&out)
    );
}

/// A second `up` of the same mesh is refused with a clear error and
/// leaves the first one working.
#[test]
fn up_twice_is_refused_and_harmless() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-twice", ""));
    let file = mesh.dir().join("again.yaml");
    std::fs::write(&file, topology("e2e-twice", "")).unwrap();
    let out = mesh.meshctl(&["up", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let error = text(&out);
    assert!(
        error.contains("already up") && error.contains("meshctl down"),
        "{error}"
    );
    mesh.curl("a", "http://b.ns-b.pod:8080/")
        .expect("the first mesh still works");
}

/// `down` removes everything an `up` that was killed halfway had made:
/// processes, namespaces, `/etc/netns` entries and the state.
#[test]
fn down_cleans_up_after_a_killed_up() {
    if !can_run() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("crash.yaml");
    // b declares a port nothing listens on, so `up` is still waiting for
    // it, everything started, when it is killed.
    let never_ready =
        topology("e2e-crash", "").replace("ports: [8080, 9000]", "ports: [8080, 9000, 7777]");
    std::fs::write(&file, never_ready).unwrap();
    let meshctl = |args: &[&str]| {
        let mut cmd = Command::new(bin_dir().join("meshctl"));
        cmd.args(args).env("MESHCTL_STATE_DIR", state.path());
        cmd
    };
    let mut up = meshctl(&["up", "-f", file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state_file = state.path().join("e2e-crash/state.json");
    eventually("up started every process", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&state_file).map_err(|e| e.to_string())?;
        text.contains("\"pod/ns-b/b2\"").then_some(()).ok_or(text)
    });
    kill(i32::try_from(up.id()).unwrap(), "-KILL");
    let _ = up.wait();
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(recorded["complete"], false);
    assert!(
        !netns_with_prefix("e2e-crash-").is_empty(),
        "the killed up left namespaces"
    );

    let out = meshctl(&["down"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        netns_with_prefix("e2e-crash-").is_empty(),
        "no namespace left"
    );
    for process in recorded["processes"].as_array().unwrap() {
        let pid = process["pid"].as_i64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        assert!(
            stat.is_empty() || state == Some('Z'),
            "{} (pid {pid}) was stopped",
            process["name"]
        );
    }
    for pod in recorded["plan"]["pods"].as_array().unwrap() {
        let etc = Path::new("/etc/netns").join(pod["netns"].as_str().unwrap());
        assert!(!etc.exists(), "{} removed", etc.display());
    }
    assert!(
        !state.path().join("e2e-crash").exists(),
        "the state is gone"
    );
    let again = meshctl(&["down"]).output().unwrap();
    assert!(
        !again.status.success() && text(&again).contains("no mesh is up"),
        "{}",
        text(&again)
    );
}

/// Without root, `up` says it needs root and exits non-zero, having made
/// nothing.
#[test]
fn up_without_root_says_it_needs_root() {
    let state = tempfile::tempdir().unwrap();
    let meshctl = bin_dir().join("meshctl");
    if !meshctl.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "build meshctl first"
        );
        eprintln!("SKIPPED: {} is not built", meshctl.display());
        return;
    }
    let root = Command::new("id").arg("-u").output().unwrap();
    let mut cmd = if String::from_utf8_lossy(&root.stdout).trim() == "0" {
        // Drop to nobody for this one command.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&meshctl);
        cmd
    } else {
        Command::new(&meshctl)
    };
    let out = cmd
        .args(["up", "-f", &demo_file(), "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("needs root"), "{}", text(&out));
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "nothing was made"
    );
}
