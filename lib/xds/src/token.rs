//! The bearer token a proxy presents to the control plane, as Istio's ztunnel
//! does: `authorization: Bearer <token>` on every discovery stream and every
//! certificate request.
//!
//! The token lives in a file (`AUTH_TOKEN`): in Kubernetes a projected
//! service-account token that the kubelet rotates, elsewhere the node token
//! istiod-lite writes to its state directory. So the file is read again each
//! time a stream or request starts, never cached: a few hundred bytes from a
//! tmpfs, once per stream or certificate, and read synchronously because a
//! handoff to a blocking thread would cost more than the read itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The environment variable naming the token file, as in Istio.
pub const AUTH_TOKEN_ENV: &str = "AUTH_TOKEN";

/// Where Istio's ztunnel reads its token unless `AUTH_TOKEN` says otherwise.
pub const DEFAULT_TOKEN_PATH: &str = "./var/run/secrets/tokens/istio-token";

/// The metadata key the token travels under.
const AUTHORIZATION: &str = "authorization";

/// Where the bearer token comes from.
///
/// `Debug` never shows a fixed token: configs are logged at startup.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// Send no token (a control plane that does not authenticate proxies).
    #[default]
    None,
    /// Read the file on every use; surrounding whitespace (the trailing
    /// newline many tools write) is trimmed.
    File(PathBuf),
    /// Always the same token, for tests.
    Fixed(Arc<str>),
}

/// Why no token could be attached.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "cannot read the token file {path}: {source}: set {AUTH_TOKEN_ENV} to the file holding \
         this proxy's token (in Kubernetes the projected service-account token, otherwise \
         tokens/<node>.token from istiod-lite's state directory)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token file {path} is empty: it must hold this proxy's token; check {AUTH_TOKEN_ENV} \
         and whatever writes the file (kubelet token projection, istiod-lite's node tokens)"
    )]
    EmptyFile { path: PathBuf },
    #[error("the fixed token is empty: give a token or use TokenSource::None")]
    EmptyFixed,
    #[error(
        "the token from {origin} cannot be sent in gRPC metadata: it must be visible ASCII \
         without spaces (is it really a token, not some other file?)"
    )]
    NotHeaderSafe { origin: String },
}

// === impl TokenSource ===

impl TokenSource {
    /// A token read from `path` on every use.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        TokenSource::File(path.into())
    }

    /// Always `token`.
    pub fn fixed(token: impl Into<Arc<str>>) -> Self {
        TokenSource::Fixed(token.into())
    }

    /// The current token, or `None` for [`TokenSource::None`].
    pub fn token(&self) -> Result<Option<String>, TokenError> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::File(path) => read_token(path).map(Some),
            TokenSource::Fixed(token) => match token.trim() {
                "" => Err(TokenError::EmptyFixed),
                token => Ok(Some(token.to_owned())),
            },
        }
    }

    /// Sets `authorization: Bearer <token>` in `metadata` from the current
    /// token; does nothing for [`TokenSource::None`].
    pub fn attach(&self, metadata: &mut MetadataMap) -> Result<(), TokenError> {
        let Some(token) = self.token()? else {
            return Ok(());
        };
        let value = bearer_value(&token).ok_or_else(|| TokenError::NotHeaderSafe {
            origin: self.origin(),
        })?;
        metadata.insert(AUTHORIZATION, value);
        Ok(())
    }

    /// Where the token comes from, for messages.
    fn origin(&self) -> String {
        match self {
            TokenSource::None => "nowhere".to_owned(),
            TokenSource::File(path) => format!("file {}", path.display()),
            TokenSource::Fixed(_) => "the fixed token".to_owned(),
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::None => f.write_str("None"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            TokenSource::Fixed(_) => f.write_str("Fixed(<redacted>)"),
        }
    }
}

/// Sets `authorization: Bearer <token>` in `metadata`, replacing any earlier
/// value. The value is marked sensitive, so HTTP/2 never indexes it (HPACK).
pub fn insert_bearer(metadata: &mut MetadataMap, token: &str) -> Result<(), TokenError> {
    let value = bearer_value(token.trim()).ok_or_else(|| TokenError::NotHeaderSafe {
        origin: "the caller".to_owned(),
    })?;
    metadata.insert(AUTHORIZATION, value);
    Ok(())
}

/// `Bearer <token>`, if the token is a single visible-ASCII word.
fn bearer_value(token: &str) -> Option<AsciiMetadataValue> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    match text.trim() {
        "" => Err(TokenError::EmptyFile {
            path: path.to_owned(),
        }),
        token => Ok(token.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(metadata: &MetadataMap) -> Option<&str> {
        metadata
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap())
    }

    #[test]
    fn file_token_is_read_on_every_use_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("istio-token");
        std::fs::write(&path, "first-token\n").unwrap();
        let source = TokenSource::file(&path);

        let mut metadata = MetadataMap::new();
        source.attach(&mut metadata).unwrap();
        assert_eq!(authorization(&metadata), Some("Bearer first-token"));
        assert!(metadata.get(AUTHORIZATION).unwrap().is_sensitive());

        // The kubelet rotated the token: the next stream sends the new one.
        std::fs::write(&path, "second-token\r\n").unwrap();
        source.attach(&mut metadata).unwrap();
        assert_eq!(authorization(&metadata), Some("Bearer second-token"));
        assert_eq!(metadata.get_all(AUTHORIZATION).iter().count(), 1);
    }

    #[test]
    fn missing_or_empty_token_file_names_the_path_and_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let error = TokenSource::file(&path)
            .attach(&mut MetadataMap::new())
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, TokenError::Read { .. }), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(AUTH_TOKEN_ENV), "{message}");

        std::fs::write(&path, "\n").unwrap();
        let error = TokenSource::file(&path).token().unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, TokenError::EmptyFile { .. }), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(AUTH_TOKEN_ENV), "{message}");
    }

    #[test]
    fn a_token_that_is_not_header_safe_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary");
        std::fs::write(&path, "two words\n").unwrap();
        let error = TokenSource::file(&path)
            .attach(&mut MetadataMap::new())
            .unwrap_err();
        assert!(matches!(error, TokenError::NotHeaderSafe { .. }), "{error}");
        assert!(error.to_string().contains("binary"), "{error}");

        let error = insert_bearer(&mut MetadataMap::new(), "tab\there").unwrap_err();
        assert!(matches!(error, TokenError::NotHeaderSafe { .. }), "{error}");
    }

    #[test]
    fn fixed_and_no_token() {
        let mut metadata = MetadataMap::new();
        TokenSource::None.attach(&mut metadata).unwrap();
        assert!(metadata.is_empty());
        assert_eq!(TokenSource::None.token().unwrap(), None);

        TokenSource::fixed("abc").attach(&mut metadata).unwrap();
        assert_eq!(authorization(&metadata), Some("Bearer abc"));
        assert!(matches!(
            TokenSource::fixed(" ").token(),
            Err(TokenError::EmptyFixed)
        ));

        insert_bearer(&mut metadata, "xyz\n").unwrap();
        assert_eq!(authorization(&metadata), Some("Bearer xyz"));
    }

    #[test]
    fn debug_never_shows_a_fixed_token() {
        let shown = format!("{:?}", TokenSource::fixed("secret-token"));
        assert!(!shown.contains("secret"), "{shown}");
        let shown = format!("{:?}", TokenSource::file("/tokens/istio-token"));
        assert!(shown.contains("/tokens/istio-token"), "{shown}");
    }
}
