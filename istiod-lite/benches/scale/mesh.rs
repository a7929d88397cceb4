//! The generated mesh: Kubernetes YAML as `kubectl get -o yaml` would
//! print it, one file per namespace, the same bytes on every run.
//!
//! # Shape
//!
//! - `NAMESPACES` namespaces `ns-000`.. labelled `istio.io/dataplane-mode=ambient`,
//!   plus the root namespace `istio-system`.
//! - Per namespace `APPS` Deployments `svc-00`.., each with a Service of the
//!   same name selecting `app: svc-NN`, and `PODS_PER_APP` pods (seven `v1`,
//!   three `v2`) owned by a ReplicaSet, on `NODES` nodes round robin, one
//!   service account per app, every 37th pod not ready.
//! - Service ports: `http` 80 to a named target port (even apps) or 8080
//!   (odd apps); every third app also `grpc` 9090 to the named port `grpc`,
//!   which only pods of even apps declare (so apps 3 and 9 exercise the
//!   "named port not declared" path).
//! - Per namespace `POLICIES_PER_NAMESPACE` AuthorizationPolicies: one
//!   namespace-wide ALLOW by namespace, seven ALLOWs by principal and port,
//!   one DENY by `notNamespaces`/`notIpBlocks`/port, one ALLOW by namespace
//!   and service account on `version: v2` pods only.
//!
//! The probe pod (pod 0: `ns-000`, app `svc-00`) lives alone in
//! [`PROBE_FILE`], so that flipping its readiness rewrites a tiny file and
//! touches exactly one workload.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

pub(crate) const NAMESPACES: usize = 100;
pub(crate) const APPS: usize = 10;
pub(crate) const PODS_PER_APP: usize = 10;
pub(crate) const NODES: usize = 50;
pub(crate) const POLICIES_PER_NAMESPACE: usize = 10;

pub(crate) const PODS: usize = NAMESPACES * APPS * PODS_PER_APP;
pub(crate) const SERVICES: usize = NAMESPACES * APPS;
pub(crate) const POLICIES: usize = NAMESPACES * POLICIES_PER_NAMESPACE;

/// The file holding only the probe pod.
pub(crate) const PROBE_FILE: &str = "zz-probe.yaml";
/// Namespace and name of the probe pod.
pub(crate) const PROBE_NAMESPACE: &str = "ns-000";

/// Writes the whole mesh into `dir`, the probe pod ready. Returns the total
/// size in bytes.
pub(crate) fn write(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut write_file = |name: &str, text: &str| -> anyhow::Result<()> {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("cannot write {name} into {}", dir.display()))?;
        total += text.len() as u64;
        Ok(())
    };
    write_file(
        "istio-system.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n",
    )?;
    for ns in 0..NAMESPACES {
        write_file(&format!("ns-{ns:03}.yaml"), &namespace_file(ns))?;
    }
    write_file(PROBE_FILE, &probe_file(true))?;
    Ok(total)
}

/// The probe file's content with the probe pod ready or not.
pub(crate) fn probe_file(ready: bool) -> String {
    let mut out = String::new();
    pod(&mut out, 0, 0, 0, Some(ready));
    out
}

/// The name of the probe pod.
pub(crate) fn probe_name() -> String {
    pod_name(0, 0, 0)
}

fn namespace_file(ns: usize) -> String {
    let mut out = String::with_capacity(128 * 1024);
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns:03}\n  labels:\n    \
         istio.io/dataplane-mode: ambient\n"
    );
    for app in 0..APPS {
        service(&mut out, ns, app);
        for replica in 0..PODS_PER_APP {
            // The probe pod is in its own file.
            if (ns, app, replica) != (0, 0, 0) {
                pod(&mut out, ns, app, replica, None);
            }
        }
    }
    for policy_index in 0..POLICIES_PER_NAMESPACE {
        policy(&mut out, ns, policy_index);
    }
    out
}

fn service(out: &mut String, ns: usize, app: usize) {
    let http_target = if app.is_multiple_of(2) {
        "http".to_string()
    } else {
        "8080".to_string()
    };
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{app:02}\n  namespace: ns-{ns:03}\n\
         spec:\n  clusterIP: 10.96.{ns}.{ip}\n  selector:\n    app: svc-{app:02}\n  ports:\n  \
         - name: http\n    port: 80\n    targetPort: {http_target}\n",
        ip = app + 1,
    );
    if app.is_multiple_of(3) {
        out.push_str("  - name: grpc\n    port: 9090\n    targetPort: grpc\n");
    }
}

fn pod_name(ns: usize, app: usize, replica: usize) -> String {
    let (version, hash) = version_and_hash(ns, app, replica);
    format!("svc-{app:02}-{version}-{hash}-{replica:02}")
}

/// The version label and a stable pod-template-hash of one pod.
fn version_and_hash(ns: usize, app: usize, replica: usize) -> (&'static str, String) {
    let version = if replica < 7 { "v1" } else { "v2" };
    let seed = (ns * APPS + app) as u64 * 2 + u64::from(replica >= 7);
    let hash = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    (version, format!("{hash:06x}"))
}

/// One pod; `ready` overrides the default readiness (every 37th not ready).
fn pod(out: &mut String, ns: usize, app: usize, replica: usize, ready: Option<bool>) {
    let index = (ns * APPS + app) * PODS_PER_APP + replica;
    let node = index % NODES;
    let host = index / NODES + 2;
    let (version, hash) = version_and_hash(ns, app, replica);
    let name = pod_name(ns, app, replica);
    let ready = ready.unwrap_or(!index.is_multiple_of(37));
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: ns-{ns:03}\n  \
         labels:\n    app: svc-{app:02}\n    version: {version}\n    pod-template-hash: \"{hash}\"\n  \
         ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    \
         name: svc-{app:02}-{version}-{hash}\n    uid: 00000000-0000-0000-0000-{index:012}\n    \
         controller: true\nspec:\n  nodeName: node-{node:02}\n  serviceAccountName: svc-{app:02}\n  \
         containers:\n  - name: app\n    image: registry.example/svc-{app:02}:{version}\n    \
         ports:\n    - name: http\n      containerPort: 8080\n"
    );
    if app.is_multiple_of(2) {
        out.push_str("    - name: grpc\n      containerPort: 9090\n");
    }
    let _ = write!(
        out,
        "status:\n  phase: Running\n  podIP: 10.244.{node}.{host}\n  podIPs:\n  - ip: 10.244.{node}.{host}\n  \
         conditions:\n  - type: Ready\n    status: \"{}\"\n",
        if ready { "True" } else { "False" }
    );
}

fn policy(out: &mut String, ns: usize, index: usize) {
    let _ = write!(
        out,
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  \
         name: policy-{index:02}\n  namespace: ns-{ns:03}\nspec:\n"
    );
    let next = (ns + 1) % NAMESPACES;
    let other = (ns + 2) % NAMESPACES;
    let _ = match index {
        // Namespace-wide: every pod of the namespace names it.
        0 => write!(
            out,
            "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        \
             namespaces: [ns-{ns:03}, istio-system]\n"
        ),
        1..=7 => write!(
            out,
            "  selector:\n    matchLabels:\n      app: svc-{index:02}\n  action: ALLOW\n  rules:\n  \
             - from:\n    - source:\n        principals:\n        \
             - cluster.local/ns/ns-{next:03}/sa/svc-{index:02}\n        \
             - cluster.local/ns/ns-{ns:03}/sa/svc-{peer:02}\n    to:\n    - operation:\n        \
             ports: [\"8080\", \"9090\"]\n",
            peer = (index + 1) % APPS,
        ),
        8 => write!(
            out,
            "  selector:\n    matchLabels:\n      app: svc-08\n  action: DENY\n  rules:\n  \
             - from:\n    - source:\n        notNamespaces: [ns-{ns:03}]\n        \
             notIpBlocks: [10.244.0.0/16]\n    to:\n    - operation:\n        ports: [\"9090\"]\n"
        ),
        _ => write!(
            out,
            "  selector:\n    matchLabels:\n      app: svc-09\n      version: v2\n  action: ALLOW\n  \
             rules:\n  - from:\n    - source:\n        namespaces: [ns-{other:03}]\n        \
             serviceAccounts: [ns-{other:03}/svc-09]\n"
        ),
    };
}
