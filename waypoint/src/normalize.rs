//! Request path normalization, before policy and routing see the path.
//!
//! Without it a DENY on `/admin` is bypassed by `/./admin`, `/x/../admin`
//! or `/%61dmin`, which the app reads as `/admin`. So the waypoint does
//! what Istio's default (`pathNormalization: BASE`, Envoy's
//! `normalize_path`) does, RFC 3986 section 6.2.2: percent-encoded
//! unreserved characters are decoded, other percent-encodings upper-cased,
//! dot segments removed. Like BASE it keeps repeated slashes and escaped
//! slashes (`%2F`, `%5C`) as they are. The normalized path is also what
//! goes upstream, so policy, routing and the app agree on it.

use std::borrow::Cow;

/// A path with a `%` not followed by two hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request path {path:?} has a malformed percent-encoding (a `%` must be followed by two hex digits)"
)]
pub struct InvalidPath {
    pub path: String,
}

/// The normalized form of `path` (which starts with `/`, without query).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    let decoded = normalize_percent_encoding(path)?;
    let needs_dot_removal = decoded
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    if !needs_dot_removal {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` of unreserved characters and upper-cases the rest.
fn normalize_percent_encoding(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let invalid = || InvalidPath {
        path: path.to_owned(),
    };
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Multi-byte characters are copied byte-exact below; a `%` is
            // ASCII and never inside one.
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let high = bytes
            .get(i + 1)
            .copied()
            .and_then(hex_value)
            .ok_or_else(invalid)?;
        let low = bytes
            .get(i + 2)
            .copied()
            .and_then(hex_value)
            .ok_or_else(invalid)?;
        let byte = high * 16 + low;
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
            out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// RFC 3986 section 5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            segment => {
                out.push(segment);
                continue;
            }
        }
        // A path ending in `.` or `..` names a directory: keep the slash.
        if i == last {
            out.push("");
        }
    }
    let mut normalized = String::with_capacity(path.len());
    normalized.push('/');
    normalized.push_str(&out.join("/"));
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(path: &str) -> String {
        normalize_path(path).unwrap().into_owned()
    }

    #[test]
    fn the_ways_to_spell_admin_all_become_admin() {
        for path in [
            "/admin",
            "/./admin",
            "/x/../admin",
            "/x/y/../../admin",
            "/../admin",
            "/%61dmin",
            "/%2e/admin",
            "/x/%2E%2E/admin",
        ] {
            assert_eq!(normalized(path), "/admin", "{path}");
        }
    }

    #[test]
    fn what_is_not_a_dot_segment_or_unreserved_stays() {
        assert_eq!(normalized("/a/b/"), "/a/b/");
        assert_eq!(normalized("/a/..b/.c"), "/a/..b/.c");
        assert_eq!(normalized("/a%2fb"), "/a%2Fb");
        assert_eq!(normalized("/a%20b"), "/a%20b");
        assert_eq!(normalized("//admin"), "//admin");
        assert_eq!(normalized("/caf\u{e9}"), "/caf\u{e9}");
        assert!(matches!(normalize_path("/plain"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn trailing_dot_segments_keep_the_directory_slash() {
        assert_eq!(normalized("/a/b/.."), "/a/");
        assert_eq!(normalized("/a/."), "/a/");
        assert_eq!(normalized("/.."), "/");
    }

    #[test]
    fn a_malformed_percent_encoding_is_refused() {
        for path in ["/%", "/%4", "/%zz", "/a%g1"] {
            assert!(normalize_path(path).is_err(), "{path}");
        }
    }
}
