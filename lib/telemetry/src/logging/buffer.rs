//! Log lines written to stderr in batches.
//!
//! Why: the proxies write an access-log line per request or connection,
//! and an unbuffered stderr makes each one a `write` system call of its
//! own (2.4% of the waypoint's CPU per request, in perf). Lines at INFO
//! and below collect in a buffer that is written out when it holds
//! [`FLUSH_AT`] bytes and at least every [`FLUSH_EVERY`] by a background
//! thread, as Envoy flushes its access logs on an interval. A WARN or
//! ERROR line is written at once, with everything before it, so problems
//! show without delay and lines never change order.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Bytes buffered before a write is due anyway.
pub(super) const FLUSH_AT: usize = 32 * 1024;

/// The longest a line waits in the buffer.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A buffered sink shared by every thread that logs. Cheap to clone.
#[derive(Clone)]
pub(super) struct BufferedWriter {
    shared: Arc<Mutex<Sink>>,
}

struct Sink {
    pending: Vec<u8>,
    out: Box<dyn Write + Send>,
}

/// One event's writer: its line joins the buffer, and when it is urgent or
/// the buffer is full, the buffer goes out with it, under one lock.
pub(super) struct EventWriter<'a> {
    shared: &'a Mutex<Sink>,
    urgent: bool,
}

// === impl BufferedWriter ===

impl BufferedWriter {
    /// A buffer in front of `out`, flushed every `interval` by a thread of
    /// its own that ends when the last clone is dropped.
    pub(super) fn new(out: Box<dyn Write + Send>, interval: Duration) -> io::Result<Self> {
        let shared = Arc::new(Mutex::new(Sink {
            pending: Vec::with_capacity(FLUSH_AT),
            out,
        }));
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("log-flush".to_owned())
            .spawn(move || flush_periodically(&weak, interval))?;
        Ok(Self { shared })
    }

    /// Writes out what is buffered.
    pub(super) fn flush(&self) {
        lock(&self.shared).write_out();
    }

    /// As [`BufferedWriter::flush`], unless another thread holds the buffer
    /// (a panic in the middle of a write must not deadlock its own hook).
    pub(super) fn try_flush(&self) {
        if let Ok(mut sink) = self.shared.try_lock() {
            sink.write_out();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            // WARN and ERROR (tracing orders the more verbose levels higher).
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

fn flush_periodically(shared: &Weak<Mutex<Sink>>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        lock(&shared).write_out();
    }
}

fn lock(shared: &Mutex<Sink>) -> MutexGuard<'_, Sink> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Sink ===

impl Sink {
    fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // A log that cannot be written has nowhere to report it: the lines
        // are dropped rather than kept growing without bound.
        let _ = self.out.write_all(&self.pending);
        let _ = self.out.flush();
        self.pending.clear();
    }
}

// === impl EventWriter ===

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = lock(self.shared);
        sink.pending.extend_from_slice(buf);
        if self.urgent || sink.pending.len() >= FLUSH_AT {
            sink.write_out();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
