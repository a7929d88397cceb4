//! `http.idleTimeout` on pooled connections, as Envoy's
//! `common_http_protocol_options.idle_timeout` on a cluster: a connection
//! that carries no request for that long is closed, and its slot goes, so
//! the service's count drops.
//!
//! - HTTP/1: the clock starts when the connection is free in its
//!   endpoint's list, on the task that watched it come free; a request
//!   checking it out drops the clock ([`IdleClock`]), which ends that
//!   task. Expired, it is taken out of the list under the lock (so no
//!   request can take it at the same time) and let go: hyper closes an
//!   idle connection whose sender is gone.
//! - HTTP/2: one task per pooled connection; the clock is the time of its
//!   last request. Expired, the connection leaves the list and the pool
//!   lets go of its sender: hyper then closes it as soon as the streams it
//!   still carries have ended, so a long response is never cut (the
//!   difference with Envoy, whose clock starts when the last stream ends,
//!   is that such a connection takes no new request meanwhile).
//!
//! Whether a clock has run out is [`breaker::idle_expired`]'s decision.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ConnectionPool, Http1Connection, Http2Connection, PoolKey};
use crate::breaker;

/// Since when an HTTP/1 connection has been free in the list, and the
/// hold on the task that closes it once idle: dropped (the connection is
/// checked out, or gone), it stops that task.
#[derive(Debug)]
pub(super) struct IdleClock {
    since: Instant,
    _stop: oneshot::Sender<()>,
}

/// What the watcher of an HTTP/2 connection found.
enum Http2Idle {
    /// No longer in the list (closed, or at `maxRequestsPerConnection`).
    Gone,
    /// Taken out of the list: to be let go.
    Expired(Http2Connection),
    /// Used since: expires at this time at the earliest.
    Until(Instant),
}

// === impl ConnectionPool ===

impl ConnectionPool {
    /// Closes HTTP/1 connection `id` of `key`, free in its endpoint's
    /// list, once it has stayed free for its idle timeout; returns as soon
    /// as a request takes it, or it goes.
    pub(super) async fn close_when_idle(&self, key: &PoolKey, id: u64) {
        let Some((deadline, stopped)) = self.start_idle_clock(key, id) else {
            return;
        };
        if tokio::time::timeout_at(deadline, stopped).await.is_ok() {
            return;
        }
        // Let go outside the lock: hyper closes it, and the task driving it
        // then drops its slot.
        if let Some(connection) = self.take_idle_http1(key, id) {
            tracing::debug!(
                upstream.addr = %key.endpoint.addr,
                dst.service = %key.service,
                "closing an idle upstream connection (idleTimeout)"
            );
            drop(connection);
        }
    }

    /// Starts the clock of connection `id`: the time it expires and what
    /// tells of its checkout. `None` when it is not listed, or has no
    /// idle timeout.
    fn start_idle_clock(&self, key: &PoolKey, id: u64) -> Option<(Instant, oneshot::Receiver<()>)> {
        let mut services = self.lock();
        let connection = services
            .get_mut(&key.service)?
            .endpoints
            .get_mut(&key.endpoint)?
            .http1
            .iter_mut()
            .find(|c| c.id == id)?;
        let timeout = connection.idle_timeout?;
        let since = Instant::now();
        let (stop, stopped) = oneshot::channel();
        connection.idle = Some(IdleClock { since, _stop: stop });
        Some((since + timeout, stopped))
    }

    /// Connection `id`, out of the list, if it is there and has been free
    /// for its idle timeout.
    fn take_idle_http1(&self, key: &PoolKey, id: u64) -> Option<Http1Connection> {
        let mut services = self.lock();
        let endpoint = services
            .get_mut(&key.service)?
            .endpoints
            .get_mut(&key.endpoint)?;
        let i = endpoint.http1.iter().position(|c| c.id == id)?;
        let connection = &endpoint.http1[i];
        let since = connection.idle.as_ref()?.since;
        breaker::idle_expired(connection.idle_timeout, since, Instant::now())
            .then(|| endpoint.http1.swap_remove(i))
    }

    /// Watches HTTP/2 connection `id` of `key` on a task of its own, and
    /// takes it out of the list once no request has been sent on it for
    /// `timeout`.
    pub(super) fn watch_http2_idle(
        self: &Arc<Self>,
        key: &Arc<PoolKey>,
        id: u64,
        timeout: Duration,
    ) {
        let pool = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut deadline = Instant::now() + timeout;
            loop {
                tokio::time::sleep_until(deadline).await;
                match pool.check_idle_http2(&key, id, timeout) {
                    Http2Idle::Gone => return,
                    Http2Idle::Until(next) => deadline = next,
                    Http2Idle::Expired(connection) => {
                        tracing::debug!(
                            upstream.addr = %key.endpoint.addr,
                            dst.service = %key.service,
                            "idle upstream HTTP/2 connection leaves the pool (idleTimeout)"
                        );
                        drop(connection);
                        return;
                    }
                }
            }
        });
    }

    fn check_idle_http2(&self, key: &PoolKey, id: u64, timeout: Duration) -> Http2Idle {
        let mut services = self.lock();
        let Some(endpoint) = services
            .get_mut(&key.service)
            .and_then(|c| c.endpoints.get_mut(&key.endpoint))
        else {
            return Http2Idle::Gone;
        };
        let Some(i) = endpoint.http2.iter().position(|c| c.id == id) else {
            return Http2Idle::Gone;
        };
        let connection = &endpoint.http2[i];
        if connection.sender.is_closed() {
            endpoint.http2.swap_remove(i);
            return Http2Idle::Gone;
        }
        let since = connection.last_request;
        if breaker::idle_expired(Some(timeout), since, Instant::now()) {
            Http2Idle::Expired(endpoint.http2.swap_remove(i))
        } else {
            Http2Idle::Until(since + timeout)
        }
    }
}
