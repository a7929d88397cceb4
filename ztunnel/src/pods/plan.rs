//! Which local pods ztunnel should serve, and what to change to get there:
//! pure functions of the state snapshot and what is running.
//!
//! A pod is served when its workload runs on this node and speaks HBONE
//! (istiod-lite marks enrolled pods so; a pod outside the mesh has tunnel
//! protocol NONE and is left alone). A served pod whose addresses change is
//! restarted, since its listeners and namespace are found by address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use identity::Identity;

use crate::state::{State, TunnelProtocol};

/// A local pod ztunnel should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPod {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub addresses: Vec<IpAddr>,
    pub identity: Identity,
}

/// One step towards the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Start(DesiredPod),
    /// Stop the running pod with this uid.
    Stop(Arc<str>),
    /// Stop it, then start it again as described (its addresses changed).
    Restart(DesiredPod),
}

/// The enrolled workloads of `node` in `state`, by uid.
pub fn desired(state: &State, node: &str) -> BTreeMap<Arc<str>, DesiredPod> {
    state
        .workloads()
        .filter(|w| &*w.node == node && w.protocol == TunnelProtocol::Hbone)
        .filter(|w| !w.addresses.is_empty())
        .map(|w| {
            let pod = DesiredPod {
                uid: w.uid.clone(),
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                addresses: w.addresses.clone(),
                identity: w.identity.clone(),
            };
            (w.uid.clone(), pod)
        })
        .collect()
}

/// The changes that turn `running` (uid to the addresses it was started
/// with) into `desired`. `retry` lists running pods whose start failed:
/// they are restarted even if nothing changed. Stops come first, so that a
/// pod replaced under the same address releases it before its successor
/// binds.
pub fn diff(
    desired: &BTreeMap<Arc<str>, DesiredPod>,
    running: &HashMap<Arc<str>, Vec<IpAddr>>,
    retry: &[Arc<str>],
) -> Vec<Change> {
    let mut stops: Vec<Arc<str>> = running
        .keys()
        .filter(|uid| !desired.contains_key(*uid))
        .cloned()
        .collect();
    stops.sort();
    let mut changes: Vec<Change> = stops.into_iter().map(Change::Stop).collect();
    for (uid, pod) in desired {
        match running.get(uid) {
            None => changes.push(Change::Start(pod.clone())),
            Some(addresses) if *addresses != pod.addresses || retry.contains(uid) => {
                changes.push(Change::Restart(pod.clone()));
            }
            Some(_) => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use proto::workload as wl;

    use super::*;

    fn workload(name: &str, node: &str, ip: u8, hbone: bool) -> (String, wl::Address) {
        let uid = format!("Kubernetes//Pod/ns/{name}");
        let w = wl::Workload {
            uid: uid.clone(),
            name: name.into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
            node: node.into(),
            addresses: vec![vec![10, 0, 0, ip]],
            tunnel_protocol: if hbone {
                wl::TunnelProtocol::Hbone as i32
            } else {
                wl::TunnelProtocol::None as i32
            },
            ..wl::Workload::default()
        };
        (
            uid,
            wl::Address {
                r#type: Some(wl::address::Type::Workload(w)),
            },
        )
    }

    fn state(workloads: Vec<(String, wl::Address)>) -> State {
        let mut state = State::default();
        assert!(state.apply_addresses(workloads, &[]).is_empty());
        state
    }

    #[test]
    fn only_enrolled_pods_of_this_node_are_served() {
        let state = state(vec![
            workload("here", "node-1", 1, true),
            workload("elsewhere", "node-2", 2, true),
            workload("not-enrolled", "node-1", 3, false),
        ]);
        let desired = desired(&state, "node-1");
        let names: Vec<&str> = desired.values().map(|p| &*p.name).collect();
        assert_eq!(names, ["here"]);
        assert_eq!(
            desired.values().next().unwrap().addresses,
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn changes_start_new_stop_gone_restart_moved_and_failed() {
        let state = state(vec![
            workload("new", "n", 1, true),
            workload("same", "n", 2, true),
            workload("moved", "n", 3, true),
            workload("failed", "n", 4, true),
        ]);
        let desired = desired(&state, "n");
        let uid = |name: &str| -> Arc<str> { format!("Kubernetes//Pod/ns/{name}").into() };
        let ip = |last: u8| vec![IpAddr::from([10, 0, 0, last])];
        let running = HashMap::from([
            (uid("same"), ip(2)),
            (uid("moved"), ip(9)),
            (uid("failed"), ip(4)),
            (uid("gone"), ip(5)),
        ]);
        let changes = diff(&desired, &running, &[uid("failed")]);
        let summary: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Start(p) => format!("start {}", p.name),
                Change::Stop(uid) => format!("stop {uid}"),
                Change::Restart(p) => format!("restart {}", p.name),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "stop Kubernetes//Pod/ns/gone",
                "restart failed",
                "restart moved",
                "start new",
            ]
        );
        // Nothing changed: nothing to do.
        let settled: HashMap<Arc<str>, Vec<IpAddr>> = desired
            .iter()
            .map(|(uid, pod)| (uid.clone(), pod.addresses.clone()))
            .collect();
        assert!(diff(&desired, &settled, &[]).is_empty());
    }
}
