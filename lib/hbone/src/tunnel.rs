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

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Returning the window now, not after the caller's copy,
                    // keeps the sender busy; the bytes are ours already.
                    let len = data.len();
                    this.recv
                        .flow_control()
                        .release_capacity(len)
                        .map_err(h2_to_io)?;
                    this.pending = data;
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => this.read_closed = true,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
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
        this.send.reserve_capacity(buf.len());
        let available = loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                break capacity;
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        };
        let n = available.min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes frames out as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        this.write_closed = true;
        // An empty DATA frame with END_STREAM needs no flow-control capacity.
        this.send.reserve_capacity(0);
        this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        Poll::Ready(Ok(()))
    }
}
