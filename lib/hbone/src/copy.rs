//! Bidirectional copy between two byte streams, the inner loop of every proxy.
//!
//! Two properties matter beyond moving bytes:
//! - Half-close: when one side ends its writes, the other side's writer is
//!   shut down (FIN on TCP, END_STREAM on HBONE) while the opposite direction
//!   keeps flowing until it ends too. Request/response protocols that close
//!   their sending side first depend on this.
//! - Memory: a mostly idle connection keeps a small buffer; a buffer grows
//!   only after reads keep filling it, i.e. for connections that are busy.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Every connection starts with this much buffer per direction.
pub(crate) const INITIAL_BUFFER: usize = 4 * 1024;
/// Buffers stop growing here: past it, larger reads buy almost nothing.
pub(crate) const MAX_BUFFER: usize = 256 * 1024;
/// A direction must fill its buffer this many reads in a row to grow it.
pub(crate) const FULL_READS_TO_GROW: u32 = 4;

/// Bytes moved in each direction by [`copy_bidirectional`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transferred {
    /// From the first stream to the second.
    pub a_to_b: u64,
    /// From the second stream to the first.
    pub b_to_a: u64,
}

impl Transferred {
    /// The same counts seen from the other stream.
    pub fn reversed(self) -> Self {
        Transferred {
            a_to_b: self.b_to_a,
            b_to_a: self.a_to_b,
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions reached EOF,
/// propagating each EOF as a write shutdown on the other side.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::new();
    let mut b_to_a = Direction::new();
    poll_fn(|cx| {
        let forward = a_to_b.poll_copy(cx, &mut *a, &mut *b)?;
        let backward = b_to_a.poll_copy(cx, &mut *b, &mut *a)?;
        match (forward, backward) {
            (Poll::Ready(a_to_b), Poll::Ready(b_to_a)) => {
                Poll::Ready(Ok(Transferred { a_to_b, b_to_a }))
            }
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction's state: a buffer with a filled window `[start, end)`.
struct Direction {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    full_reads: u32,
    read_done: bool,
    need_flush: bool,
    finished: bool,
    total: u64,
}

// === impl Direction ===

impl Direction {
    fn new() -> Self {
        Direction {
            buffer: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            full_reads: 0,
            read_done: false,
            need_flush: false,
            finished: false,
            total: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(self.total));
        }
        loop {
            if self.start == self.end && !self.read_done {
                match self.poll_fill(cx, reader) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        // Nothing more to read for now: push out what the
                        // writer buffered before we sleep.
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let written = ready!(
                    Pin::new(&mut *writer).poll_write(cx, &self.buffer[self.start..self.end])
                )?;
                if written == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer stopped accepting data mid-copy",
                    )));
                }
                self.start += written;
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

    fn poll_fill<R>(&mut self, cx: &mut Context<'_>, reader: &mut R) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        self.start = 0;
        self.end = 0;
        let mut read_buf = ReadBuf::new(&mut self.buffer);
        ready!(Pin::new(reader).poll_read(cx, &mut read_buf))?;
        let n = read_buf.filled().len();
        if n == 0 {
            self.read_done = true;
        } else if n == self.buffer.len() {
            self.full_reads += 1;
            if self.full_reads >= FULL_READS_TO_GROW && self.buffer.len() < MAX_BUFFER {
                let grown = (self.buffer.len() * 4).min(MAX_BUFFER);
                // Only the new tail needs zeroing; the filled bytes stay put.
                self.buffer.resize(grown, 0);
                self.full_reads = 0;
            }
        } else {
            self.full_reads = 0;
        }
        self.end = n;
        Poll::Ready(Ok(()))
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn half_close_propagates_while_the_other_direction_flows() {
        // client <-> (a | proxy | b) <-> server
        let (mut client, mut a) = duplex(1024);
        let (mut b, mut server) = duplex(1024);
        let proxy = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"request", "server sees the client's EOF");

        // The server may still answer after the client half-closed.
        server.write_all(b"response after EOF").await.unwrap();
        server.shutdown().await.unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"response after EOF");

        let moved = proxy.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                a_to_b: 7,
                b_to_a: 18
            }
        );
    }

    /// A reader that returns `per_read` bytes (or as many as fit) per call,
    /// `reads` times, then EOF.
    struct Source {
        reads: usize,
        per_read: usize,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.reads > 0 {
                self.reads -= 1;
                let n = self.per_read.min(buf.remaining());
                buf.put_slice(&vec![7u8; n]);
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn capacity_after(mut source: Source) -> (usize, u64) {
        let mut direction = Direction::new();
        let mut sink = tokio::io::sink();
        let total = poll_fn(|cx| direction.poll_copy(cx, &mut source, &mut sink))
            .await
            .unwrap();
        (direction.capacity(), total)
    }

    #[tokio::test]
    async fn buffers_grow_only_for_busy_directions() {
        // Every read fills the buffer: a bulk transfer grows it to the cap.
        let (capacity, total) = capacity_after(Source {
            reads: 64,
            per_read: usize::MAX,
        })
        .await;
        assert_eq!(capacity, MAX_BUFFER);
        assert!(total > 64 * INITIAL_BUFFER as u64);

        // Small messages never fill it: the buffer stays at its initial size.
        let (capacity, total) = capacity_after(Source {
            reads: 1000,
            per_read: 100,
        })
        .await;
        assert_eq!(capacity, INITIAL_BUFFER);
        assert_eq!(total, 100_000);

        // A few full reads in a row are not enough to count as busy.
        let reads = FULL_READS_TO_GROW as usize - 1;
        let (capacity, _) = capacity_after(Source {
            reads,
            per_read: usize::MAX,
        })
        .await;
        assert_eq!(capacity, INITIAL_BUFFER);
    }
}
