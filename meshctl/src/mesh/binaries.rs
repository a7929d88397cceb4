//! Finding the programs a mesh runs: istiod-lite, ztunnel and the sample
//! apps are built beside meshctl (`target/debug/`), so that directory is
//! searched first, then PATH.

use std::path::{Path, PathBuf};

use super::error::MeshError;

/// The directory meshctl runs from, if it can be told.
pub fn own_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// `program` as a path: kept when it has a `/`, else found beside meshctl
/// or on PATH.
pub fn find(program: &str) -> Result<PathBuf, MeshError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(MeshError::MissingBinary(program.to_owned()))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    own_dir()
        .into_iter()
        .chain(std::env::split_paths(&path_var))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| MeshError::MissingBinary(program.to_owned()))
}

/// PATH for the pods' commands: meshctl's directory first, so that a pod
/// running a shell script finds the sample apps too.
pub fn pod_path() -> String {
    let inherited =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
    match own_dir() {
        Some(dir) => format!("{}:{inherited}", dir.display()),
        None => inherited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_names_what_is_missing() {
        assert!(find("sh").unwrap().is_absolute());
        assert!(find("/bin/sh").is_ok());
        let missing = find("no-such-program-here").unwrap_err().to_string();
        assert!(missing.contains("no-such-program-here"), "{missing}");
        assert!(find("/no/such/file").is_err());
        assert!(pod_path().contains(':'));
    }
}
