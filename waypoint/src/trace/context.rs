//! W3C Trace Context: the `traceparent` header parsed and written, as
//! the Trace Context Level 1 recommendation defines it. Pure.
//!
//! `traceparent: 00-<trace-id>-<parent-id>-<flags>`, lowercase hex: a
//! 16-byte trace id and an 8-byte span id, neither all zeroes, and the
//! trace flags (bit 0: sampled). Version `ff` is invalid; a version above
//! 00 is read as 00 when its first four fields have 00's shape (what
//! follows them must start with `-`), so that a newer sender's trace is
//! continued rather than broken.

use std::fmt;

use http::{HeaderMap, HeaderValue};

use super::FLAG_SAMPLED;

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";

/// Length of a version-00 `traceparent`.
const LENGTH_V00: usize = 55;

/// A parsed `traceparent`: the caller's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub(crate) trace_id: [u8; 16],
    /// The caller's span, the parent of ours.
    pub(crate) parent_id: [u8; 8],
    pub(crate) flags: u8,
}

/// Why a `traceparent` is not used (the request then starts a new trace).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TraceParentError {
    #[error("more than one traceparent header")]
    Repeated,
    #[error("{0} characters, where version 00 has 55")]
    Length(usize),
    #[error("version ff is invalid")]
    VersionFf,
    #[error("a version above 00 must continue with `-` after 55 characters")]
    FutureVersionShape,
    #[error("the {0} is not lowercase hex of the right length")]
    NotHex(&'static str),
    #[error("the {0} is all zeroes")]
    AllZero(&'static str),
    #[error("fields are not separated by `-`")]
    Separators,
}

// === impl TraceParent ===

impl TraceParent {
    pub(crate) fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// The request's `traceparent`: `None` when it has none; an error when it
/// has one that cannot be used.
pub(crate) fn traceparent(headers: &HeaderMap) -> Result<Option<TraceParent>, TraceParentError> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TraceParentError::Repeated);
    }
    parse(value.as_bytes()).map(Some)
}

/// Parses one `traceparent` value.
pub(crate) fn parse(value: &[u8]) -> Result<TraceParent, TraceParentError> {
    let value = value.trim_ascii();
    if value.len() < LENGTH_V00 {
        return Err(TraceParentError::Length(value.len()));
    }
    let version = hex::<1>(&value[0..2]).ok_or(TraceParentError::NotHex("version"))?[0];
    match version {
        0x00 if value.len() != LENGTH_V00 => return Err(TraceParentError::Length(value.len())),
        0xff => return Err(TraceParentError::VersionFf),
        0x00 => {}
        _ if value.len() > LENGTH_V00 && value[LENGTH_V00] != b'-' => {
            return Err(TraceParentError::FutureVersionShape);
        }
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return Err(TraceParentError::Separators);
    }
    let trace_id = hex::<16>(&value[3..35]).ok_or(TraceParentError::NotHex("trace-id"))?;
    let parent_id = hex::<8>(&value[36..52]).ok_or(TraceParentError::NotHex("parent-id"))?;
    let flags = hex::<1>(&value[53..55]).ok_or(TraceParentError::NotHex("trace-flags"))?[0];
    if trace_id == [0; 16] {
        return Err(TraceParentError::AllZero("trace-id"));
    }
    if parent_id == [0; 8] {
        return Err(TraceParentError::AllZero("parent-id"));
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// `00-<trace-id>-<span-id>-<flags>` naming `span_id` as the parent of
/// the next hop. Only the sampled bit is written: other bits of a newer
/// version mean nothing to version 00.
pub(crate) fn header(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let text = format!(
        "00-{}-{}-{:02x}",
        Hex(trace_id),
        Hex(span_id),
        if sampled { FLAG_SAMPLED } else { 0 }
    );
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Bytes as lowercase hex.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits (the recommendation
/// allows no uppercase).
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_ids_and_flags() {
        let parent = parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            Hex(&parent.trace_id).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(Hex(&parent.parent_id).to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled());
        let unsampled = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
        // Other flag bits do not make it sampled.
        let other = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
        assert!(!other.sampled());
        assert!(
            parse(format!(" {VALID} ").as_bytes()).is_ok(),
            "surrounding spaces"
        );
    }

    #[test]
    fn a_future_version_is_read_as_00_when_its_shape_allows() {
        let newer = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(newer.as_bytes()).unwrap().sampled());
        let longer = format!("{newer}-what-comes-next");
        assert!(parse(longer.as_bytes()).is_ok());
        let glued = format!("{newer}x");
        assert_eq!(
            parse(glued.as_bytes()),
            Err(TraceParentError::FutureVersionShape)
        );
    }

    #[test]
    fn invalid_versions_lengths_and_ids_are_refused() {
        let cases: &[(&str, TraceParentError)] = &[
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::VersionFf,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::NotHex("version"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                TraceParentError::Length(56),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                TraceParentError::Length(54),
            ),
            ("", TraceParentError::Length(0)),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::AllZero("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::AllZero("parent-id"),
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::NotHex("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                TraceParentError::NotHex("parent-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                TraceParentError::NotHex("trace-flags"),
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                TraceParentError::Separators,
            ),
        ];
        for (value, error) in cases {
            assert_eq!(parse(value.as_bytes()).as_ref(), Err(error), "{value}");
        }
    }

    #[test]
    fn the_header_is_read_once_and_a_repeated_one_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(traceparent(&headers), Ok(None));
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(traceparent(&headers).unwrap().is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(traceparent(&headers), Err(TraceParentError::Repeated));
    }

    #[test]
    fn a_written_header_parses_back() {
        let value = header(&[0xab; 16], &[0x01; 8], true);
        assert_eq!(
            value.to_str().unwrap(),
            "00-abababababababababababababababab-0101010101010101-01"
        );
        let parsed = parse(value.as_bytes()).unwrap();
        assert_eq!((parsed.trace_id, parsed.parent_id), ([0xab; 16], [0x01; 8]));
        let unsampled = header(&[0xab; 16], &[0x01; 8], false);
        assert!(unsampled.to_str().unwrap().ends_with("-00"));
    }
}
