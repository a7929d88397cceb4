//! What can go wrong bringing a local mesh up or down, each error saying
//! what to do about it.

use std::path::PathBuf;

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{source_name} is not a valid topology file: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Addresses {
        source_name: String,
        message: String,
    },
}

/// Errors of the local-mesh commands.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(
        "`meshctl up` needs root: like a CNI plugin it creates network namespaces, \
         veth pairs and nftables rules. Run it with sudo"
    )]
    NotRoot,
    #[error("`{tool}` is missing: install it (apt-get install -y {package})")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "mesh `{name}` is already up (state in {}): run `meshctl down --mesh {name}` first",
        .state.display()
    )]
    AlreadyUp { name: String, state: PathBuf },
    #[error(
        "network namespace `{0}` already exists but no mesh recorded it: remove it with `ip netns del {0}`"
    )]
    NetnsExists(String),
    #[error("no mesh is up (state directory {}): start one with `meshctl up -f <topology.yaml>`", .0.display())]
    NoMesh(PathBuf),
    #[error("several meshes are up ({0}): choose one with --mesh")]
    AmbiguousMesh(String),
    #[error("mesh `{name}` is not up: meshes up are {up}")]
    UnknownMesh { name: String, up: String },
    #[error("{0}")]
    NotFound(String),
    #[error(
        "cannot find the `{0}` binary beside meshctl or on PATH: build the workspace (`cargo build --workspace`)"
    )]
    MissingBinary(String),
    #[error("{action} failed: {message}")]
    Command { action: String, message: String },
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the mesh state in {} is unreadable ({message}): remove what it named by hand, then delete the file", .path.display())]
    State { path: PathBuf, message: String },
    #[error("{what} did not become ready within {seconds} s: {detail}")]
    NotReady {
        what: String,
        seconds: u64,
        detail: String,
    },
}
