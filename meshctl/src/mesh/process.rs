//! The mesh's processes: started inside a network namespace through `ip
//! netns exec` (which also gives the process the namespace's `/etc/hosts`
//! from `/etc/netns/<name>/`), detached from meshctl in a process group of
//! their own, logging to a file; and stopped again by `down`, which checks
//! that a pid still names the process `up` started before signalling it.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::error::MeshError;
use super::state::ProcessRecord;

/// How a process is started (kept in its record, so that `meshctl restart`
/// starts it again the same way).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spawn {
    /// The record name: `istiod-lite`, `ztunnel/<node>`, `pod/<ns>/<name>`.
    pub name: String,
    pub netns: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// Starts `spawn` and returns its record. The process outlives meshctl.
pub fn start(spawn: &Spawn) -> Result<ProcessRecord, MeshError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spawn.log)
        .map_err(|source| MeshError::Io {
            action: "open the log file",
            path: spawn.log.clone(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| MeshError::Io {
        action: "open the log file",
        path: spawn.log.clone(),
        source,
    })?;
    let child = Command::new("ip")
        .args(["netns", "exec", &spawn.netns])
        .arg(&spawn.program)
        .args(&spawn.args)
        .envs(spawn.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own group: ctrl-c in meshctl's terminal does not reach it,
        // and `down` signals the whole group (a pod's command may fork).
        .process_group(0)
        .spawn()
        .map_err(|error| MeshError::Command {
            action: format!("start {} ({})", spawn.name, spawn.program.display()),
            message: error.to_string(),
        })?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // The child is reaped by init once meshctl exits; until then a dead
    // child is a zombie, which `is_running` counts as gone.
    drop(child);
    Ok(ProcessRecord {
        name: spawn.name.clone(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
        log: spawn.log.clone(),
        spawn: Some(spawn.clone()),
    })
}

/// Whether the recorded process still runs (same pid, same start time,
/// not a zombie).
pub fn is_running(record: &ProcessRecord) -> bool {
    let Some((state, started)) = stat(record.pid) else {
        return false;
    };
    state != 'Z' && state != 'X' && started == record.start_time
}

/// Sends SIGTERM to every running process of `records`, waits up to
/// `grace` for all of them, then SIGKILLs what is left. Returns the names
/// of those that had to be killed.
pub fn stop_all(records: &[ProcessRecord], grace: Duration) -> Vec<String> {
    let running: Vec<&ProcessRecord> = records.iter().filter(|r| is_running(r)).collect();
    for record in &running {
        let _ = killpg(Pid::from_raw(record.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && running.iter().any(|r| is_running(r)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = Vec::new();
    for record in running.into_iter().filter(|r| is_running(r)) {
        let _ = killpg(Pid::from_raw(record.pid), Signal::SIGKILL);
        killed.push(record.name.clone());
    }
    killed
}

/// The last `lines` lines of a log file, for an error report.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, started)| started)
}

/// State and start time from `/proc/<pid>/stat`. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its
/// closing parenthesis.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, field 22 (starttime) is
    // index 19.
    let state = fields.first()?.chars().next()?;
    let started = fields.get(19)?.parse().ok()?;
    Some((state, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_after_the_name() {
        let text = "1234 (my (odd) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(text), Some(('S', 987_654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_running_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let started = start_time(pid).unwrap();
        let record = |start_time| ProcessRecord {
            name: "self".to_owned(),
            pid,
            start_time,
            log: PathBuf::new(),
            spawn: None,
        };
        assert!(is_running(&record(started)));
        assert!(
            !is_running(&record(started + 1)),
            "a reused pid is not ours"
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("missing"), 2), "");
    }
}
