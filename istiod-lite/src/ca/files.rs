//! Secrets on disk: directories and files only their owner can read, written
//! so that a crash never leaves a half-written secret under its final name.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::store::CaStoreError;

/// Owner read/write only: for keys and tokens.
const PRIVATE_FILE: u32 = 0o600;
/// Owner only: for the directories that hold them.
const PRIVATE_DIR: u32 = 0o700;

/// Creates `path` (and its parents) owner-only, or leaves an existing
/// directory as it is.
pub(super) fn create_private_dir(path: &Path) -> Result<(), CaStoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .map_err(|source| CaStoreError::io("create directory", path, source))
}

/// Writes a new owner-only file at `path`, through a temporary name and a
/// rename, so readers see either nothing or the whole secret.
pub(super) fn write_private_file(path: &Path, contents: &str) -> Result<(), CaStoreError> {
    let partial = path.with_extension("partial");
    // A leftover from a crash mid-write holds nothing anyone relies on.
    match fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CaStoreError::io("remove", &partial, source)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&partial)
        .map_err(|source| CaStoreError::io("create", &partial, source))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| CaStoreError::io("write", &partial, source))?;
    // The umask may have cleared bits but never adds any; set the mode
    // explicitly anyway so it does not depend on the process environment.
    fs::set_permissions(&partial, Permissions::from_mode(PRIVATE_FILE))
        .map_err(|source| CaStoreError::io("set permissions on", &partial, source))?;
    fs::rename(&partial, path).map_err(|source| CaStoreError::io("rename into", path, source))
}

/// Reads a secret we wrote earlier, refusing it when group or others may
/// read it: someone loosened it, and the secret may have leaked.
pub(super) fn read_private_file(path: &Path) -> Result<String, CaStoreError> {
    let metadata =
        fs::metadata(path).map_err(|source| CaStoreError::io("inspect", path, source))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaStoreError::NotPrivate {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(|source| CaStoreError::io("read", path, source))
}
