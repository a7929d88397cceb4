//! The export task: takes spans off the queue in batches (a batch is sent
//! when it is full or when the oldest span in it has waited the flush
//! interval) and calls the collector's `Export` for each. A batch that
//! fails with a status OTLP calls retryable (the collector unreachable,
//! overloaded, timing out) is sent again with jittered exponential
//! backoff until it goes through, while new spans wait in the queue, up
//! to its bound; any other status drops the batch and counts it. The
//! collector's state is logged when it changes, not per batch.
//!
//! The decisions (which status is retryable, how long to back off, what to
//! log on a state change) are pure functions below the task.

use std::time::Duration;

use prost::Message as _;
use proto::otlp::collector::trace_service_client::TraceServiceClient;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::queue::ExporterStats;
use super::span::{Origin, SpanData, export_request};
use super::{CollectorState, ExporterConfig};

/// The running task's parts.
pub(super) struct ExportTask {
    pub(super) client: TraceServiceClient<Channel>,
    pub(super) config: ExporterConfig,
    pub(super) origin: Origin,
    pub(super) spans: mpsc::Receiver<SpanData>,
    pub(super) stats: ExporterStats,
    pub(super) state: watch::Sender<CollectorState>,
    /// Turns true when the exporter is asked to stop: what is queued is
    /// sent once more, then the task ends.
    pub(super) stop: watch::Receiver<bool>,
}

/// How one `Export` call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// Accepted; `rejected` of the spans were refused by the collector.
    Accepted { rejected: u64, message: String },
    /// Worth sending again (OTLP's retryable codes).
    Retry(String),
    /// Not worth sending again.
    Refused(String),
}

// === impl ExportTask ===

impl ExportTask {
    pub(super) async fn run(mut self) {
        loop {
            let Some(batch) = self.next_batch().await else {
                return;
            };
            self.export(batch).await;
            if *self.stop.borrow() {
                // One last sweep of what is queued, without retries.
                while let Ok(span) = self.spans.try_recv() {
                    let mut batch = vec![span];
                    while batch.len() < self.config.max_batch {
                        match self.spans.try_recv() {
                            Ok(span) => batch.push(span),
                            Err(_) => break,
                        }
                    }
                    self.export_once(batch).await;
                }
                return;
            }
        }
    }

    /// Waits for the first span, then collects until the batch is full or
    /// the flush interval after the first span passed. `None` once the
    /// queue is closed and empty, or on stop with nothing queued.
    async fn next_batch(&mut self) -> Option<Vec<SpanData>> {
        let first = tokio::select! {
            span = self.spans.recv() => span?,
            _ = self.stop.wait_for(|stop| *stop) => {
                return self.spans.try_recv().ok().map(|span| vec![span]);
            }
        };
        let mut batch = vec![first];
        let flush_at = Instant::now() + self.config.flush_interval;
        while batch.len() < self.config.max_batch {
            tokio::select! {
                span = self.spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = tokio::time::sleep_until(flush_at) => break,
                _ = self.stop.wait_for(|stop| *stop) => break,
            }
        }
        Some(batch)
    }

    /// Sends `batch` until it is accepted or refused, or the exporter stops.
    async fn export(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        let request = export_request(&self.origin, batch);
        let mut failures = 0u32;
        loop {
            let sent = self.call(request.clone()).await;
            match sent {
                Sent::Retry(reason) => {
                    self.set_state(CollectorState::Unreachable(reason));
                    if *self.stop.borrow() {
                        self.stats.failed.inc_by(count);
                        return;
                    }
                    let wait = retry_delay(
                        failures,
                        self.config.backoff_base,
                        self.config.backoff_max,
                        fastrand::f64(),
                    );
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.stop.wait_for(|stop| *stop) => {}
                    }
                }
                other => {
                    self.settle(other, count);
                    return;
                }
            }
        }
    }

    /// One call, no retry (the stop sweep).
    async fn export_once(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        let sent = self.call(export_request(&self.origin, batch)).await;
        if let Sent::Retry(reason) = &sent {
            self.set_state(CollectorState::Unreachable(reason.clone()));
            self.stats.failed.inc_by(count);
            return;
        }
        self.settle(sent, count);
    }

    fn settle(&mut self, sent: Sent, count: u64) {
        match sent {
            Sent::Accepted { rejected, message } => {
                self.set_state(CollectorState::Accepting);
                let rejected = rejected.min(count);
                self.stats.exported.inc_by(count - rejected);
                if rejected > 0 {
                    self.stats.failed.inc_by(rejected);
                    debug!(rejected, %message, "the OTLP collector refused some spans");
                }
            }
            Sent::Refused(reason) => {
                self.set_state(CollectorState::Refusing(reason));
                self.stats.failed.inc_by(count);
            }
            Sent::Retry(_) => {}
        }
    }

    async fn call(&mut self, request: proto::otlp::collector::ExportTraceServiceRequest) -> Sent {
        let bytes = request.encoded_len();
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.config.export_timeout);
        match self.client.export(request).await {
            Ok(response) => {
                let partial = response.into_inner().partial_success.unwrap_or_default();
                debug!(bytes, "spans exported");
                Sent::Accepted {
                    rejected: u64::try_from(partial.rejected_spans).unwrap_or(0),
                    message: partial.error_message,
                }
            }
            Err(status) if is_retryable(status.code()) => Sent::Retry(describe(&status)),
            Err(status) => Sent::Refused(describe(&status)),
        }
    }

    fn set_state(&self, next: CollectorState) {
        let endpoint = &self.config.endpoint;
        let changed = self.state.send_if_modified(|state| {
            if same_kind(state, &next) {
                return false;
            }
            *state = next.clone();
            true
        });
        if !changed {
            return;
        }
        match &next {
            CollectorState::Accepting => {
                info!(%endpoint, "the OTLP collector accepts spans");
            }
            CollectorState::Unreachable(reason) => warn!(
                %endpoint,
                %reason,
                "cannot export spans to the OTLP collector: is it running and reachable? \
                 Retrying with backoff; spans wait in the queue meanwhile, and beyond its \
                 bound are dropped"
            ),
            CollectorState::Refusing(reason) => warn!(
                %endpoint,
                %reason,
                "the OTLP collector refuses spans: is this its OTLP/gRPC port (4317)? \
                 Refused batches are dropped, counted in otlp_spans_failed_total"
            ),
            CollectorState::Unknown => {}
        }
    }
}

/// States differ by kind only: a new reason for the same outage is not a
/// change worth a log line.
fn same_kind(a: &CollectorState, b: &CollectorState) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The gRPC codes OTLP says a client should retry (the OTLP/gRPC spec's
/// "retryable" list; `RESOURCE_EXHAUSTED` is the collector asking to slow
/// down).
fn is_retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn describe(status: &tonic::Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

/// The wait before the retry that follows `failures` failed calls:
/// `base * 2^failures`, capped at `max`, with "equal jitter" (between
/// half and all of it, from `random` in [0, 1)), so that waypoints that
/// lost the same collector do not come back in step.
fn retry_delay(failures: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(failures.min(16)));
    let capped = exponential.min(max);
    capped.mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_retryable_codes_are_retried_and_others_are_not() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted,
            tonic::Code::Cancelled,
        ] {
            assert!(is_retryable(code), "{code:?}");
        }
        for code in [
            tonic::Code::Unimplemented,
            tonic::Code::InvalidArgument,
            tonic::Code::PermissionDenied,
            tonic::Code::Unauthenticated,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(retry_delay(0, base, max, 0.999_999).as_millis(), 99);
        assert_eq!(retry_delay(0, base, max, 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(3, base, max, 0.0), Duration::from_millis(400));
        assert_eq!(
            retry_delay(10, base, max, 0.0),
            Duration::from_millis(2_500)
        );
        assert_eq!(
            retry_delay(u32::MAX, base, max, 0.0),
            Duration::from_millis(2_500)
        );
    }

    #[test]
    fn a_new_reason_for_the_same_state_is_not_a_change() {
        let down = CollectorState::Unreachable("a".into());
        assert!(same_kind(&down, &CollectorState::Unreachable("b".into())));
        assert!(!same_kind(&down, &CollectorState::Accepting));
    }
}
