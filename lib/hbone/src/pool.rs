//! The HBONE client: a pool of HTTP/2 connections, many tunnels on each.
//!
//! Connections are keyed by (source identity, destination address, expected
//! identities), because a connection proves exactly one source identity and
//! was checked against exactly one set of expected peers: reusing it for any
//! other combination would be a security bug, not an optimisation. They
//! are keyed by the worker thread that opened them as well
//! ([`crate::workers`]): a connection's driver runs on that thread, so a
//! tunnel leased from another would hand every write and every wake-up
//! across threads.
//!
//! Life of a connection:
//! 1. `connect` finds a live connection for the key with a free stream slot
//!    and leases the slot; if none has one, it takes the key's establish lock
//!    (so a burst of requests opens one connection, not a hundred), checks
//!    again, and otherwise dials TCP, TLS and HTTP/2, each under a deadline.
//! 2. A driver task owns the HTTP/2 connection: it polls it, pings the peer
//!    every `keepalive_interval` and drops it when a pong is late, and closes
//!    it once it has had no stream for `idle_timeout`.
//! 3. A GOAWAY from the peer (or any connection error) marks it closed: it
//!    takes no new streams, open ones finish, and the next `connect` dials a
//!    new connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use identity::{Identity, WorkloadCert};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, debug_span};

use crate::coalesce::Coalesced;
use crate::connector::{Connector, DirectConnector};
use crate::error::Error;
use crate::settings::H2Settings;
use crate::tunnel::Tunnel;
use crate::workers::{WorkerId, current_worker};

/// Limits and deadlines of the client pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub h2: H2Settings,
    /// Streams one connection carries before another is opened.
    pub max_streams_per_connection: usize,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// How often the peer is pinged to detect a dead connection.
    pub keepalive_interval: Duration,
    /// How long a pong may take before the connection is declared dead.
    pub keepalive_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            h2: H2Settings::default(),
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// What to tunnel, from whom, to whom.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The certificate to present: the source workload's own.
    pub source: Arc<WorkloadCert>,
    /// The HBONE endpoint to dial, usually `<dst-ip>:15008`.
    pub destination: SocketAddr,
    /// Identities the destination may prove; anything else is refused.
    pub expected_identities: Vec<Identity>,
    /// The `:authority`: `<dst-ip>:<port>`, or a service `<vip>:<port>`.
    pub authority: String,
    /// Extra request headers (`forwarded`, `baggage`, `traceparent`).
    pub headers: HeaderMap,
    /// What the client has sent already, to go out right behind the
    /// `CONNECT` rather than after its answer: one round trip less for a
    /// client that speaks first. The server holds it until it has answered
    /// 200, and drops it with any other answer. Empty for none.
    pub early_data: Bytes,
}

/// A cloneable handle to the pool; clones share connections.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    config: PoolConfig,
    /// Opens the TCP connections under each TLS connection.
    connector: Arc<dyn Connector>,
    /// Connections per key. Entries are removed when their last connection
    /// closes, so the map tracks live destinations, not history.
    keys: Mutex<HashMap<PoolKey, Arc<KeyedConnections>>>,
    next_connection_id: AtomicU64,
    /// TLS connections dialed since the pool was made (tests and metrics).
    connections_opened: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    /// The worker the connection's driver runs on; `None` off the workers.
    worker: Option<WorkerId>,
    source: Identity,
    destination: SocketAddr,
    /// Sorted and deduplicated, so equal sets share connections.
    expected: Vec<Identity>,
}

#[derive(Debug, Default)]
struct KeyedConnections {
    /// Held while dialing, so concurrent requests wait for one new
    /// connection instead of each dialing their own.
    establish: tokio::sync::Mutex<()>,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    send: SendRequest<Bytes>,
    active_streams: usize,
    /// Set on GOAWAY or error: no new streams, existing ones finish.
    closed: bool,
    idle_since: Instant,
}

/// A leased stream slot; returned when the tunnel is dropped.
#[derive(Debug)]
pub(crate) struct StreamLease {
    keyed: Arc<KeyedConnections>,
    connection_id: u64,
}

// === impl Pool ===

impl Pool {
    /// A pool that dials from this process's network namespace.
    pub fn new(config: PoolConfig) -> Self {
        Self::with_connector(config, Arc::new(DirectConnector))
    }

    /// A pool whose TCP connections come from `connector` (a pod's network
    /// namespace, a socket mark).
    pub fn with_connector(config: PoolConfig, connector: Arc<dyn Connector>) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                config,
                connector,
                keys: Mutex::new(HashMap::new()),
                next_connection_id: AtomicU64::new(0),
                connections_opened: AtomicU64::new(0),
            }),
        }
    }

    /// TLS connections dialed so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }

    /// Connections currently pooled, over all keys.
    pub fn open_connections(&self) -> usize {
        let keys = lock(&self.inner.keys);
        keys.values().map(|keyed| lock(&keyed.slots).len()).sum()
    }

    /// Opens a tunnel: reuses a pooled connection when one has room.
    pub async fn connect(&self, request: ConnectRequest) -> Result<Tunnel, Error> {
        let uri: Uri = request
            .authority
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::BadAuthority {
                authority: request.authority.clone(),
                reason: e.to_string(),
            })?;
        if uri.authority().is_none() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(Error::BadAuthority {
                authority: request.authority.clone(),
                reason: "expected <ip>:<port>".into(),
            });
        }
        let keyed = self.keyed(&request);
        // A connection may die between lease and use (GOAWAY, reset); the
        // second attempt then runs on a fresh connection.
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let (send, lease) = self.lease(&keyed, &request).await?;
            match open_stream(send, &request, uri.clone(), lease).await {
                Err(OpenError::Connection(source)) if attempts_left > 0 => {
                    debug!(error = %source, dst.addr = %request.destination, "pooled connection unusable, retrying on a new one");
                    continue;
                }
                Err(OpenError::Connection(source)) => {
                    return Err(Error::Http2 {
                        addr: request.destination,
                        source,
                    });
                }
                Err(OpenError::Answer(error)) => return Err(error),
                Ok(tunnel) => return Ok(tunnel),
            }
        }
    }

    fn keyed(&self, request: &ConnectRequest) -> Arc<KeyedConnections> {
        let mut expected = request.expected_identities.clone();
        expected.sort();
        expected.dedup();
        let key = PoolKey {
            worker: current_worker(),
            source: request.source.identity.clone(),
            destination: request.destination,
            expected,
        };
        lock(&self.inner.keys).entry(key).or_default().clone()
    }

    /// Leases a stream slot, dialing a new connection if every pooled one is
    /// full or closed.
    async fn lease(
        &self,
        keyed: &Arc<KeyedConnections>,
        request: &ConnectRequest,
    ) -> Result<(SendRequest<Bytes>, StreamLease), Error> {
        let max = self.inner.config.max_streams_per_connection;
        if let Some(leased) = keyed.try_lease(keyed, max) {
            return Ok(leased);
        }
        let _establishing = keyed.establish.lock().await;
        if let Some(leased) = keyed.try_lease(keyed, max) {
            return Ok(leased);
        }
        let (send, connection) = self.dial(request).await?;
        let id = self
            .inner
            .next_connection_id
            .fetch_add(1, Ordering::Relaxed);
        lock(&keyed.slots).push(Slot {
            id,
            send: send.clone(),
            active_streams: 1,
            closed: false,
            idle_since: Instant::now(),
        });
        let driver = Driver {
            pool: self.clone(),
            keyed: keyed.clone(),
            connection_id: id,
            addr: request.destination,
        };
        let span = debug_span!("hbone_connection", dst.addr = %request.destination, id);
        tokio::spawn(driver.run(connection).instrument(span));
        Ok((
            send,
            StreamLease {
                keyed: keyed.clone(),
                connection_id: id,
            },
        ))
    }

    /// TCP, then TLS presenting the source's certificate, then HTTP/2.
    async fn dial(
        &self,
        request: &ConnectRequest,
    ) -> Result<(SendRequest<Bytes>, H2Connection), Error> {
        let config = &self.inner.config;
        let addr = request.destination;
        let tls_config =
            identity::tls::client_config(&request.source, &request.expected_identities)?;
        let tcp = tokio::time::timeout(config.connect_timeout, self.inner.connector.connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout {
                addr,
                after: config.connect_timeout,
            })?
            .map_err(|source| Error::Connect { addr, source })?;
        // Tunnels carry small interactive writes; never delay them.
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::IpAddress(addr.ip().into());
        let handshake = TlsConnector::from(Arc::new(tls_config)).connect(server_name, tcp);
        let mut tls = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| Error::HandshakeTimeout {
                addr,
                after: config.handshake_timeout,
            })?
            .map_err(|source| Error::Handshake { addr, source })?;
        tls.get_mut()
            .1
            .set_buffer_limit(Some(config.h2.tls_send_buffer()));
        if tls.get_ref().1.alpn_protocol() != Some(identity::tls::ALPN_H2) {
            return Err(Error::NotHbone { addr });
        }
        self.inner
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let connected = config
            .h2
            .client_builder()
            .handshake::<_, Bytes>(Coalesced::new(tls))
            .await
            .map_err(|source| Error::Http2 { addr, source })?;
        debug!(dst.addr = %addr, src.identity = %request.source.identity, "HBONE connection established");
        Ok(connected)
    }

    /// Forgets a key whose last connection closed, unless it was reused.
    fn remove_key_if_empty(&self, keyed: &Arc<KeyedConnections>) {
        let mut keys = lock(&self.inner.keys);
        keys.retain(|_, entry| !(Arc::ptr_eq(entry, keyed) && lock(&entry.slots).is_empty()));
    }
}

type H2Connection =
    h2::client::Connection<Coalesced<tokio_rustls::client::TlsStream<TcpStream>>, Bytes>;

/// Sends the `CONNECT` and waits for the answer.
async fn open_stream(
    send: SendRequest<Bytes>,
    request: &ConnectRequest,
    uri: Uri,
    lease: StreamLease,
) -> Result<Tunnel, OpenError> {
    let mut send = send.ready().await.map_err(|e| lease.connection_failed(e))?;
    let mut builder = Request::builder().method(Method::CONNECT).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        headers.extend(request.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let connect = builder.body(()).map_err(|e| {
        OpenError::Answer(Error::BadAuthority {
            authority: request.authority.clone(),
            reason: e.to_string(),
        })
    })?;
    let (response, mut send_stream) = send
        .send_request(connect, false)
        .map_err(|e| lease.connection_failed(e))?;
    let sent_early = !request.early_data.is_empty();
    if sent_early {
        // Queued behind the HEADERS, so both usually leave in one write.
        send_stream
            .send_data(request.early_data.clone(), false)
            .map_err(|e| lease.connection_failed(e))?;
    }
    let response = response.await.map_err(|e| {
        // A reset of this one stream is the peer's answer, not a dead
        // connection; anything connection-wide is worth one retry.
        if e.is_reset() {
            return OpenError::Answer(Error::Http2 {
                addr: request.destination,
                source: e,
            });
        }
        match lease.connection_failed(e) {
            // The peer may have passed the early data on to the app before
            // the connection failed: sent again elsewhere, the app could get
            // it twice. A GOAWAY that excludes this stream says it did not.
            OpenError::Connection(source) if sent_early && !source.is_go_away() => {
                OpenError::Answer(Error::Http2 {
                    addr: request.destination,
                    source,
                })
            }
            other => other,
        }
    })?;
    let addr = request.destination;
    let authority = request.authority.clone();
    match response.status() {
        StatusCode::OK => Ok(Tunnel::new(send_stream, response.into_body(), Some(lease))),
        StatusCode::UNAUTHORIZED => Err(OpenError::Answer(Error::Denied { addr, authority })),
        status => Err(OpenError::Answer(Error::Refused {
            addr,
            authority,
            status,
        })),
    }
}

/// Whether a failed open is worth retrying on another connection.
enum OpenError {
    Connection(h2::Error),
    Answer(Error),
}

/// Owns one HTTP/2 connection: polls it, pings the peer, closes it when idle,
/// and removes its slot from the pool when it ends for any reason.
struct Driver {
    pool: Pool,
    keyed: Arc<KeyedConnections>,
    connection_id: u64,
    addr: SocketAddr,
}

// === impl Driver ===

impl Driver {
    async fn run(self, mut connection: H2Connection) {
        let ping_pong = connection.ping_pong();
        let config = self.pool.inner.config.clone();
        let watchdog = async {
            let Some(mut ping_pong) = ping_pong else {
                return "ping handle unavailable";
            };
            let tick = config
                .keepalive_interval
                .min(config.idle_timeout / 2)
                .max(Duration::from_millis(10));
            let mut last_ping = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                if self
                    .keyed
                    .close_if_idle(self.connection_id, config.idle_timeout)
                {
                    return "idle";
                }
                if last_ping.elapsed() >= config.keepalive_interval {
                    last_ping = Instant::now();
                    let pong = tokio::time::timeout(
                        config.keepalive_timeout,
                        ping_pong.ping(h2::Ping::opaque()),
                    );
                    match pong.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return "ping failed",
                        Err(_) => return "pong timed out",
                    }
                }
            }
        };
        let reason = tokio::select! {
            result = &mut connection => match result {
                Ok(()) => "closed by peer",
                Err(_) => "connection error",
            },
            reason = watchdog => reason,
        };
        debug!(dst.addr = %self.addr, reason, "HBONE connection closed");
        self.keyed.remove(self.connection_id);
        self.pool.remove_key_if_empty(&self.keyed);
    }
}

// === impl KeyedConnections ===

impl KeyedConnections {
    fn try_lease(
        &self,
        this: &Arc<KeyedConnections>,
        max_streams: usize,
    ) -> Option<(SendRequest<Bytes>, StreamLease)> {
        let mut slots = lock(&self.slots);
        let slot = slots
            .iter_mut()
            .find(|s| !s.closed && s.active_streams < max_streams)?;
        slot.active_streams += 1;
        let lease = StreamLease {
            keyed: this.clone(),
            connection_id: slot.id,
        };
        Some((slot.send.clone(), lease))
    }

    /// Removes the connection if it has had no stream for `idle_timeout`.
    /// Done under the slots lock, so it cannot race with a new lease.
    fn close_if_idle(&self, id: u64, idle_timeout: Duration) -> bool {
        let mut slots = lock(&self.slots);
        let Some(index) = slots.iter().position(|s| s.id == id) else {
            return true;
        };
        let slot = &slots[index];
        if slot.active_streams == 0 && slot.idle_since.elapsed() >= idle_timeout {
            slots.swap_remove(index);
            return true;
        }
        false
    }

    fn mark_closed(&self, id: u64) {
        if let Some(slot) = lock(&self.slots).iter_mut().find(|s| s.id == id) {
            slot.closed = true;
        }
    }

    fn remove(&self, id: u64) {
        lock(&self.slots).retain(|s| s.id != id);
    }
}

// === impl StreamLease ===

impl StreamLease {
    fn connection_failed(&self, error: h2::Error) -> OpenError {
        self.keyed.mark_closed(self.connection_id);
        OpenError::Connection(error)
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let mut slots = lock(&self.keyed.slots);
        if let Some(slot) = slots.iter_mut().find(|s| s.id == self.connection_id) {
            slot.active_streams = slot.active_streams.saturating_sub(1);
            if slot.active_streams == 0 {
                slot.idle_since = Instant::now();
            }
        }
    }
}

/// Locks a pool mutex. The critical sections only move counters and vectors
/// and cannot panic halfway, so a poisoned lock still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
