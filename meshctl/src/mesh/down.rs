//! `meshctl down`: removes every process, namespace and file a mesh's
//! state records, in the reverse order `up` made them, carrying on past
//! anything already gone, so that it also cleans up after an `up` that
//! crashed halfway.

use std::fs;
use std::time::Duration;

use super::network;
use super::process;
use super::state::{MeshDir, MeshState};

/// ztunnel drains on SIGTERM; this leaves it time to, then kills.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What `down` did, and what it could not do.
#[derive(Debug, Default)]
pub struct Teardown {
    pub stopped: usize,
    pub killed: Vec<String>,
    pub netns_removed: usize,
    pub problems: Vec<String>,
}

/// Removes everything `state` records and then the state itself. The state
/// directory stays if something could not be removed, so that another
/// `down` can try again.
pub fn teardown(dir: &MeshDir, state: &MeshState) -> Teardown {
    let mut report = Teardown::default();
    let mut records = state.processes.clone();
    records.reverse();
    report.stopped = records.iter().filter(|r| process::is_running(r)).count();
    report.killed = process::stop_all(&records, STOP_GRACE);
    for netns in state.netns.iter().rev() {
        let existed = network::netns_exists(netns);
        match network::delete_netns(netns) {
            Ok(()) if existed => report.netns_removed += 1,
            Ok(()) => {}
            Err(error) => report.problems.push(error.to_string()),
        }
    }
    for etc in &state.etc_netns {
        if let Err(error) = fs::remove_dir_all(etc)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            report
                .problems
                .push(format!("remove {}: {error}", etc.display()));
        }
    }
    if report.problems.is_empty()
        && let Err(error) = dir.remove()
    {
        report.problems.push(error.to_string());
    }
    report
}
