//! A local mesh's state on disk, so that `meshctl down` can remove
//! everything `up` made even after `up` crashed halfway. `up` records each
//! namespace *before* it creates it (removing something that does not
//! exist is harmless; leaking something unrecorded is not) and each
//! process the moment it has started (its pid exists only then), and
//! rewrites the file atomically after every step.
//!
//! ```text
//! <state-dir>/<mesh>/state.json      what exists, the plan
//!                    config/         istiod-lite's config directory
//!                    istiod/         istiod-lite's state (CA root, node tokens)
//!                    logs/           one file per process
//!                    nodes/<node>/netns/  the pod namespaces ztunnel serves
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::MeshError;
use super::plan::Plan;
use super::process::Spawn;

/// Where meshes keep their state unless told otherwise: tmpfs, cleared on
/// reboot together with the network namespaces it describes.
pub const DEFAULT_STATE_DIR: &str = "/run/meshctl";

const STATE_FILE: &str = "state.json";

/// What `up` made (or was about to make) of one mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    pub plan: Plan,
    /// The topology file `up` read.
    pub topology_file: PathBuf,
    /// Network namespaces, in the order they were created.
    pub netns: Vec<String>,
    /// `/etc/netns/<name>` directories (a pod's `/etc/hosts`).
    pub etc_netns: Vec<PathBuf>,
    pub processes: Vec<ProcessRecord>,
    /// `up` finished and everything was ready.
    pub complete: bool,
}

/// A process `up` started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `istiod-lite`, `ztunnel/<node>` or `pod/<ns>/<name>`.
    pub name: String,
    pub pid: i32,
    /// Clock ticks after boot when it started (`/proc/<pid>/stat` field
    /// 22): with the pid, names the process even after its pid is reused.
    pub start_time: u64,
    pub log: PathBuf,
    /// How it was started.
    #[serde(default)]
    pub spawn: Option<Spawn>,
}

/// The directories of one mesh.
#[derive(Debug, Clone)]
pub struct MeshDir {
    dir: PathBuf,
}

// === impl MeshDir ===

impl MeshDir {
    pub fn new(state_dir: &Path, mesh: &str) -> MeshDir {
        MeshDir {
            dir: state_dir.join(mesh),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    pub fn istiod_dir(&self) -> PathBuf {
        self.dir.join("istiod")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The directory of links to the pod namespaces of `node`, which that
    /// node's ztunnel searches for its pods (`--netns-dir`).
    pub fn node_netns_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node).join("netns")
    }

    /// The log file of a process, by its record name.
    pub fn log_file(&self, process: &str) -> PathBuf {
        self.logs_dir()
            .join(format!("{}.log", process.replace('/', "-")))
    }

    pub fn create(&self) -> Result<(), MeshError> {
        for dir in [self.config_dir(), self.logs_dir()] {
            fs::create_dir_all(&dir).map_err(|source| MeshError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn load(&self) -> Result<MeshState, MeshError> {
        let path = self.dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(|source| MeshError::Io {
            action: "read the mesh state",
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|error| MeshError::State {
            path,
            message: error.to_string(),
        })
    }

    /// Writes the state whole or not at all (temporary file, then rename).
    pub fn save(&self, state: &MeshState) -> Result<(), MeshError> {
        let text = serde_json::to_string_pretty(state).map_err(|error| MeshError::State {
            path: self.dir.join(STATE_FILE),
            message: error.to_string(),
        })?;
        write_atomic(&self.dir.join(STATE_FILE), text.as_bytes())
    }

    pub fn remove(&self) -> Result<(), MeshError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MeshError::Io {
                action: "remove",
                path: self.dir.clone(),
                source,
            }),
        }
    }
}

/// The names of the meshes that are up under `state_dir`.
pub fn meshes(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().join(STATE_FILE).exists())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The mesh a command acts on: `requested`, or the only one that is up.
pub fn select(state_dir: &Path, requested: Option<&str>) -> Result<MeshDir, MeshError> {
    let up = meshes(state_dir);
    match requested {
        Some(name) if up.iter().any(|m| m == name) => Ok(MeshDir::new(state_dir, name)),
        Some(name) => Err(MeshError::UnknownMesh {
            name: name.to_owned(),
            up: if up.is_empty() {
                "none".to_owned()
            } else {
                up.join(", ")
            },
        }),
        None => match up.as_slice() {
            [only] => Ok(MeshDir::new(state_dir, only)),
            [] => Err(MeshError::NoMesh(state_dir.to_owned())),
            _ => Err(MeshError::AmbiguousMesh(up.join(", "))),
        },
    }
}

/// Writes `bytes` to `path` through a hidden temporary file in the same
/// directory and a rename, so readers (istiod-lite's directory watch, a
/// later `down`) never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MeshError> {
    let io = |action, source| MeshError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file =
        fs::File::create(&temporary).map_err(|e| io("create a temporary file beside", e))?;
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    fs::rename(&temporary, path).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::topology::Topology;

    fn state() -> MeshState {
        let topology = Topology::parse(
            "t.yaml",
            "name: t\nnodes: [{name: a, podCIDR: 10.1.0.0/24}]\npods: [{name: p, node: a}]\n",
        )
        .unwrap();
        MeshState {
            plan: Plan::new("t.yaml", &topology, "t").unwrap(),
            topology_file: "t.yaml".into(),
            netns: vec!["t-net".to_owned()],
            etc_netns: Vec::new(),
            processes: vec![ProcessRecord {
                name: "ztunnel/a".to_owned(),
                pid: 42,
                start_time: 7,
                log: "/x".into(),
                spawn: None,
            }],
            complete: false,
        }
    }

    #[test]
    fn state_round_trips_and_meshes_are_selected() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            select(root.path(), None),
            Err(MeshError::NoMesh(_))
        ));
        let one = MeshDir::new(root.path(), "one");
        one.create().unwrap();
        one.save(&state()).unwrap();
        assert_eq!(one.load().unwrap(), state());
        assert_eq!(
            one.log_file("ztunnel/a"),
            one.logs_dir().join("ztunnel-a.log")
        );
        assert_eq!(select(root.path(), None).unwrap().path(), one.path());

        let two = MeshDir::new(root.path(), "two");
        two.create().unwrap();
        two.save(&state()).unwrap();
        let ambiguous = select(root.path(), None).unwrap_err().to_string();
        assert!(ambiguous.contains("one, two"), "{ambiguous}");
        assert_eq!(select(root.path(), Some("two")).unwrap().path(), two.path());
        let unknown = select(root.path(), Some("three")).unwrap_err().to_string();
        assert!(unknown.contains("one, two"), "{unknown}");

        two.remove().unwrap();
        two.remove().unwrap();
        assert_eq!(meshes(root.path()), ["one"]);
    }

    #[test]
    fn a_corrupt_state_says_what_to_do() {
        let root = tempfile::tempdir().unwrap();
        let mesh = MeshDir::new(root.path(), "m");
        mesh.create().unwrap();
        fs::write(mesh.path().join(STATE_FILE), "{").unwrap();
        let error = mesh.load().unwrap_err().to_string();
        assert!(
            error.contains("state.json") && error.contains("by hand"),
            "{error}"
        );
    }
}
