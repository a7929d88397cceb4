//! Config sources: where Kubernetes objects come from.
//!
//! Both sources (a directory of YAML files, the default; a Kubernetes API
//! server) report the same events over one channel, so everything after them
//! (index, translation, push) is one code path. A source never translates:
//! it only says which objects now exist, which are gone, and what it could
//! not read.

pub mod file;
pub mod kubernetes;

use crate::model::{KubeObject, ObjectKey};

/// One object appearing, changing or disappearing.
#[derive(Debug, Clone)]
pub enum Change {
    /// The object exists with this content (new or updated).
    Upsert(KubeObject),
    /// The object no longer exists.
    Remove(ObjectKey),
}

/// What a source reports to the pipeline.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// Changes that belong together (one file saved, one watch event, one
    /// relist), applied as a unit.
    Changes {
        origin: String,
        changes: Vec<Change>,
    },
    /// Problems found in `origin` (a file path, or `kube:<Kind>`): the objects
    /// from its last good version stay in force. An empty list clears the
    /// problems previously reported for `origin`.
    Problems {
        origin: String,
        problems: Vec<String>,
    },
    /// The source has delivered its complete initial state; the pipeline may
    /// now push (and readiness may turn true).
    Synced,
}
