//! The upstream connection pool: HTTP connections to endpoints, kept for
//! the next request, and the service's `connectionPool` limits on them
//! (the decisions are `crate::breaker`'s; this module keeps their inputs
//! and does what they say).
//!
//! Each service has connections of its own, as each Envoy cluster has its
//! pools, and within it they are keyed by endpoint address, transport,
//! version and the identity they were checked against
//! ([`ConnectionKey`]), so that a connection proved to reach identity A
//! never carries a request meant for B; and by the worker thread that
//! opened them, as each Envoy worker has pools of its own, so that a
//! request goes out on a connection its own thread drives (see
//! `hbone::workers`). The limits count over every worker; as in Envoy,
//! a worker with no connection to an endpoint may open one over
//! `maxConnections` ([`crate::breaker::may_open`]).
//!
//! - An HTTP/1 connection carries one request at a time: a request checks
//!   out one that hyper says is ready, sends on it and puts it back,
//!   busy; it is free again as soon as hyper has read its response to the
//!   end, for the next request to check out, and a task watching it then
//!   hands it to the first request waiting for its endpoint, if there is
//!   one. After `maxRequestsPerConnection` requests it is not put back,
//!   and closes when its last response is done.
//! - An HTTP/2 connection is shared: a request takes a clone of its
//!   sender, and a connection that has carried `maxRequestsPerConnection`
//!   requests leaves the pool.
//!
//! A request that finds no free connection opens one, waits in line, or
//! is refused, as [`crate::breaker::admit`] says. Waiting requests are
//! served first come first served: a connection that comes free goes to
//! the first one waiting for its endpoint, room to open one (a connection
//! closed) to the first one that may open.
//!
//! Counting: a [`Slot`] counts one connection from the moment it is
//! opened until it has closed, because it goes with the tasks that drive
//! the connection, not with a request. A [`Waiting`] counts a waiting
//! request until it is dropped, so an attempt cancelled in line (its
//! deadline, or its client gone) stops counting at once. Everything sits
//! behind one lock, taken briefly and never across an await; dropping a
//! slot takes it, so no slot is ever dropped with the lock held.
//!
//! An HTTP/1 connection that a 101 switches to another protocol (an
//! upgrade, see `upgrade`) leaves hyper, and so the task that drove it,
//! but stays open as the bytes of a tunnel: an [`UpgradedConnection`]
//! keeps its slot counted until that tunnel ends. Such a connection is
//! never put back.
//!
//! `http.idleTimeout` (see `idle`): an HTTP/1 connection free in the
//! list for that long is taken out and let go, so hyper closes it and its
//! slot goes; checking it out stops its clock, and it starts again when
//! it is free again. An HTTP/2 connection on which no request has been
//! sent for that long leaves the list the same way, and closes once the
//! streams it still carries have ended: none is cut.
//!
//! A TCP passthrough takes a [`TcpSlot`] of its service: counted in the
//! service's connections (so against `maxConnections`, with the HTTP
//! ones) for the passthrough's whole life, in no endpoint's, since no
//! request can use it. It never waits: without room it is refused
//! ([`crate::breaker::may_pass_through`]). When it ends, its room goes to
//! the first waiting request that may open, as a closed HTTP
//! connection's does.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use hbone::WorkerId;
use hyper::client::conn::{http1, http2};
use identity::Identity;
use tokio::sync::oneshot;
use tokio::time::Instant;

use self::idle::IdleClock;

use super::body::UpstreamBody;
use crate::balance::Limits;
use crate::breaker::{self, Admission, ConnectionCounts};
use crate::fast_map::FastMap;

/// Which connections of a service a request may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ConnectionKey {
    /// The worker whose tasks drive the connection; `None` off the
    /// workers.
    pub(super) worker: Option<WorkerId>,
    pub(super) addr: SocketAddr,
    /// `Some` when tunnelled: the identity the tunnel checked.
    pub(super) hbone_identity: Option<Identity>,
    pub(super) http2: bool,
}

/// A [`ConnectionKey`] of one service: where a connection goes back to,
/// and whose counts it is in. Made once per connection (or waiting
/// request) and shared.
#[derive(Debug)]
pub(super) struct PoolKey {
    pub(super) service: Arc<str>,
    pub(super) endpoint: ConnectionKey,
}

/// Connections kept per endpoint (and version): bounds what a burst of
/// HTTP/1 requests leaves behind.
const MAX_KEPT_PER_ENDPOINT: usize = 64;

/// The connections of every service, shared by every request of the
/// waypoint.
#[derive(Debug, Default)]
pub(super) struct ConnectionPool {
    services: Mutex<FastMap<Arc<str>, ServiceConnections>>,
}

#[derive(Debug, Default)]
struct ServiceConnections {
    /// Open or being opened, to every endpoint, TCP passthroughs
    /// included: what `maxConnections` bounds.
    open: u32,
    /// Per endpoint (and version); an entry goes when its last connection
    /// has closed.
    endpoints: FastMap<ConnectionKey, EndpointConnections>,
    /// Requests waiting for a connection, first come first served: what
    /// `http1MaxPendingRequests` bounds.
    waiting: VecDeque<Waiter>,
    /// The id of the next waiting request, to leave the line by.
    next_waiter: u64,
}

#[derive(Debug, Default)]
struct EndpointConnections {
    /// Open or being opened.
    open: u32,
    /// HTTP/1 connections, busy or ready for a request.
    http1: Vec<Http1Connection>,
    /// HTTP/2 connections that take requests.
    http2: Vec<Http2Connection>,
}

/// An HTTP/1 connection, which carries one request at a time.
#[derive(Debug)]
pub(super) struct Http1Connection {
    /// Tells it apart in its endpoint's list, for the task watching it.
    id: u64,
    sender: http1::SendRequest<UpstreamBody>,
    /// Requests it has carried, for `maxRequestsPerConnection`.
    requests: u32,
    key: Arc<PoolKey>,
    /// The slot the task driving it holds: an upgrade takes a hold of
    /// its own (see [`Http1Connection::hold_for_upgrade`]).
    slot: Weak<Slot>,
    /// Its service's `http.idleTimeout` at its last request.
    idle_timeout: Option<std::time::Duration>,
    /// Set while it is free in the list; a request taking it drops it,
    /// which stops the task that would close it.
    idle: Option<IdleClock>,
}

#[derive(Debug)]
struct Http2Connection {
    /// Tells it apart in its endpoint's list, for its idle watcher.
    id: u64,
    sender: http2::SendRequest<UpstreamBody>,
    /// Requests it has carried, for `maxRequestsPerConnection`.
    requests: u32,
    /// When its last request was sent, for `http.idleTimeout`.
    last_request: Instant,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    endpoint: ConnectionKey,
    /// Its service's limits when it came: whether it may open one.
    limits: Limits,
    grant: oneshot::Sender<Grant>,
}

/// What a waiting request is given.
#[derive(Debug)]
enum Grant {
    Http1(Http1Connection),
    Http2(http2::SendRequest<UpstreamBody>),
    /// Room to open a connection; it is counted already.
    Open,
}

/// A connection for one request, or the right to open one.
#[derive(Debug)]
pub(super) enum Lease {
    Http1(Http1Connection),
    Http2(http2::SendRequest<UpstreamBody>),
    Open(Slot),
}

/// A TCP passthrough refused: the service has `open` connections, its
/// `maxConnections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpOverflow {
    pub(super) open: u32,
}

/// What [`ConnectionPool::checkout`] found.
#[derive(Debug)]
pub(super) enum Checkout {
    Ready(Lease),
    /// In line: await [`Waiting::lease`].
    Wait(Waiting),
    /// The line is full: `waiting` requests are in it already.
    Overflow {
        waiting: u32,
    },
}

/// One connection of a service, counted until dropped: when the
/// connection has closed, or could not be opened.
#[derive(Debug)]
pub(super) struct Slot {
    pool: Arc<ConnectionPool>,
    key: Arc<PoolKey>,
}

/// The upstream connection of one TCP passthrough, counted in its
/// service's connections until dropped.
#[derive(Debug)]
pub(super) struct TcpSlot {
    pool: Arc<ConnectionPool>,
    service: Arc<str>,
}

/// An upstream connection switched to another protocol by a 101,
/// counted until dropped: when the tunnel it carries has ended. Cloned
/// only to travel in the response's extensions.
#[derive(Debug, Clone)]
pub(super) struct UpgradedConnection {
    _slot: Arc<Slot>,
}

/// A request in line for a connection, counted until dropped.
#[derive(Debug)]
pub(super) struct Waiting {
    pool: Arc<ConnectionPool>,
    key: Arc<PoolKey>,
    id: u64,
    grant: oneshot::Receiver<Grant>,
    /// Its grant was taken: nothing is left to give back.
    served: bool,
}

// === impl ConnectionPool ===

impl ConnectionPool {
    /// A connection of `service` to `endpoint` for one request: a free
    /// one, or the right to open one, or a place in line, or none, by
    /// `limits`.
    pub(super) fn checkout(
        self: &Arc<Self>,
        service: &Arc<str>,
        endpoint: &ConnectionKey,
        limits: &Limits,
    ) -> Checkout {
        let mut services = self.lock();
        let connections = services.entry(service.clone()).or_default();
        if let Some(free) = connections.endpoints.get_mut(endpoint) {
            if endpoint.http2 {
                free.http2.retain(|c| !c.sender.is_closed());
                if let Some(i) = free.http2.iter().position(|c| c.sender.is_ready()) {
                    let shared = &mut free.http2[i];
                    shared.requests += 1;
                    shared.last_request = Instant::now();
                    let sender = shared.sender.clone();
                    if !breaker::reusable(limits, shared.requests) {
                        free.http2.swap_remove(i);
                    }
                    return Checkout::Ready(Lease::Http2(sender));
                }
            } else if !connections.waiting.iter().any(|w| w.endpoint == *endpoint) {
                // Closed ones (the peer's idle timeout) are dropped on the
                // way; their slots go as they close. A connection that has
                // just come free while requests wait for it is theirs: its
                // watcher hands it to the first.
                free.http1.retain(|c| !c.sender.is_closed());
                if let Some(i) = free.http1.iter().rposition(|c| c.sender.is_ready()) {
                    return Checkout::Ready(Lease::Http1(free.http1.swap_remove(i)));
                }
            }
        }
        let counts = connections.counts(endpoint);
        match breaker::admit(limits, counts) {
            Admission::Open => {
                connections.count_open(endpoint);
                drop(services);
                Checkout::Ready(Lease::Open(Slot {
                    pool: self.clone(),
                    key: Arc::new(PoolKey {
                        service: service.clone(),
                        endpoint: endpoint.clone(),
                    }),
                }))
            }
            Admission::Wait => {
                let id = connections.next_waiter;
                connections.next_waiter += 1;
                let (grant, granted) = oneshot::channel();
                connections.waiting.push_back(Waiter {
                    id,
                    endpoint: endpoint.clone(),
                    limits: *limits,
                    grant,
                });
                drop(services);
                Checkout::Wait(Waiting {
                    pool: self.clone(),
                    key: Arc::new(PoolKey {
                        service: service.clone(),
                        endpoint: endpoint.clone(),
                    }),
                    id,
                    grant: granted,
                    served: false,
                })
            }
            Admission::Overflow => Checkout::Overflow {
                waiting: counts.waiting,
            },
        }
    }

    /// A connection of `service` for a TCP passthrough, counted until the
    /// slot is dropped; refused when `limits` leave no room.
    pub(super) fn open_tcp(
        self: &Arc<Self>,
        service: &Arc<str>,
        limits: &Limits,
    ) -> Result<TcpSlot, TcpOverflow> {
        let mut services = self.lock();
        let connections = services.entry(service.clone()).or_default();
        if !breaker::may_pass_through(limits, connections.open) {
            let open = connections.open;
            if connections.is_unused() {
                services.remove(service);
            }
            return Err(TcpOverflow { open });
        }
        connections.open += 1;
        Ok(TcpSlot {
            pool: self.clone(),
            service: service.clone(),
        })
    }

    /// A TCP slot is dropped: its passthrough has ended.
    fn release_tcp(&self, service: &str) {
        let mut services = self.lock();
        let Some(connections) = services.get_mut(service) else {
            return;
        };
        connections.open = connections.open.saturating_sub(1);
        connections.grant_open();
        if connections.is_unused() {
            services.remove(service);
        }
    }

    /// Puts back a connection that has just been sent a request, busy
    /// until hyper has read the response, and watches it on a task of its
    /// own, to hand it to a waiting request as soon as it is free. Without
    /// room in its endpoint's list it is let go, and closes after this
    /// response.
    pub(super) fn put_back(self: &Arc<Self>, connection: Http1Connection) {
        let key = connection.key.clone();
        let id = connection.id;
        {
            let mut services = self.lock();
            let Some(endpoint) = services
                .get_mut(&key.service)
                .and_then(|c| c.endpoints.get_mut(&key.endpoint))
            else {
                return;
            };
            if endpoint.http1.len() >= MAX_KEPT_PER_ENDPOINT {
                return;
            }
            endpoint.http1.push(connection);
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if std::future::poll_fn(|cx| pool.poll_free(&key, id, cx)).await {
                pool.close_when_idle(&key, id).await;
            }
        });
    }

    /// Ready once connection `id` of `key` is free (then handed to the
    /// first request waiting for it, if any), closed, or no longer in the
    /// list (checked out again); `true` when it is left free in the list.
    fn poll_free(&self, key: &PoolKey, id: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut services = self.lock();
        let Some(connections) = services.get_mut(&key.service) else {
            return Poll::Ready(false);
        };
        let Some(endpoint) = connections.endpoints.get_mut(&key.endpoint) else {
            return Poll::Ready(false);
        };
        let Some(i) = endpoint.http1.iter().position(|c| c.id == id) else {
            return Poll::Ready(false);
        };
        match endpoint.http1[i].sender.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            // Closed: its slot goes when its task ends.
            Poll::Ready(Err(_)) => {
                endpoint.http1.swap_remove(i);
                Poll::Ready(false)
            }
            Poll::Ready(Ok(())) => {
                if connections
                    .waiting
                    .iter()
                    .any(|w| w.endpoint == key.endpoint)
                {
                    let connection = endpoint.http1.swap_remove(i);
                    return Poll::Ready(connections.hand_free(connection));
                }
                Poll::Ready(true)
            }
        }
    }

    /// A new HTTP/2 connection, which already carries the request of the
    /// one who opened it: shared with the requests waiting for its
    /// endpoint, and pooled while it may carry more. Returns the opener's
    /// sender.
    pub(super) fn add_http2(
        self: &Arc<Self>,
        key: &Arc<PoolKey>,
        sender: http2::SendRequest<UpstreamBody>,
        limits: &Limits,
    ) -> http2::SendRequest<UpstreamBody> {
        let mut services = self.lock();
        let Some(connections) = services.get_mut(&key.service) else {
            return sender;
        };
        let mut shared = Http2Connection {
            id: next_connection_id(),
            sender: sender.clone(),
            requests: 1,
            last_request: Instant::now(),
        };
        let waiting = std::mem::take(&mut connections.waiting);
        for waiter in waiting {
            if waiter.endpoint != key.endpoint || !breaker::reusable(limits, shared.requests) {
                connections.waiting.push_back(waiter);
                continue;
            }
            if waiter
                .grant
                .send(Grant::Http2(shared.sender.clone()))
                .is_ok()
            {
                shared.requests += 1;
            }
        }
        if breaker::reusable(limits, shared.requests)
            && let Some(endpoint) = connections.endpoints.get_mut(&key.endpoint)
            && endpoint.http2.len() < MAX_KEPT_PER_ENDPOINT
        {
            let id = shared.id;
            endpoint.http2.push(shared);
            if let Some(timeout) = limits.idle_timeout {
                self.watch_http2_idle(key, id, timeout);
            }
        }
        sender
    }

    /// A free HTTP/1 connection a waiting request was given but gave up:
    /// to the next one waiting for its endpoint, else back to the list,
    /// where its idle clock starts again.
    fn hand_on(self: &Arc<Self>, connection: Http1Connection) {
        let key = connection.key.clone();
        let id = connection.id;
        let listed = {
            let mut services = self.lock();
            services
                .get_mut(&connection.key.service)
                .is_some_and(|connections| connections.hand_free(connection))
        };
        if listed {
            let pool = self.clone();
            tokio::spawn(async move { pool.close_when_idle(&key, id).await });
        }
    }

    /// A slot is dropped: its connection has closed, or was never opened.
    /// The room goes to the first waiting request that may open one.
    fn release(&self, key: &PoolKey) {
        let mut services = self.lock();
        let Some(connections) = services.get_mut(&key.service) else {
            return;
        };
        connections.open = connections.open.saturating_sub(1);
        if let Some(endpoint) = connections.endpoints.get_mut(&key.endpoint) {
            endpoint.open = endpoint.open.saturating_sub(1);
            if endpoint.open == 0 {
                // Whatever it still lists has closed.
                connections.endpoints.remove(&key.endpoint);
            }
        }
        connections.grant_open();
        if connections.is_unused() {
            services.remove(&key.service);
        }
    }

    /// A waiting request leaves the line (its attempt was cancelled).
    fn leave(&self, service: &str, id: u64) {
        let mut services = self.lock();
        let Some(connections) = services.get_mut(service) else {
            return;
        };
        connections.waiting.retain(|w| w.id != id);
        if connections.is_unused() {
            services.remove(service);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Arc<str>, ServiceConnections>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counts of `service` for a request to `endpoint`.
    #[cfg(test)]
    fn counts(&self, service: &str, endpoint: &ConnectionKey) -> ConnectionCounts {
        self.lock()
            .get(service)
            .map(|c| c.counts(endpoint))
            .unwrap_or_default()
    }
}

// === impl ServiceConnections ===

impl ServiceConnections {
    fn counts(&self, endpoint: &ConnectionKey) -> ConnectionCounts {
        counts(self.open, &self.endpoints, endpoint, self.waiting.len())
    }

    fn count_open(&mut self, endpoint: &ConnectionKey) {
        self.open += 1;
        match self.endpoints.get_mut(endpoint) {
            Some(connections) => connections.open += 1,
            None => {
                let connections = EndpointConnections {
                    open: 1,
                    ..EndpointConnections::default()
                };
                self.endpoints.insert(endpoint.clone(), connections);
            }
        }
    }

    fn uncount_open(&mut self, endpoint: &ConnectionKey) {
        self.open = self.open.saturating_sub(1);
        if let Some(connections) = self.endpoints.get_mut(endpoint) {
            connections.open = connections.open.saturating_sub(1);
            if connections.open == 0 {
                self.endpoints.remove(endpoint);
            }
        }
    }

    /// Room to open a connection to the first waiting request that may.
    fn grant_open(&mut self) {
        loop {
            let waiting = self.waiting.len();
            let Some(i) = self.waiting.iter().position(|w| {
                let counts = counts(self.open, &self.endpoints, &w.endpoint, waiting);
                breaker::may_open(&w.limits, counts)
            }) else {
                return;
            };
            let Some(waiter) = self.waiting.remove(i) else {
                return;
            };
            self.count_open(&waiter.endpoint);
            if waiter.grant.send(Grant::Open).is_ok() {
                return;
            }
            self.uncount_open(&waiter.endpoint);
        }
    }

    /// A free HTTP/1 connection: to the first request waiting for its
    /// endpoint, else to its endpoint's list (`true`).
    fn hand_free(&mut self, mut connection: Http1Connection) -> bool {
        while let Some(i) = self
            .waiting
            .iter()
            .position(|w| w.endpoint == connection.key.endpoint)
        {
            let Some(waiter) = self.waiting.remove(i) else {
                break;
            };
            match waiter.grant.send(Grant::Http1(connection)) {
                Ok(()) => return false,
                // Gone without leaving the line (it cannot, see
                // `Waiting`'s drop); the next one.
                Err(Grant::Http1(back)) => connection = back,
                Err(_) => return false,
            }
        }
        if let Some(endpoint) = self.endpoints.get_mut(&connection.key.endpoint)
            && endpoint.http1.len() < MAX_KEPT_PER_ENDPOINT
        {
            endpoint.http1.push(connection);
            return true;
        }
        false
    }

    fn is_unused(&self) -> bool {
        self.open == 0 && self.waiting.is_empty()
    }
}

/// Ids for connections of both versions, unique in the process.
fn next_connection_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn counts(
    open: u32,
    endpoints: &FastMap<ConnectionKey, EndpointConnections>,
    endpoint: &ConnectionKey,
    waiting: usize,
) -> ConnectionCounts {
    ConnectionCounts {
        service: open,
        endpoint: endpoints.get(endpoint).map_or(0, |e| e.open),
        waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
    }
}

// === impl Http1Connection ===

impl Http1Connection {
    /// A connection just opened, counted by `slot`, which the task that
    /// drives it holds.
    pub(super) fn new(sender: http1::SendRequest<UpstreamBody>, slot: &Arc<Slot>) -> Self {
        Http1Connection {
            id: next_connection_id(),
            sender,
            requests: 0,
            key: slot.key.clone(),
            slot: Arc::downgrade(slot),
            idle_timeout: None,
            idle: None,
        }
    }

    /// A hold on the connection's slot for a request that may switch it
    /// to another protocol: hyper's task lets go of the connection at the
    /// 101, the tunnel it becomes does not. `None` once the connection
    /// has closed (then the request fails anyway).
    pub(super) fn hold_for_upgrade(&self) -> Option<UpgradedConnection> {
        self.slot
            .upgrade()
            .map(|slot| UpgradedConnection { _slot: slot })
    }

    /// Sends `request` (the connection must be ready), and says whether
    /// the connection may carry another after it.
    pub(super) fn send(
        &mut self,
        request: http::Request<UpstreamBody>,
        limits: &Limits,
    ) -> (
        impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>> + use<>,
        bool,
    ) {
        self.requests += 1;
        self.idle_timeout = limits.idle_timeout;
        // In use: its idle clock stops, and its watcher with it.
        self.idle = None;
        let response = self.sender.send_request(request);
        (response, breaker::reusable(limits, self.requests))
    }
}

// === impl Slot ===

impl Slot {
    pub(super) fn key(&self) -> &Arc<PoolKey> {
        &self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.release(&self.key);
    }
}

// === impl TcpSlot ===

impl Drop for TcpSlot {
    fn drop(&mut self) {
        self.pool.release_tcp(&self.service);
    }
}

// === impl Waiting ===

impl Waiting {
    /// Waits for a connection, or for room to open one. `None` only if
    /// the pool dropped the request from its line without serving it,
    /// which it never does.
    pub(super) async fn lease(mut self) -> Option<Lease> {
        let grant = (&mut self.grant).await.ok()?;
        self.served = true;
        Some(match grant {
            Grant::Http1(connection) => Lease::Http1(connection),
            Grant::Http2(sender) => Lease::Http2(sender),
            Grant::Open => Lease::Open(Slot {
                pool: self.pool.clone(),
                key: self.key.clone(),
            }),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        self.pool.leave(&self.key.service, self.id);
        // A grant sent just before it left is handed on, not lost.
        self.grant.close();
        match self.grant.try_recv() {
            Ok(Grant::Http1(connection)) => self.pool.hand_on(connection),
            Ok(Grant::Open) => drop(Slot {
                pool: self.pool.clone(),
                key: self.key.clone(),
            }),
            Ok(Grant::Http2(_)) | Err(_) => {}
        }
    }
}

mod idle;
#[cfg(test)]
mod tests;
