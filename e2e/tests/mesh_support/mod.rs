//! The harness of the local-mesh scenarios: each test brings up its own
//! mesh with the real `meshctl up` (real istiod-lite, ztunnels, pods in
//! network namespaces, nftables capture), drives it with `meshctl exec`,
//! `apply`, `restart`, and tears it down with `meshctl down` on drop.
//!
//! The binaries come from the workspace's target directory, beside this
//! test (`cargo test --workspace` builds them all first). The scenarios
//! need root, `ip`, `nft`, `curl` and `tcpdump`; under `CI=true` a missing
//! one fails the test, elsewhere the test says it is skipped.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod waypoint;

/// Longer than the proxies' log flush interval (100 ms), with room for a
/// busy machine.
const LOG_FLUSH_WAIT: Duration = Duration::from_millis(300);

/// The two-node topology most scenarios share, for mesh `name`:
/// - `ns-a/a` on node-a and `ns-b/b` on node-b, both enrolled; `a` serves
///   HTTP on 8080, `b` HTTP on 8080 and TCP echo on 9000;
/// - `ns-b/b2` on node-a (service account `b2`, so that `b` is only on
///   node-b), a second endpoint of Service `b.ns-b`;
/// - `outside/client` on node-a, not enrolled, running nothing.
pub fn topology(name: &str, extra: &str) -> String {
    format!(
        r#"
name: {name}
nodes:
  - {{name: node-a, podCIDR: 10.10.1.0/24}}
  - {{name: node-b, podCIDR: 10.10.2.0/24}}
namespaces:
  - {{name: ns-a, labels: {{istio.io/dataplane-mode: ambient}}}}
  - {{name: ns-b, labels: {{istio.io/dataplane-mode: ambient}}}}
  - {{name: outside}}
pods:
  - {{name: a, namespace: ns-a, node: node-a, serviceAccount: a, labels: {{app: a}},
     command: [echo-http, --listen, "0.0.0.0:8080"], ports: [8080]}}
  - {{name: b, namespace: ns-b, node: node-b, serviceAccount: b, labels: {{app: b}},
     command: [sh, -c, "echo-http --listen 0.0.0.0:8080 & exec echo-tcp --listen 0.0.0.0:9000 --banner b"],
     ports: [8080, 9000]}}
  - {{name: b2, namespace: ns-b, node: node-a, serviceAccount: b2, labels: {{app: b}},
     command: [echo-http, --listen, "0.0.0.0:8080"], ports: [8080]}}
  - {{name: client, namespace: outside, node: node-a}}
resources:
  - apiVersion: v1
    kind: Service
    metadata: {{name: b, namespace: ns-b}}
    spec:
      selector: {{app: b}}
      ports: [{{name: http, port: 8080}}, {{name: tcp, port: 9000}}]
{extra}"#
    )
}

/// Whether the scenarios can run here. Under `CI=true` they must: a
/// missing requirement panics. Elsewhere the test prints why it skips.
pub fn can_run() -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces, nftables)".to_owned());
    }
    for tool in ["ip", "nft", "curl", "tcpdump"] {
        if !on_path(tool) {
            missing.push(format!(
                "`{tool}` (apt-get install -y iproute2 nftables curl tcpdump)"
            ));
        }
    }
    for binary in [
        "meshctl",
        "ztunnel",
        "istiod-lite",
        "waypoint",
        "echo-http",
        "echo-tcp",
        "traffic",
    ] {
        if !bin_dir().join(binary).is_file() {
            missing.push(format!(
                "{binary} in {} (cargo build --workspace)",
                bin_dir().display()
            ));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("the local-mesh scenarios need: {}", missing.join("; "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

fn is_root() -> bool {
    // /proc/self/status: `Uid: real effective saved fs`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// `target/<profile>/`: this test runs from its `deps/` subdirectory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// A running local mesh, removed on drop.
pub struct Mesh {
    pub name: String,
    state: TempDir,
    files: TempDir,
}

impl Mesh {
    /// `meshctl up` of `topology`; panics with meshctl's output if it fails.
    pub fn up(topology: &str) -> Mesh {
        let name = topology
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .unwrap()
            .trim()
            .to_owned();
        let mesh = Mesh {
            name,
            state: TempDir::new().unwrap(),
            files: TempDir::new().unwrap(),
        };
        let file = mesh.files.path().join("topology.yaml");
        std::fs::write(&file, topology).unwrap();
        let out = mesh.meshctl(&["up", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "meshctl up failed:\n{}", text(&out));
        mesh
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("meshctl"));
        cmd.args(args)
            .env("MESHCTL_STATE_DIR", self.state.path())
            .env("MESHCTL_MESH", &self.name)
            .env("RUST_LOG", "info");
        cmd
    }

    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `command` in `pod` (`<pod>` or `<ns>/<pod>`).
    pub fn exec(&self, pod: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        self.meshctl(&args)
    }

    /// Starts `command` in `pod` in the background.
    pub fn spawn(&self, pod: &str, command: &[&str]) -> Child {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `curl` from `pod`: the body on success, curl's exit code and error
    /// otherwise.
    pub fn curl(&self, pod: &str, url: &str) -> Result<String, String> {
        let out = self.exec(pod, &["curl", "-sS", "-f", "-m", "10", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "curl {url} from {pod}: exit {:?}: {}",
                out.status.code(),
                text(&out)
            ))
        }
    }

    /// One TCP echo through `traffic tcp`: whether it came back intact.
    pub fn tcp_echo(&self, pod: &str, addr: &str) -> Result<(), String> {
        let out = self.exec(pod, &["traffic", "tcp", addr, "-n", "1", "--timeout", "5s"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("tcp echo {addr} from {pod}: {}", text(&out)))
        }
    }

    /// Serves `yaml` in the mesh under `name` (replacing an earlier apply
    /// of the same name).
    pub fn apply(&self, name: &str, yaml: &str) {
        let file = self.files.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = self.meshctl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "apply {name}: {}", text(&out));
    }

    pub fn delete(&self, name: &str) {
        let file = self.files.path().join(format!("{name}.yaml"));
        let out = self.meshctl(&["delete", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "delete {name}: {}", text(&out));
    }

    /// The log of `istiod-lite`, `ztunnel/<node>` or a pod, with every
    /// line logged before the call: the proxies write INFO lines out at
    /// most 100 ms late (telemetry's log buffer), so this waits longer.
    pub fn log(&self, component: &str) -> String {
        std::thread::sleep(LOG_FLUSH_WAIT);
        let out = self.meshctl(&["logs", component]);
        assert!(out.status.success(), "logs {component}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The mesh's state file, as `up` wrote it.
    pub fn state(&self) -> serde_json::Value {
        let path = self.state.path().join(&self.name).join("state.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    pub fn dir(&self) -> PathBuf {
        self.state.path().join(&self.name)
    }

    /// The pid of a component by its record name (`istiod-lite`,
    /// `ztunnel/<node>`, `pod/<ns>/<name>`).
    pub fn pid(&self, name: &str) -> i32 {
        let state = self.state();
        let record = state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        i32::try_from(record["pid"].as_i64().unwrap()).unwrap()
    }

    /// `meshctl ztunnel <view> --node <node> -o json`.
    pub fn ztunnel_json(&self, node: &str, view: &str) -> serde_json::Value {
        let out = self.meshctl(&["ztunnel", view, "--node", node, "-o", "json"]);
        assert!(out.status.success(), "ztunnel {view}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `nft list ruleset` inside a pod.
    pub fn ruleset(&self, pod: &str) -> String {
        let out = self.exec(pod, &["nft", "list", "ruleset"]);
        assert!(out.status.success(), "nft in {pod}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every ztunnel answers ready.
    pub fn wait_ztunnels_ready(&self) {
        for node in ["node-a", "node-b"] {
            eventually(
                &format!("ztunnel on {node} is ready"),
                Duration::from_secs(30),
                || {
                    let out = self.meshctl(&[
                        "exec",
                        "--node",
                        node,
                        "--",
                        "curl",
                        "-sf",
                        "127.0.0.1:15021/healthz/ready",
                    ]);
                    out.status.success().then_some(()).ok_or_else(|| text(&out))
                },
            );
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let out = self.meshctl(&["down"]);
        if !out.status.success() {
            eprintln!("meshctl down failed: {}", text(&out));
        }
    }
}

/// stdout and stderr of a command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Retries `check` until it passes or `within` passes; then panics with
/// the last failure.
pub fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Sends `signal` (e.g. `-KILL`) to `pid` with kill(1).
pub fn kill(pid: i32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// An AuthorizationPolicy for the workloads of `ns` labelled `app`
/// (namespace-wide when `app` is empty).
pub fn policy(ns: &str, name: &str, app: &str, action: &str, rules: &str) -> String {
    let selector = if app.is_empty() {
        String::new()
    } else {
        format!("  selector: {{matchLabels: {{app: {app}}}}}\n")
    };
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
{selector}  action: {action}
  rules:
{rules}"
    )
}
