//! What a tunnel carries, from its first bytes: HTTP/2 (the client
//! preface), HTTP/1 (a request line starting with a method token), or
//! anything else, which the waypoint passes through as TCP. Deciding is a
//! pure function of the bytes read so far; [`Prefixed`] then replays those
//! bytes to whoever serves the tunnel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token we wait for before calling the bytes "not HTTP".
const MAX_METHOD_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
    Tcp,
}

/// The protocol `prefix` starts, or `None` when more bytes are needed.
/// HTTP/1 is a method token (uppercase letters, as every registered
/// method is) followed by a space; HTTP/2 is the whole preface.
pub(crate) fn classify(prefix: &[u8]) -> Option<Protocol> {
    if prefix.is_empty() {
        return None;
    }
    let compared = prefix.len().min(H2_PREFACE.len());
    if prefix[..compared] == H2_PREFACE[..compared] {
        // `PRI` is also a valid method token; only the whole preface says
        // HTTP/2, and a partial one needs more bytes either way.
        return (compared == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    for (i, byte) in prefix.iter().enumerate() {
        match byte {
            b'A'..=b'Z' if i < MAX_METHOD_LEN => {}
            b' ' if i > 0 => return Some(Protocol::Http1),
            _ => return Some(Protocol::Tcp),
        }
    }
    if prefix.len() >= MAX_METHOD_LEN {
        return Some(Protocol::Tcp);
    }
    None
}

/// A stream whose first bytes were already read: they are returned first.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn http_is_told_from_other_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE "), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Tcp));
        assert_eq!(classify(b" GET"), Some(Protocol::Tcp));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(&[b'A'; MAX_METHOD_LEN]), Some(Protocol::Tcp));
    }

    #[test]
    fn partial_input_waits_for_more() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
    }

    #[tokio::test]
    async fn the_prefix_is_read_first() {
        let mut stream = Prefixed::new(Bytes::from_static(b"ab"), &b"cd"[..]);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcd");
    }
}
