//! The attempts of one request: one, as the upstream answers it, or, when
//! the matched rule retries and the body was kept, as many as the rule
//! and the service's retry budget allow.
//!
//! A retry goes to an endpoint not tried yet for the request when there
//! is one; each attempt waits at most `backendRequest` for its response
//! head, and the whole exchange, backoff included, at most `request`.
//! Retriable are the rule's `codes`, a trailers-only gRPC UNAVAILABLE
//! ([`is_retriable_answer`]) and a failed or broken connection; a
//! timed-out attempt is not retried (its deadline was the rule's choice).

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::debug;
use workload::{Service, State};

use super::body::{KeptBody, UpstreamBody};
use super::load::{InFlight, Refusal};
use super::upstream::{Endpoint, UpstreamError};
use super::{CertRequest, Inner};
use crate::balance::BackendPolicy;
use crate::outlier::AttemptResult;
use crate::retry::{DEFAULT_BACKOFF, backoff, is_retriable_answer};
use crate::route::{Retry, Timeouts};
use crate::trace::{AttemptEnd, RequestTrace};

/// How the last attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Answered(Response<Incoming>),
    Failed(UpstreamError),
    /// No response head within this deadline.
    TimedOut(Duration),
    /// No healthy endpoint to send to (only before the first attempt).
    NoEndpoint,
    /// One of the service's `DestinationRule` limits is reached.
    Overflow(Limit),
}

/// Which `DestinationRule` limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `http2MaxRequests`: requests in flight.
    Requests,
    /// `http1MaxPendingRequests`: requests waiting for a connection.
    PendingRequests,
}

/// The end of the exchange: the last attempt and its endpoint.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) outcome: Outcome,
    pub(super) endpoint: Option<Endpoint>,
    /// Attempts sent upstream, the first included.
    pub(super) attempts: u32,
    /// The outcome was retriable but no retry was left: the rule's
    /// attempts ran out, or the budget (or the request's deadline)
    /// refused another.
    pub(super) retries_exhausted: bool,
}

/// The request head, kept to build each attempt's request.
pub(super) struct Replay<'a> {
    pub(super) head: &'a http::request::Parts,
    pub(super) body: KeptBody,
    pub(super) retry: &'a Retry,
    pub(super) timeouts: Timeouts,
}

// === impl Inner ===

impl Inner {
    /// One attempt to an endpoint of `service`, as a request without
    /// retries gets.
    pub(super) async fn attempt_once(
        &self,
        state: &State,
        service: &Arc<Service>,
        port: u16,
        request: Request<UpstreamBody>,
        deadline: Option<Duration>,
    ) -> Exchange {
        let policy = self.backend_policy(service);
        let chosen = self.upstreams.choose_for_attempt(
            state.endpoints(service),
            service,
            port,
            &[],
            &policy,
        );
        let (endpoint, in_flight) = match chosen {
            Ok(chosen) => chosen,
            Err(refusal) => return Exchange::refused(refusal, 0),
        };
        let outcome = self
            .send(&endpoint, request, deadline, (service, port, 1))
            .await;
        finish(&in_flight, &outcome);
        Exchange {
            outcome,
            endpoint: Some(endpoint),
            attempts: 1,
            retries_exhausted: false,
        }
    }

    /// Attempts until one is not retriable, or the rule's retries, the
    /// budget or the request's deadline run out.
    pub(super) async fn attempt_with_retries(
        &self,
        state: &State,
        service: &Arc<Service>,
        port: u16,
        replay: Replay<'_>,
    ) -> Exchange {
        let whole_deadline = replay.timeouts.request.map(|d| Instant::now() + d);
        let base = replay.retry.backoff.unwrap_or(DEFAULT_BACKOFF);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempts = 0;
        let policy = self.backend_policy(service);
        loop {
            let chosen = self.upstreams.choose_for_attempt(
                state.endpoints(service),
                service,
                port,
                &tried,
                &policy,
            );
            let (endpoint, in_flight) = match chosen {
                Ok(chosen) => chosen,
                // Endpoints can vanish (or overflow) between attempts; the
                // answer being retried is gone by then, so say what is
                // known.
                Err(refusal) => return Exchange::refused(refusal, attempts),
            };
            tried.push(endpoint.addr);
            attempts += 1;
            let remaining = whole_deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let per_try = match (replay.timeouts.backend_request, remaining) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (one, other) => one.or(other),
            };
            let request = rebuild(replay.head, &replay.body);
            let outcome = self
                .send(&endpoint, request, per_try, (service, port, attempts))
                .await;
            finish(&in_flight, &outcome);
            drop(in_flight);
            let retriable = match &outcome {
                Outcome::Answered(response) => {
                    is_retriable_answer(&replay.retry.codes, response.status(), response.headers())
                }
                Outcome::Failed(_) => true,
                Outcome::TimedOut(_) | Outcome::NoEndpoint | Outcome::Overflow(_) => false,
            };
            let done = |retries_exhausted| Exchange {
                outcome,
                endpoint: Some(endpoint.clone()),
                attempts,
                retries_exhausted,
            };
            if !retriable {
                return done(false);
            }
            if attempts > replay.retry.attempts {
                return done(true);
            }
            let wait = backoff(base, attempts, fastrand::f64());
            let out_of_time = whole_deadline.is_some_and(|d| Instant::now() + wait >= d);
            if out_of_time
                || !self
                    .retry_budgets
                    .try_retry(&service.hostname, std::time::Instant::now())
            {
                return done(true);
            }
            debug!(
                upstream.addr = %endpoint.addr,
                attempt = attempts,
                backoff = ?wait,
                "retrying"
            );
            // The answer being retried is dropped here, its body unread.
            drop(done(false));
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt, cancelled at `deadline`: dropping the attempt resets
    /// its stream, or closes its connection, or takes it out of the line
    /// of requests waiting for a connection. `of` is the service, port and
    /// attempt number (1 first) the attempt's client span records, when
    /// the request is traced.
    async fn send(
        &self,
        endpoint: &Endpoint,
        mut request: Request<UpstreamBody>,
        deadline: Option<Duration>,
        of: (&Service, u16, u32),
    ) -> Outcome {
        let trace = request.extensions().get::<RequestTrace>().cloned();
        let span = trace.map(|trace| trace.attempt(of.2, &mut request));
        let certs = CertRequest::new(&*self.certs, &self.identity);
        // The attempt is made inside each arm, not bound before the match:
        // a future bound to a variable keeps its own room in this state
        // machine even after it has moved into the timeout, which doubled
        // the size of every request's future.
        let answered = match deadline {
            Some(deadline) => {
                tokio::time::timeout(deadline, self.upstreams.send(endpoint, certs, request))
                    .await
                    .map_err(|_| Outcome::TimedOut(deadline))
            }
            None => Ok(self.upstreams.send(endpoint, certs, request).await),
        };
        let outcome = match answered {
            Ok(Ok(response)) => Outcome::Answered(response),
            Ok(Err(error)) => Outcome::Failed(error),
            Err(timed_out) => timed_out,
        };
        if let Some(span) = span {
            let error;
            let end = match &outcome {
                Outcome::Answered(response) => AttemptEnd::Answered(response.status()),
                Outcome::Failed(failure) => {
                    error = failure.to_string();
                    AttemptEnd::Failed {
                        flag: failure.response_flag(),
                        error: &error,
                    }
                }
                Outcome::TimedOut(_) | Outcome::NoEndpoint | Outcome::Overflow(_) => {
                    AttemptEnd::TimedOut
                }
            };
            span.finish(of.0, of.1, (&endpoint.workload, endpoint.addr), end);
        }
        match outcome {
            // A full connection pool is the service's limit, as its
            // request limit is: 503 `UO`, and no retry (as Envoy).
            Outcome::Failed(UpstreamError::Overflow { .. }) => {
                Outcome::Overflow(Limit::PendingRequests)
            }
            outcome => outcome,
        }
    }
}

/// Tells outlier detection how an attempt ended. A timed-out attempt is
/// not the endpoint's failure to answer (the deadline was the route's),
/// so it is not counted, as Envoy counts only responses and connection
/// failures.
fn finish(in_flight: &InFlight, outcome: &Outcome) {
    let result = match outcome {
        Outcome::Answered(response) => AttemptResult::Status(response.status().as_u16()),
        Outcome::Failed(_) => AttemptResult::ConnectionFailed,
        Outcome::TimedOut(_) | Outcome::NoEndpoint | Outcome::Overflow(_) => return,
    };
    in_flight.finish(result, std::time::Instant::now());
}

/// Istio's defaults, for the services no `DestinationRule` names: one value
/// shared by their requests rather than two allocations for each.
static DEFAULT_BACKEND_POLICY: LazyLock<Arc<BackendPolicy>> = LazyLock::new(Arc::default);

impl Inner {
    /// The `DestinationRule` policy of `service`, or Istio's defaults.
    fn backend_policy(&self, service: &Service) -> Arc<BackendPolicy> {
        self.config
            .snapshot()
            .backend_policy(&service.hostname)
            .cloned()
            .unwrap_or_else(|| DEFAULT_BACKEND_POLICY.clone())
    }
}

// === impl Exchange ===

impl Exchange {
    /// No attempt (more) could be sent, after `attempts`.
    fn refused(refusal: Refusal, attempts: u32) -> Self {
        Exchange {
            outcome: match refusal {
                Refusal::NoEndpoint => Outcome::NoEndpoint,
                Refusal::Overflow => Outcome::Overflow(Limit::Requests),
            },
            endpoint: None,
            attempts,
            retries_exhausted: false,
        }
    }
}

/// A fresh request for one attempt: the prepared head (extensions are
/// the waypoint's own and stay behind) and a copy of the kept body.
pub(super) fn rebuild(head: &http::request::Parts, body: &KeptBody) -> Request<UpstreamBody> {
    let mut request = Request::new(UpstreamBody::replay(body));
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    // The trace goes with each attempt: it names its client span upstream.
    if let Some(trace) = head.extensions.get::<RequestTrace>() {
        request.extensions_mut().insert(trace.clone());
    }
    request
}
