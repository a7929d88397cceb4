//! The TLS stream under an HBONE connection's HTTP/2, written to the
//! socket only when HTTP/2 flushes, so that the frames of one pass of the
//! connection go out in one write.
//!
//! Why: h2 keeps a DATA frame of 256 bytes or more out of its write
//! buffer (to write it with the buffer in one vectored write, without a
//! copy), and holds only one such frame at a time, so it flushes before
//! it takes the next. tokio-rustls writes to the socket on every write.
//! Two small responses for two tunnels of one connection, which arrive
//! together, therefore left in two `writev`s, and each write is also a
//! wake-up and receive path of the peer. Here a write only encrypts into
//! rustls's buffer, and the stream says it has no vectored writes, which
//! raises h2's bar for keeping a frame out of its buffer to 1,024 bytes:
//! smaller frames are copied into one buffer and written once per pass.
//! A larger frame still gets a flush of its own, as before; the cost
//! there is one more TLS record, for the bytes of the frame that h2
//! copies into its buffer.

use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS stream whose plaintext can be handed to its session without I/O.
pub(crate) trait TlsSession {
    /// rustls's plaintext writer: it encrypts into the session's buffer
    /// (bounded by `set_buffer_limit`) and never touches the socket.
    fn plaintext(&mut self) -> rustls::Writer<'_>;
}

impl<IO> TlsSession for tokio_rustls::client::TlsStream<IO> {
    fn plaintext(&mut self) -> rustls::Writer<'_> {
        self.get_mut().1.writer()
    }
}

impl<IO> TlsSession for tokio_rustls::server::TlsStream<IO> {
    fn plaintext(&mut self) -> rustls::Writer<'_> {
        self.get_mut().1.writer()
    }
}

/// A TLS stream that writes to the socket on flush only.
#[derive(Debug)]
pub(crate) struct Coalesced<S> {
    inner: S,
}

impl<S> Coalesced<S> {
    pub(crate) fn new(inner: S) -> Self {
        Coalesced { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + TlsSession + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let taken = self.inner.plaintext().write_vectored(bufs)?;
        if taken > 0 {
            return Poll::Ready(Ok(taken));
        }
        // The session's buffer is at its limit: write it out (waiting for
        // the socket if it must), and then it takes more. If it still
        // takes nothing, it never will (rustls closes a session whose
        // record numbers run out): an error, not a loop.
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        match self.inner.plaintext().write_vectored(bufs)? {
            0 => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the TLS session takes no more data, even with its buffer written out",
            ))),
            taken => Poll::Ready(Ok(taken)),
        }
    }

    /// No: h2 then copies frames under 1,024 bytes into its own buffer
    /// instead of flushing before each one (see the module's comment).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
