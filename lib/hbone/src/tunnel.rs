//! One HBONE tunnel: an HTTP/2 stream read and written as a byte stream.
//!
//! Reads hand out DATA frames as they arrive and return their bytes to the
//! flow-control window as soon as the caller has consumed them, so a slow
//! reader throttles only its own stream. Writes reserve send capacity first,
//! so a fast writer waits for the peer's window instead of buffering without
//! bound. `poll_shutdown` ends our half of the stream (END_STREAM), which the
//! peer reads as EOF while its own half keeps flowing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pool::StreamLease;

/// An open HBONE tunnel. Dropping it before both halves finished resets the
/// stream, which the peer sees as an aborted connection.
#[derive(Debug)]
pub struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The unread rest of the last DATA frame.
    pending: Bytes,
    /// Set once the peer ended its half; later reads return EOF at once.
    read_closed: bool,
    /// Set once we ended our half; a second shutdown is a no-op.
    write_closed: bool,
    /// Client side only: holds the pooled connection's stream slot.
    _lease: Option<StreamLease>,
}

// === impl Tunnel ===

impl Tunnel {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        lease: Option<StreamLease>,
    ) -> Self {
        Tunnel {
            send,
            recv,
            pending: Bytes::new(),
            read_closed: false,
            write_closed: false,
            _lease: lease,
        }
    }
}

fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = match error.reason() {
        Some(h2::Reason::CANCEL) | Some(h2::Reason::NO_ERROR) => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, error)
}

// The chunk-level API that `copy_tunnel` uses to move `Bytes` in and out
// of h2 without copying them; `AsyncRead`/`AsyncWrite` are built on it.
impl Tunnel {
    /// The next received bytes: the unread rest of the last DATA frame, or
    /// the next frame. `None` once the peer ended its half. The frame's
    /// flow-control window is returned as soon as it arrives, since the
    /// bytes are ours from then on and the sender can keep going.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        while self.pending.is_empty() {
            if self.read_closed {
                return Poll::Ready(Ok(None));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    self.recv
                        .flow_control()
                        .release_capacity(data.len())
                        .map_err(h2_to_io)?;
                    self.pending = data;
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => self.read_closed = true,
            }
        }
        Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))))
    }

    /// Waits until the peer's windows let us send, and returns how many
    /// bytes (at most `wanted`, at least 1) the next [`Self::send_chunk`]
    /// may carry. Capacity is reserved only for bytes the caller already
    /// holds, so an idle tunnel keeps none of the connection's window.
    pub(crate) fn poll_send_capacity(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<io::Result<usize>> {
        self.send.reserve_capacity(wanted);
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity.min(wanted)));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    /// Queues `data`, no larger than the last [`Self::poll_send_capacity`],
    /// as DATA; h2 writes it out without copying it.
    pub(crate) fn send_chunk(&mut self, data: Bytes) -> io::Result<()> {
        self.send.send_data(data, false).map_err(h2_to_io)
    }

    /// Ends our half (END_STREAM); a second call is a no-op.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.write_closed {
            return Ok(());
        }
        self.write_closed = true;
        // An empty DATA frame with END_STREAM needs no flow-control capacity.
        self.send.reserve_capacity(0);
        self.send.send_data(Bytes::new(), true).map_err(h2_to_io)
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(mut chunk) = ready!(this.poll_chunk(cx))? else {
            return Poll::Ready(Ok(()));
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        chunk.advance(n);
        // Whatever did not fit is read next time.
        this.pending = chunk;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let n = ready!(this.poll_send_capacity(cx, buf.len()))?;
        this.send_chunk(Bytes::copy_from_slice(&buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes frames out as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish())
    }
}
