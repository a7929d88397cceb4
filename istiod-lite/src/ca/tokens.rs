//! Per-node bootstrap tokens for file mode, where there is no Kubernetes to
//! vouch for a ztunnel: istiod-lite writes one random token per node into
//! `<state_dir>/tokens/<node>.token` (owner-only), the operator hands it to
//! that node's ztunnel, and the ztunnel presents it as a bearer token. A
//! token is the node's credential, so it is reused across restarts and only
//! replaced when its file is deleted.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tonic::metadata::MetadataMap;
use tracing::info;

use super::auth::{self, AuthError, Authenticator, Caller};
use super::files;
use super::store::CaStoreError;

/// Subdirectory of the state directory that holds the tokens.
const TOKENS_DIR: &str = "tokens";
/// 256 random bits: far past guessing, and the same size as a SHA-256.
const TOKEN_BYTES: usize = 32;
/// Tokens found on disk must carry at least 128 bits, hex-encoded.
const MIN_TOKEN_HEX: usize = 32;

/// The bootstrap tokens of the nodes istiod-lite knows, by node name.
pub struct NodeTokens {
    /// `<state_dir>/tokens`.
    dir: PathBuf,
    /// Node name to its hex token. Read on every CSR, written when a node
    /// is added; never held across an await.
    tokens: RwLock<BTreeMap<Arc<str>, String>>,
}

// === impl NodeTokens ===

impl NodeTokens {
    /// Loads every token already under `<state_dir>/tokens/`, then loads or
    /// creates the token of each of `nodes`.
    ///
    /// Loading what is on disk matters after a restart: a node's ztunnel
    /// reconnects at once, before the config source has re-read the pods
    /// that would name its node, and must not be refused meanwhile. It also
    /// lets an operator provision a token for a node before any pod runs
    /// there.
    pub fn open<I, S>(state_dir: &Path, nodes: I) -> Result<NodeTokens, CaStoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let dir = state_dir.join(TOKENS_DIR);
        files::create_private_dir(&dir)?;
        let tokens = NodeTokens {
            dir,
            tokens: RwLock::default(),
        };
        for node in tokens.nodes_on_disk()? {
            tokens.ensure_node(&node)?;
        }
        for node in nodes {
            tokens.ensure_node(node.as_ref())?;
        }
        Ok(tokens)
    }

    /// Node names of the `<node>.token` files in the tokens directory; other
    /// files (editor backups, partial writes) are skipped with a warning.
    fn nodes_on_disk(&self) -> Result<Vec<String>, CaStoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CaStoreError::Io {
            action: "list the node tokens in",
            path: self.dir.clone(),
            source,
        })?;
        let mut nodes = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(node) = name.to_str().and_then(|n| n.strip_suffix(".token")) else {
                continue;
            };
            if check_node_name(node).is_ok() {
                nodes.push(node.to_owned());
            } else {
                tracing::warn!(file = ?name, "ignoring a token file whose name is not a node name");
            }
        }
        nodes.sort();
        Ok(nodes)
    }

    /// Makes sure `node` has a token, reusing the one on disk if there is
    /// one; returns the token file, to hand to the node's ztunnel.
    pub fn ensure_node(&self, node: &str) -> Result<PathBuf, CaStoreError> {
        check_node_name(node)?;
        let path = self.token_path(node);
        if self.read().contains_key(node) {
            return Ok(path);
        }
        let token = if path.exists() {
            read_token(&path)?
        } else {
            let token = generate_token()?;
            files::write_private_file(&path, &format!("{token}\n"))?;
            info!(node, path = %path.display(), "created a bootstrap token");
            token
        };
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.into(), token);
        Ok(path)
    }

    /// Where the token of `node` is kept.
    pub fn token_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.token"))
    }

    /// The nodes that have a token.
    pub fn nodes(&self) -> Vec<Arc<str>> {
        self.read().keys().cloned().collect()
    }

    /// The node whose token is `presented`, if any.
    ///
    /// Every known token is compared, each in constant time, so the time
    /// taken says nothing about how close a guess came.
    pub fn node_of(&self, presented: &str) -> Option<Arc<str>> {
        let mut found = None;
        for (node, token) in self.read().iter() {
            if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                found = Some(node.clone());
            }
        }
        found
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, String>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (insert is one call), so a poisoned lock is still consistent.
        self.tokens.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Authenticator for NodeTokens {
    fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<Caller, AuthError>> + Send {
        let caller = auth::bearer_token(metadata).and_then(|token| {
            self.node_of(token)
                .map(Caller::Node)
                .ok_or(AuthError::UnknownToken)
        });
        std::future::ready(caller)
    }
}

impl fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves: Debug output ends up in logs.
        f.debug_struct("NodeTokens")
            .field("dir", &self.dir)
            .field("nodes", &self.nodes())
            .finish()
    }
}

/// Node names become file names: only what Kubernetes allows in a node name
/// (a DNS subdomain), which also rules out `/` and `..`.
fn check_node_name(node: &str) -> Result<(), CaStoreError> {
    let invalid = |reason| CaStoreError::InvalidNodeName {
        node: node.to_owned(),
        reason,
    };
    if node.is_empty() || node.len() > 253 {
        return Err(invalid("it must be 1 to 253 characters long"));
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "it has a character other than a-z, 0-9, '-' or '.'",
        ));
    }
    if node.split('.').any(str::is_empty) {
        return Err(invalid(
            "it has an empty label (a leading, trailing or double '.')",
        ));
    }
    Ok(())
}

fn read_token(path: &Path) -> Result<String, CaStoreError> {
    let text = files::read_private_file(path)?;
    let token = text.trim();
    let bad = |reason: String| CaStoreError::BadToken {
        path: path.to_owned(),
        reason,
    };
    if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("it must be hexadecimal".to_owned()));
    }
    if token.len() < MIN_TOKEN_HEX {
        return Err(bad(format!(
            "it has {} hex digits, fewer than the {MIN_TOKEN_HEX} (128 bits) required",
            token.len()
        )));
    }
    Ok(token.to_owned())
}

/// A fresh token from the TLS stack's CSPRNG, lowercase hex.
fn generate_token() -> Result<String, CaStoreError> {
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    let mut bytes = [0u8; TOKEN_BYTES];
    random.fill(&mut bytes).map_err(|_| CaStoreError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality whose running time depends only on the lengths. Token lengths
/// are not secret (every generated token has the same one).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abcd", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abce"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn node_names_that_could_escape_the_token_directory_are_refused() {
        for node in ["", "../etc", "a/b", ".hidden", "a..b", "UPPER", "a b"] {
            assert!(check_node_name(node).is_err(), "{node:?} accepted");
        }
        for node in ["node-1", "worker.example.com", "n1"] {
            check_node_name(node).unwrap();
        }
    }

    #[test]
    fn tokens_on_disk_are_known_after_a_restart_without_naming_their_nodes() {
        let state = tempfile::tempdir().unwrap();
        let first = NodeTokens::open(state.path(), ["node-a"]).unwrap();
        let token = read_token(&first.token_path("node-a")).unwrap();
        std::fs::write(state.path().join("tokens/notes.txt"), "not a token").unwrap();
        // A restart that has not seen node-a's pods yet still knows it.
        let restarted = NodeTokens::open(state.path(), [] as [&str; 0]).unwrap();
        assert_eq!(restarted.node_of(&token).as_deref(), Some("node-a"));
        assert_eq!(restarted.nodes().len(), 1);
        assert_eq!(restarted.node_of("guess"), None);
    }

    #[test]
    fn generated_tokens_are_long_random_hex() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), TOKEN_BYTES * 2);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
