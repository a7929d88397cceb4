//! Counters of the delta ADS server, in plain atomics: istiod-lite exports
//! them in its own metrics registry, so this crate needs no metrics library.
//! Updated with relaxed ordering: each counter is independent, and a scrape
//! that sees one a moment before another is harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters for the control plane's metrics. Read with [`ServerStats::snapshot`].
#[derive(Debug, Default)]
pub struct ServerStats {
    // Meanings as in `StatsSnapshot`, whose fields carry the same names.
    pub(crate) connected: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) pushes: AtomicU64,
    pub(crate) resources_pushed: AtomicU64,
    pub(crate) removals_pushed: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) nacks: AtomicU64,
    pub(crate) stale_nonces: AtomicU64,
    push_latency: PushLatency,
}

/// Upper bounds, in seconds, of the push latency histogram's buckets (a
/// last, unbounded bucket follows). Push latency is the time from a store
/// change to its response being queued on one stream.
pub const PUSH_LATENCY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// A histogram of push latencies in plain atomics, for istiod-lite to export.
#[derive(Debug, Default)]
struct PushLatency {
    /// Per bucket of [`PUSH_LATENCY_BUCKETS`], plus the unbounded one; not
    /// cumulative.
    buckets: [AtomicU64; PUSH_LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A point-in-time copy of [`ServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSnapshot {
    /// Streams open now.
    pub connected_clients: u64,
    /// Streams opened since start.
    pub streams_total: u64,
    /// Responses sent.
    pub pushes: u64,
    /// Resources sent, over all responses.
    pub resources_pushed: u64,
    /// Names sent in `removed_resources`, over all responses.
    pub removals_pushed: u64,
    /// Requests that ACKed the latest response of their type.
    pub acks: u64,
    /// Requests carrying `error_detail`.
    pub nacks: u64,
    /// Requests whose nonce was not the latest of their type.
    pub stale_nonces: u64,
    /// Pushes of store changes per latency bucket ([`PUSH_LATENCY_BUCKETS`],
    /// then the unbounded bucket); not cumulative.
    pub push_latency_buckets: [u64; PUSH_LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies counted in `push_latency_buckets`, in seconds.
    pub push_latency_sum_seconds: f64,
}

// === impl ServerStats ===

impl ServerStats {
    /// Current values of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connected_clients: get(&self.connected),
            streams_total: get(&self.streams),
            pushes: get(&self.pushes),
            resources_pushed: get(&self.resources_pushed),
            removals_pushed: get(&self.removals_pushed),
            acks: get(&self.acks),
            nacks: get(&self.nacks),
            stale_nonces: get(&self.stale_nonces),
            push_latency_buckets: std::array::from_fn(|i| get(&self.push_latency.buckets[i])),
            push_latency_sum_seconds: get(&self.push_latency.sum_micros) as f64 / 1e6,
        }
    }

    pub(crate) fn observe_push_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = PUSH_LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(PUSH_LATENCY_BUCKETS.len());
        Self::add(&self.push_latency.buckets[bucket], 1);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Self::add(&self.push_latency.sum_micros, micros);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Keeps `connected` right however a stream's task ends.
pub(crate) struct ConnectedGuard(pub(crate) Arc<ServerStats>);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
