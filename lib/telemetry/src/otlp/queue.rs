//! The hand-over from the data path to the exporter: a bounded queue that
//! never makes its producer wait. A full queue (the collector is slow or
//! away and the backlog reached its bound) drops the span, counts it, and
//! logs once when dropping starts and once when it stops, so that an
//! outage costs spans but neither memory nor latency nor a flood of logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::span::SpanData;

/// The exporter's counters, shared by the queue and the export task.
#[derive(Debug, Clone, Default)]
pub struct ExporterStats {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the queue was full.
    pub dropped: Counter,
    /// Spans the collector refused, or that were in a batch given up on.
    pub failed: Counter,
}

// === impl ExporterStats ===

impl ExporterStats {
    /// Registers the counters as `otlp_spans_{exported,dropped,failed}_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "otlp_spans_exported",
            "Spans accepted by the OTLP collector",
            self.exported.clone(),
        );
        registry.register(
            "otlp_spans_dropped",
            "Spans dropped because the export queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "otlp_spans_failed",
            "Spans the OTLP collector refused or that could not be sent",
            self.failed.clone(),
        );
    }
}

/// Where finished spans go; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct SpanQueue {
    sender: mpsc::Sender<SpanData>,
    stats: ExporterStats,
    /// Whether the last span was dropped: logging happens on the edges.
    dropping: Arc<AtomicBool>,
    capacity: usize,
}

// === impl SpanQueue ===

impl SpanQueue {
    /// A queue of `capacity` spans (at least 1) and its receiving end.
    pub fn bounded(capacity: usize, stats: ExporterStats) -> (SpanQueue, mpsc::Receiver<SpanData>) {
        let capacity = capacity.max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let queue = SpanQueue {
            sender,
            stats,
            dropping: Arc::default(),
            capacity,
        };
        (queue, receiver)
    }

    /// Queues `span` for export, or drops it when the queue is full or the
    /// exporter has stopped. Returns whether it was queued.
    pub fn push(&self, span: SpanData) -> bool {
        match self.sender.try_send(span) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    info!(
                        dropped_so_far = self.stats.dropped.get(),
                        "the span export queue has room again; spans are queued again"
                    );
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.dropped.inc();
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    warn!(
                        capacity = self.capacity,
                        "the span export queue is full (is the OTLP collector slow or down?); \
                         dropping spans until it drains, counted in otlp_spans_dropped_total"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.dropped.inc();
                false
            }
        }
    }

    pub fn stats(&self) -> &ExporterStats {
        &self.stats
    }
}
