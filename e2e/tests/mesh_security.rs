//! Local-mesh scenarios for the mesh's security properties, each on its
//! own mesh brought up with `meshctl up` (real processes, real capture,
//! real traffic): encryption on the wire, identity, L4 policy, PeerAuthentication,
//! closing now-denied connections, and the CA refusing a node's ztunnel
//! the identity of a pod elsewhere. Each has its negative next to its
//! positive. See docs/testing.md for what each proves and how to run one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::{Duration, Instant};

use mesh_support::{Mesh, can_run, eventually, kill, policy, text, topology};

fn pod_ip(mesh: &Mesh, pod: &str) -> String {
    let state = mesh.state();
    let pods = state["plan"]["pods"].as_array().unwrap();
    let pod = pods.iter().find(|p| p["name"] == pod).unwrap();
    pod["ip"].as_str().unwrap().to_owned()
}

/// Scenario 1: between enrolled pods on different nodes, the node link
/// carries only TLS to port 15008 and never the request's plaintext; with
/// the namespaces out of the mesh, the same capture does see the marker
/// (so the capture would have caught it).
#[test]
fn s01_the_node_link_carries_only_tls_to_15008() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s01", ""));
    let b_ip = pod_ip(&mesh, "b");
    let marker = "PLAINTEXT-MARKER-5b1f";
    let url = format!("http://b.ns-b.pod:8080/{marker}");

    let enrolled = capture_link(&mesh, "enrolled", &b_ip, || {
        let body = mesh.curl("a", &url).unwrap();
        assert!(
            body.contains(marker),
            "the request carried the marker: {body}"
        );
    });
    assert!(!enrolled.packets.is_empty(), "the capture saw the tunnel");
    for packet in &enrolled.packets {
        assert!(
            packet.src_port == 15008 || packet.dst_port == 15008,
            "a packet to or from b not on 15008: {packet:?}"
        );
    }
    let first = enrolled
        .packets
        .iter()
        .find(|p| p.dst_port == 15008 && !p.payload.is_empty())
        .expect("a payload towards 15008");
    assert_eq!(
        first.payload[0], 0x16,
        "the tunnel opens with a TLS handshake record"
    );
    assert!(
        !contains(&enrolled.raw, marker.as_bytes()),
        "plaintext crossed the node link"
    );

    for ns in ["ns-a", "ns-b"] {
        let out = mesh.meshctl(&["namespace", "disable", ns]);
        assert!(out.status.success(), "{}", text(&out));
    }
    for pod in ["a", "b"] {
        eventually(
            &format!("{pod} is released"),
            Duration::from_secs(15),
            || {
                (!mesh.ruleset(pod).contains("table inet ztunnel"))
                    .then_some(())
                    .ok_or_else(|| "rules still there".to_owned())
            },
        );
    }
    let plaintext = capture_link(&mesh, "plaintext", &b_ip, || {
        mesh.curl("a", &url).unwrap();
    });
    assert!(
        contains(&plaintext.raw, marker.as_bytes()),
        "out of the mesh the marker is visible: the capture works"
    );
    assert!(plaintext.packets.iter().any(|p| p.dst_port == 8080));
}

/// Scenario 2: the destination ztunnel's access log names the source
/// pod's SPIFFE identity; a client outside the mesh gets no identity.
#[test]
fn s02_the_destination_logs_the_source_identity() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s02", ""));
    let (a_ip, client_ip) = (pod_ip(&mesh, "a"), pod_ip(&mesh, "client"));
    mesh.curl("a", "http://b.ns-b.pod:8080/").unwrap();
    mesh.curl("client", "http://b.ns-b.pod:8080/").unwrap();
    let lines = eventually(
        "both connections are logged",
        Duration::from_secs(10),
        || {
            let log = mesh.log("ztunnel/node-b");
            let of = |ip: &str| {
                log.lines()
                    .find(|l| {
                        l.contains("connection complete") && l.contains(&format!("src.addr={ip}:"))
                    })
                    .map(str::to_owned)
            };
            match (of(&a_ip), of(&client_ip)) {
                (Some(a), Some(client)) => Ok((a, client)),
                _ => Err(log),
            }
        },
    );
    let (from_a, from_client) = lines;
    assert!(from_a.contains("direction=\"inbound\""), "{from_a}");
    assert!(
        from_a.contains("src.identity=spiffe://cluster.local/ns/ns-a/sa/a"),
        "{from_a}"
    );
    assert!(
        from_a.contains("dst.identity=spiffe://cluster.local/ns/ns-b/sa/b"),
        "{from_a}"
    );
    assert!(
        !from_client.contains("src.identity"),
        "outside the mesh: no identity: {from_client}"
    );
}

/// Scenario 3: A may call B and B may not call A; a namespace-wide DENY;
/// an ALLOW on one port only.
#[test]
fn s03_l4_policy_allows_and_denies() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s03", ""));
    let from = |principal: &str| format!("  - from: [{{source: {{principals: [{principal}]}}}}]\n");
    mesh.apply(
        "a-only-itself",
        &policy(
            "ns-a",
            "a-only-itself",
            "a",
            "ALLOW",
            &from("cluster.local/ns/ns-a/sa/a"),
        ),
    );
    mesh.apply(
        "b-from-a",
        &policy(
            "ns-b",
            "b-from-a",
            "b",
            "ALLOW",
            &from("cluster.local/ns/ns-a/sa/a"),
        ),
    );
    eventually("b may not call a", Duration::from_secs(10), || {
        match mesh.curl("b", "http://a.ns-a.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        }
    });
    mesh.curl("a", "http://b.ns-b.pod:8080/")
        .expect("a may call b");
    mesh.tcp_echo("a", "b.ns-b.pod:9000")
        .expect("a may call b on any port");

    let deny = "  - from: [{source: {namespaces: [ns-a]}}]\n";
    mesh.apply("deny-ns-a", &policy("ns-b", "deny-ns-a", "", "DENY", deny));
    eventually(
        "a DENY for ns-a covers all of ns-b",
        Duration::from_secs(10),
        || match mesh.curl("a", "http://b.ns-b.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        },
    );
    // b2 is on node-a, whose ztunnel gets the push on its own time.
    eventually(
        "namespace-wide: b2 too",
        Duration::from_secs(10),
        || match mesh.curl("a", "http://b2.ns-b.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        },
    );
    mesh.delete("deny-ns-a");
    mesh.delete("b-from-a");
    // Wait for the deletions to arrive, so that a refusal below is the
    // port rule's and not the old DENY's.
    eventually("no policy on b any more", Duration::from_secs(10), || {
        mesh.curl("a", "http://b.ns-b.pod:8080/")?;
        mesh.tcp_echo("a", "b.ns-b.pod:9000")
    });
    let port_only =
        "  - from: [{source: {namespaces: [ns-a]}}]\n    to: [{operation: {ports: [\"8080\"]}}]\n";
    mesh.apply(
        "b-http-only",
        &policy("ns-b", "b-http-only", "b", "ALLOW", port_only),
    );
    eventually(
        "only 8080 is allowed",
        Duration::from_secs(10),
        || match mesh.tcp_echo("a", "b.ns-b.pod:9000") {
            Err(_) => Ok(()),
            Ok(()) => Err("9000 still allowed".to_owned()),
        },
    );
    mesh.curl("a", "http://b.ns-b.pod:8080/")
        .expect("8080 is allowed");
}

/// Scenario 4: a pod outside the mesh reaches an enrolled pod in plaintext
/// while PeerAuthentication is PERMISSIVE, and is refused under STRICT.
#[test]
fn s04_strict_refuses_clients_outside_the_mesh() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s04", ""));
    mesh.curl("client", "http://b.ns-b.pod:8080/")
        .expect("PERMISSIVE lets plaintext in");
    mesh.apply(
        "strict",
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: ns-b}
spec:
  mtls: {mode: STRICT}
",
    );
    eventually(
        "STRICT refuses the client",
        Duration::from_secs(10),
        || match mesh.curl("client", "http://b.ns-b.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        },
    );
    mesh.curl("a", "http://b.ns-b.pod:8080/")
        .expect("mesh traffic is still allowed under STRICT");
    mesh.delete("strict");
    eventually("PERMISSIVE again", Duration::from_secs(10), || {
        mesh.curl("client", "http://b.ns-b.pod:8080/")
    });
}

/// Scenario 10: a policy change closes the open connections it now denies
/// and leaves the others alone.
#[test]
fn s10_a_policy_change_closes_denied_open_connections() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s10", ""));
    // Two slow requests, open while the policy changes: a's will be denied,
    // the client's (outside the mesh) will not.
    let started = Instant::now();
    let denied = mesh.spawn(
        "a",
        &[
            "curl",
            "-sS",
            "-f",
            "-m",
            "30",
            "http://b.ns-b.pod:8080/?delay=12s",
        ],
    );
    let allowed = mesh.spawn(
        "client",
        &[
            "curl",
            "-sS",
            "-f",
            "-m",
            "30",
            "http://b.ns-b.pod:8080/?delay=6s",
        ],
    );
    eventually(
        "both connections are open at b",
        Duration::from_secs(10),
        || {
            let open = mesh.ztunnel_json("node-b", "connections");
            let count = open.as_array().map_or(0, Vec::len);
            (count >= 2).then_some(()).ok_or(format!("{count} open"))
        },
    );
    let deny = "  - from: [{source: {namespaces: [ns-a]}}]\n";
    mesh.apply("deny-ns-a", &policy("ns-b", "deny-ns-a", "b", "DENY", deny));
    let denied = denied.wait_with_output().unwrap();
    assert!(
        !denied.status.success(),
        "the denied connection was closed: {}",
        text(&denied)
    );
    assert!(
        started.elapsed() < Duration::from_secs(11),
        "closed by the policy change, not by the 12 s answer: {:?}",
        started.elapsed()
    );
    let allowed = allowed.wait_with_output().unwrap();
    assert!(
        allowed.status.success(),
        "the allowed connection lived on: {}",
        text(&allowed)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("\"pod\": \"b\""));
}

/// Scenario 11: a ztunnel that asks the CA for the identity of a pod on
/// another node is refused, and the refusal is logged and counted; the
/// node's own ztunnel got its pods' certificates.
#[test]
fn s11_the_ca_refuses_identities_of_other_nodes() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s11", ""));
    let certs = mesh.ztunnel_json("node-b", "certs");
    let b_cert = certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["identity"] == "spiffe://cluster.local/ns/ns-b/sa/b")
        .expect("node-b's ztunnel holds b's certificate");
    assert_eq!(b_cert["state"], "available");
    let denied_before = csr_count(&mesh, "denied");

    // node-a's credentials, claiming to be node-b: it will ask for b's
    // identity, which no pod of node-a has.
    let state = mesh.state();
    let cp = state["plan"]["control_plane_ip"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = mesh.dir().join("istiod");
    let (xds, root, token) = (
        format!("https://{cp}:15012"),
        dir.join("root-cert.pem").display().to_string(),
        dir.join("tokens/node-a.token").display().to_string(),
    );
    let impostor = mesh
        .command(&[
            "exec",
            "--node",
            "node-a",
            "--",
            "ztunnel",
            "--node-name",
            "node-b",
            "--xds-address",
            &xds,
            "--xds-root-ca",
            &root,
            "--alt-xds-hostname",
            "istiod.istio-system.svc",
            "--alt-ca-hostname",
            "istiod.istio-system.svc",
            "--auth-token",
            &token,
            "--capture",
            "explicit",
            "--admin-addr",
            "127.0.0.1:15100",
            "--stats-addr",
            "127.0.0.1:15120",
            "--readiness-addr",
            "127.0.0.1:15121",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped also when an assertion below fails: a process left in a
    // deleted namespace would outlive the test.
    let _impostor = StopOnDrop(impostor);
    eventually("the CA counts the refusal", Duration::from_secs(20), || {
        let denied = csr_count(&mesh, "denied");
        (denied > denied_before)
            .then_some(())
            .ok_or(format!("denied {denied}"))
    });
    let log = mesh.log("istiod-lite");
    assert!(
        log.lines().any(|l| l.contains("node-a")
            && l.contains("may not obtain spiffe://cluster.local/ns/ns-b/sa/b")),
        "the refusal is logged with the node and the identity:\n{log}"
    );
    let out = mesh.meshctl(&[
        "ztunnel",
        "certs",
        "--node",
        "node-a",
        "--admin",
        "127.0.0.1:15100",
        "-o",
        "json",
    ]);
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let issued = held
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["identity"] == "spiffe://cluster.local/ns/ns-b/sa/b" && !c["serial"].is_null()
        })
        .count();
    assert_eq!(issued, 0, "the impostor holds no certificate for b: {held}");
}

/// A background process, stopped (SIGTERM, then reaped) when dropped.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = self.0.wait();
    }
}

/// `istiod_lite_csr_requests_total{result=...}`, read inside the node
/// network where istiod-lite listens.
fn csr_count(mesh: &Mesh, result: &str) -> u64 {
    let state = mesh.state();
    let cp = state["plan"]["control_plane_ip"].as_str().unwrap();
    let out = mesh.meshctl(&[
        "exec",
        "--cluster",
        "--",
        "curl",
        "-sf",
        &format!("http://{cp}:15014/metrics"),
    ]);
    assert!(out.status.success(), "istiod-lite metrics: {}", text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    let series = format!("istiod_lite_csr_requests_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// What a capture on node-a's link saw of traffic to and from one address.
struct Capture {
    raw: Vec<u8>,
    packets: Vec<Packet>,
}

#[derive(Debug)]
struct Packet {
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
}

/// Captures TCP to and from `host` on node-a's `eth0` (its link to the
/// other node) while `traffic` runs.
fn capture_link(mesh: &Mesh, label: &str, host: &str, traffic: impl FnOnce()) -> Capture {
    let file = mesh.dir().join(format!("{label}.pcap"));
    let path = file.display().to_string();
    let filter = format!("tcp and host {host}");
    let mut tcpdump = mesh
        .command(&[
            "exec", "--node", "node-a", "--", "tcpdump", "-i", "eth0", "-U", "-s", "0", "-w",
            &path, &filter,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("tcpdump is capturing", Duration::from_secs(10), || {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        (size >= 24)
            .then_some(())
            .ok_or_else(|| "no pcap header yet".to_owned())
    });
    // tcpdump writes the header before the capture is attached.
    std::thread::sleep(Duration::from_millis(500));
    traffic();
    std::thread::sleep(Duration::from_millis(500));
    kill(i32::try_from(tcpdump.id()).unwrap(), "-TERM");
    let _ = tcpdump.wait();
    let raw = std::fs::read(&file).unwrap();
    Capture {
        packets: parse_pcap(&raw),
        raw,
    }
}

/// The TCP segments of a pcap file of Ethernet frames carrying IPv4.
fn parse_pcap(raw: &[u8]) -> Vec<Packet> {
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= raw.len() {
        let captured = u32::from_le_bytes(raw[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &raw[at + 16..(at + 16 + captured).min(raw.len())];
        at += 16 + captured;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ip_header = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if ip[9] != 6 || total < ip_header + 20 {
            continue;
        }
        let tcp = &ip[ip_header..total];
        let tcp_header = usize::from(tcp[12] >> 4) * 4;
        packets.push(Packet {
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            payload: tcp.get(tcp_header..).unwrap_or_default().to_vec(),
        });
    }
    packets
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
