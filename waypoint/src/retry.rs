//! Retry policy as data: which requests may be replayed, which answers
//! are worth another attempt, how long to wait before the next attempt,
//! and the budget that keeps retries from
//! multiplying the load on a backend that fails everything.
//!
//! Nothing here reads a clock or draws a random number: the data path
//! passes `now` and a random fraction in, so that the budget over
//! simulated minutes and the jitter bounds are unit-tested without sleeps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};

use crate::fast_map::FastMap;

/// A request body is kept for replay only up to this size (Envoy's
/// default buffer limit is of the same order); a larger one streams once.
pub const REPLAY_BUFFER_LIMIT: usize = 64 * 1024;

/// The backoff base when the rule sets none (Envoy's and Istio's 25 ms).
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// The window the budget looks back over.
const WINDOW_SECONDS: usize = 10;
/// Retries may add this share of the window's requests...
const RETRY_RATIO: f64 = 0.2;
/// ...plus this many per second of the window, so that a service with
/// little traffic can still retry its occasional failure.
const MIN_RETRIES_PER_SECOND: u32 = 10;

/// Whether a request may be sent again: an idempotent method (RFC 9110,
/// section 9.2.2), or a body that ended within [`REPLAY_BUFFER_LIMIT`] and
/// was kept. The caller still needs the body kept to send it again; a
/// body that did not end within the limit has been streamed and is gone,
/// whatever the method.
pub fn is_replayable(method: &Method, body_ended_within_limit: bool) -> bool {
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method);
    idempotent || body_ended_within_limit
}

/// `grpc-status: 14`, UNAVAILABLE: the one gRPC code that the gRPC spec
/// calls transient, "may be corrected by retrying with a backoff".
const GRPC_UNAVAILABLE: &[u8] = b"14";

/// Whether an upstream answer is worth another attempt under a rule that
/// retries `codes` (HTTP status codes, as Gateway API's `retry.codes`):
/// - its HTTP status is one of `codes`; or
/// - it is a gRPC error answered trailers-only (HTTP 200 whose head
///   carries `grpc-status`) with UNAVAILABLE, whatever `codes` says, as a
///   failed connection is retried whatever `codes` says. Istio's default
///   retry policy retries gRPC `unavailable` the same way.
///
/// Any other gRPC status is the service's answer and goes to the client
/// unchanged. A status in trailers, after a response body, is never
/// retried: the body has begun streaming to the client by then.
pub fn is_retriable_answer(codes: &[StatusCode], status: StatusCode, headers: &HeaderMap) -> bool {
    if codes.contains(&status) {
        return true;
    }
    status == StatusCode::OK
        && headers
            .get("grpc-status")
            .is_some_and(|code| code.as_bytes() == GRPC_UNAVAILABLE)
}

/// The wait before retry number `retry` (1 for the first): exponential
/// from `base`, capped at 10 × `base`, with full jitter (a uniform share
/// of that ceiling, `random` in `[0, 1)`), so that clients failing
/// together do not retry together.
pub fn backoff(base: Duration, retry: u32, random: f64) -> Duration {
    let cap = base.saturating_mul(10);
    let doublings = retry.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << doublings).min(cap);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// Requests and retries of one second.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Seconds since the budget's origin; tells a stale bucket from a
    /// current one.
    second: u64,
    requests: u32,
    retries: u32,
}

/// The retry budget of one service: a retry is allowed while the retries
/// of the last 10 s stay within 20% of its requests plus 10 per second.
/// A ring of one-second buckets, overwritten as time moves on.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    origin: Instant,
    buckets: [Bucket; WINDOW_SECONDS],
}

// === impl RetryBudget ===

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            origin: now,
            buckets: [Bucket::default(); WINDOW_SECONDS],
        }
    }

    /// Counts one request (its first attempt).
    pub fn record_request(&mut self, now: Instant) {
        let bucket = self.current(now);
        bucket.requests = bucket.requests.saturating_add(1);
    }

    /// Takes one retry from the budget if it has one; `false` means the
    /// request must make do with the answer it has.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        let second = self.second(now);
        let (requests, retries) = self
            .buckets
            .iter()
            .filter(|b| in_window(b.second, second))
            .fold((0u64, 0u64), |(q, r), b| {
                (q + u64::from(b.requests), r + u64::from(b.retries))
            });
        let floor = f64::from(MIN_RETRIES_PER_SECOND) * WINDOW_SECONDS as f64;
        let allowed = RETRY_RATIO * requests as f64 + floor;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        let bucket = self.current(now);
        bucket.retries = bucket.retries.saturating_add(1);
        true
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// The bucket of `now`, emptied first if it still holds an older
    /// second.
    fn current(&mut self, now: Instant) -> &mut Bucket {
        let second = self.second(now);
        // The index is below WINDOW_SECONDS, so it fits any usize.
        let bucket = &mut self.buckets[(second % WINDOW_SECONDS as u64) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
        bucket
    }
}

/// Whether a bucket of `bucket` seconds still counts at `now` seconds.
fn in_window(bucket: u64, now: u64) -> bool {
    bucket <= now && now - bucket < WINDOW_SECONDS as u64
}

/// One budget per backend service (its hostname), shared by every
/// request of the waypoint. A mutex around a map: each request holds it
/// for a few additions, and the map has one entry per service the
/// waypoint has sent to.
#[derive(Debug, Default)]
pub struct RetryBudgets {
    by_service: Mutex<FastMap<Arc<str>, RetryBudget>>,
}

// === impl RetryBudgets ===

impl RetryBudgets {
    pub fn record_request(&self, service: &Arc<str>, now: Instant) {
        self.with(service, now, |b| b.record_request(now));
    }

    pub fn try_retry(&self, service: &Arc<str>, now: Instant) -> bool {
        self.with(service, now, |b| b.try_retry(now))
    }

    fn with<T>(
        &self,
        service: &Arc<str>,
        now: Instant,
        f: impl FnOnce(&mut RetryBudget) -> T,
    ) -> T {
        let mut budgets = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let budget = match budgets.get_mut(service) {
            Some(budget) => budget,
            None => budgets
                .entry(service.clone())
                .or_insert_with(|| RetryBudget::new(now)),
        };
        f(budget)
    }
}

#[cfg(test)]
mod tests;
