//! The copy loop between a [`Tunnel`] and a byte stream, without the two
//! copies a generic loop makes.
//!
//! [`copy_bidirectional`](crate::copy_bidirectional) reads into its own
//! buffer and writes from it: towards a tunnel that costs a copy into a
//! fresh `Bytes` per chunk (h2 needs owned data), and from a tunnel a copy
//! out of the received DATA frame. Here the stream is read straight into a
//! `BytesMut` whose filled part is handed to h2 as it is, and received
//! frames are written straight to the stream. Splitting the filled part off
//! leaves the rest of the allocation for the next read, and once h2 has
//! written every chunk of it the allocation is reused, so a busy tunnel
//! neither copies nor allocates per chunk.
//!
//! Half-close and buffer growth behave as in `copy_bidirectional`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::copy::{FULL_READS_TO_GROW, INITIAL_BUFFER, MAX_BUFFER, Transferred};
use crate::tunnel::Tunnel;

/// A read smaller than this would waste a system call: allocate instead.
const MIN_READ: usize = 1024;
/// Reads go into the rest of the current allocation while at least this
/// share of a full read (`read_size / TAIL_SHARE`) is left in it.
const TAIL_SHARE: usize = 4;

/// Copies `tunnel` to `stream` and `stream` to `tunnel` until both
/// directions reached EOF, propagating each EOF as a write shutdown on the
/// other side. `a_to_b` counts tunnel to stream.
pub async fn copy_tunnel<S>(tunnel: &mut Tunnel, stream: &mut S) -> io::Result<Transferred>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut out_of_tunnel = OutOfTunnel::default();
    let mut into_tunnel = IntoTunnel::new();
    poll_fn(|cx| {
        let forward = out_of_tunnel.poll_copy(cx, tunnel, &mut *stream)?;
        let backward = into_tunnel.poll_copy(cx, &mut *stream, tunnel)?;
        match (forward, backward) {
            (Poll::Ready(a_to_b), Poll::Ready(b_to_a)) => {
                Poll::Ready(Ok(Transferred { a_to_b, b_to_a }))
            }
            _ => Poll::Pending,
        }
    })
    .await
}

/// Received DATA frames, written to the stream as they are.
#[derive(Default)]
struct OutOfTunnel {
    /// The unwritten rest of the last frame.
    chunk: Bytes,
    read_done: bool,
    need_flush: bool,
    finished: bool,
    total: u64,
}

impl OutOfTunnel {
    fn poll_copy<W>(
        &mut self,
        cx: &mut Context<'_>,
        tunnel: &mut Tunnel,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(self.total));
        }
        loop {
            if self.chunk.is_empty() && !self.read_done {
                match tunnel.poll_chunk(cx) {
                    Poll::Ready(Ok(Some(chunk))) => self.chunk = chunk,
                    Poll::Ready(Ok(None)) => self.read_done = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while !self.chunk.is_empty() {
                let written = ready!(Pin::new(&mut *writer).poll_write(cx, &self.chunk))?;
                if written == 0 {
                    return Poll::Ready(Err(write_zero()));
                }
                self.chunk.advance(written);
                self.total += written as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.finished = true;
                return Poll::Ready(Ok(self.total));
            }
        }
    }
}

/// The stream read into a `BytesMut`, its filled parts sent as DATA.
struct IntoTunnel {
    buffer: BytesMut,
    /// Bytes read but not yet sent (waiting for flow-control capacity).
    chunk: Bytes,
    /// How much one read asks for; grows for busy streams.
    read_size: usize,
    full_reads: u32,
    read_done: bool,
    finished: bool,
    total: u64,
}

impl IntoTunnel {
    fn new() -> Self {
        IntoTunnel {
            buffer: BytesMut::with_capacity(INITIAL_BUFFER),
            chunk: Bytes::new(),
            read_size: INITIAL_BUFFER,
            full_reads: 0,
            read_done: false,
            finished: false,
            total: 0,
        }
    }

    fn poll_copy<R>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        tunnel: &mut Tunnel,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(self.total));
        }
        loop {
            if self.chunk.is_empty() && !self.read_done {
                // Nothing to flush when pending: h2 writes queued frames.
                ready!(self.poll_fill(cx, reader))?;
            }
            while !self.chunk.is_empty() {
                let n = ready!(tunnel.poll_send_capacity(cx, self.chunk.len()))?;
                tunnel.send_chunk(self.chunk.split_to(n))?;
                self.total += n as u64;
            }
            if self.read_done {
                tunnel.finish()?;
                self.finished = true;
                return Poll::Ready(Ok(self.total));
            }
        }
    }

    fn poll_fill<R>(&mut self, cx: &mut Context<'_>, reader: &mut R) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let smallest = (self.read_size / TAIL_SHARE).max(MIN_READ);
        if self.buffer.capacity() < smallest {
            // Reclaims the allocation when h2 has released every chunk of
            // it; allocates a fresh one otherwise.
            self.buffer.reserve(self.read_size);
        }
        let want = self.read_size.min(self.buffer.capacity());
        let n = ready!(poll_read_buf(
            Pin::new(reader),
            cx,
            &mut (&mut self.buffer).limit(want)
        ))?;
        if n == 0 {
            self.read_done = true;
            return Poll::Ready(Ok(()));
        }
        // A read that filled what it asked for says more is waiting.
        if n == want {
            self.full_reads += 1;
            if self.full_reads >= FULL_READS_TO_GROW && self.read_size < MAX_BUFFER {
                self.read_size = (self.read_size * 4).min(MAX_BUFFER);
                self.full_reads = 0;
            }
        } else {
            self.full_reads = 0;
        }
        self.chunk = self.buffer.split().freeze();
        Poll::Ready(Ok(()))
    }
}

fn write_zero() -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        "peer stopped accepting data mid-copy",
    )
}
