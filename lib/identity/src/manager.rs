//! Per-identity certificate cache with rotation, coalescing and fail-closed expiry.
//!
//! A ztunnel serves many workloads, each with its own SPIFFE identity, and
//! every connection needs its identity's certificate at handshake time. The
//! manager keeps one entry per identity, and each entry is driven by one
//! background task, the only code that asks the CA for that identity: it
//! fetches a certificate, publishes it on a `watch` channel, sleeps until the
//! refresh point (by default half the lifetime, minus a random jitter so that a
//! fleet of nodes does not stampede the CA) and fetches again; failures are
//! retried with exponential backoff. [`CertManager::fetch`] only reads the
//! channel, so any number of concurrent fetches of an identity cost one CA
//! request.
//!
//! Deadlines live on the monotonic clock ([`tokio::time::Instant`]): when a
//! certificate arrives, its remaining wall-clock lifetime becomes an `Instant`.
//! From then on a wall-clock jump cannot stretch a certificate's life, and the
//! logic is testable with Tokio's paused time.
//!
//! The manager fails closed: `fetch` never returns a certificate past its
//! deadline. If the CA stays unreachable until then, `fetch` answers at once
//! with an error saying so, instead of waiting, while the task keeps retrying.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{self, Instant};
use tracing::{debug, info, warn};

use crate::cert::CertInfo;
use crate::{Identity, WorkloadCert};

#[cfg(test)]
mod tests;

/// The error a [`CaClient`] reports; only its message (with sources) is kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Obtains certificates from the CA; the binaries implement it (istiod-lite's
/// `CreateCertificate` over gRPC, or an in-process CA in tests).
pub trait CaClient: Send + Sync + 'static {
    /// Generates a key, sends a CSR for `id` and returns the signed certificate.
    ///
    /// The manager bounds each call by [`CertManagerConfig::request_timeout`]
    /// and retries failures itself, so implementations should not retry.
    fn fetch_certificate(
        &self,
        id: &Identity,
    ) -> impl Future<Output = Result<WorkloadCert, BoxError>> + Send;
}

/// When to renew certificates and how to retry the CA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CertManagerConfig {
    /// Fraction of a certificate's lifetime after which it is renewed; in (0, 1).
    pub refresh_at: f64,
    /// Each renewal happens earlier by a random part of this fraction of the
    /// lifetime, and each retry backoff is shortened by a random part of it;
    /// in [0, `refresh_at`).
    pub jitter: f64,
    /// Wait before the first retry after a failed CA request; doubles per failure.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// A CA request that takes longer counts as failed, so that a hung
    /// connection cannot stall rotation.
    pub request_timeout: Duration,
}

/// Why [`CertManager::fetch`] has no certificate to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertManagerError {
    /// The CA has not issued a first certificate for this identity yet.
    #[error(
        "no certificate for {identity} yet: the CA request failed: {error}; \
         retrying in the background, check that the CA is reachable and accepts this node"
    )]
    Unavailable { identity: Identity, error: String },
    /// The certificate expired and the CA has not replaced it (fail closed).
    #[error(
        "certificate for {identity} expired at {expired_at} and the CA could not issue a new \
         one: {error}; connections using this identity fail until the CA is reachable",
        expired_at = Rfc3339(*.not_after)
    )]
    Expired {
        identity: Identity,
        not_after: SystemTime,
        error: String,
    },
    /// The identity was forgotten (or its task died) while the fetch waited.
    #[error(
        "stopped managing the certificate for {identity} before one was issued \
         (the workload was forgotten or its rotation task failed); fetch it again to restart"
    )]
    Stopped { identity: Identity },
}

/// One identity's line on a `/certs` status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub identity: Identity,
    /// The newest certificate issued for `identity` (serial, validity), if any;
    /// kept after it expires so that the page shows what expired.
    pub cert: Option<CertInfo>,
    pub state: CertState,
}

/// Where an identity's certificate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    /// No CA request has finished yet.
    Initializing,
    /// A valid certificate is served and the latest CA request succeeded.
    Available,
    /// The latest CA request failed and is being retried; the certificate, if
    /// there is one, is still valid and still served.
    Failed { error: String },
    /// The certificate expired and the CA has not replaced it; fetches fail.
    Expired { error: String },
}

/// Caches each identity's certificate and keeps it fresh in the background.
///
/// Cheap to clone; clones share the cache. When the last clone is dropped,
/// every rotation task is aborted. Must be used inside a Tokio runtime.
pub struct CertManager<C> {
    inner: Arc<Inner<C>>,
}

/// Shared by the clones of a [`CertManager`] and by nothing else: rotation
/// tasks hold only `ca`, so dropping the last manager drops `entries`, and
/// dropping an [`Entry`] aborts its task.
struct Inner<C> {
    /// Shared with every rotation task.
    ca: Arc<C>,
    config: CertManagerConfig,
    /// One entry per identity fetched or prefetched and not forgotten since.
    /// A std mutex: it guards only lookups, inserts and removals, never an await.
    entries: Mutex<HashMap<Identity, Entry>>,
}

/// An identity under management, and the protocol with its task:
///
/// - The first `fetch`/`prefetch` of the identity creates the entry and spawns
///   the task, which owns the only `watch::Sender` of `slot`.
/// - The task runs until aborted, which dropping the entry does: `forget`
///   removes it, and dropping the last `CertManager` drops them all. Aborting
///   drops the sender, so fetches still waiting wake up with `Stopped`.
/// - A task that ended on its own (the CA client panicked) is replaced by the
///   next `fetch`/`prefetch` of the identity.
struct Entry {
    slot: watch::Receiver<Slot>,
    task: AbortHandle,
}

/// What a rotation task publishes.
#[derive(Default)]
struct Slot {
    /// The newest certificate the CA issued; kept after it expires so status
    /// pages can show it, but then never handed out.
    current: Option<Current>,
    /// Why the latest CA request failed; cleared by the next success.
    last_error: Option<String>,
}

struct Current {
    cert: Arc<WorkloadCert>,
    /// `not_after` as a monotonic deadline, computed when the cert arrived.
    expires_at: Instant,
}

/// A freshly issued certificate's remaining life and renewal time, relative to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    remaining: Duration,
    refresh_in: Duration,
}

/// Formats a wall-clock time as RFC 3339 UTC for messages and logs.
struct Rfc3339(SystemTime);

// === impl CertManagerConfig ===

impl Default for CertManagerConfig {
    fn default() -> Self {
        Self {
            refresh_at: 0.5,
            jitter: 0.05,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl CertManagerConfig {
    /// Replaces values that would break the arithmetic or hammer the CA
    /// (renewing after expiry, a zero backoff) with sane ones, saying so.
    fn sanitized(mut self) -> Self {
        let default = Self::default();
        if !(self.refresh_at > 0.0 && self.refresh_at < 1.0) {
            warn!(
                refresh_at = self.refresh_at,
                "refresh_at must be in (0, 1); using 0.5"
            );
            self.refresh_at = default.refresh_at;
        }
        if !(self.jitter >= 0.0 && self.jitter < self.refresh_at) {
            let jitter = default.jitter.min(self.refresh_at / 2.0);
            warn!(
                jitter = self.jitter,
                using = jitter,
                "jitter must be in [0, refresh_at)"
            );
            self.jitter = jitter;
        }
        if self.initial_backoff.is_zero() {
            warn!(
                "initial_backoff must not be zero; using {:?}",
                default.initial_backoff
            );
            self.initial_backoff = default.initial_backoff;
        }
        self.max_backoff = self.max_backoff.max(self.initial_backoff);
        if self.request_timeout.is_zero() {
            warn!(
                "request_timeout must not be zero; using {:?}",
                default.request_timeout
            );
            self.request_timeout = default.request_timeout;
        }
        self
    }
}

// === impl CertManager ===

impl<C: CaClient> CertManager<C> {
    pub fn new(ca: C, config: CertManagerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                ca: Arc::new(ca),
                config: config.sanitized(),
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Returns a currently valid certificate for `id`, waiting for the first
    /// one if needed. Never waits once a CA request has failed: it then
    /// returns the error, while the background task keeps retrying.
    pub async fn fetch(&self, id: &Identity) -> Result<Arc<WorkloadCert>, CertManagerError> {
        let mut slot = self.subscribe(id);
        loop {
            // The borrow holds a lock and is not `Send`: end it before awaiting.
            if let Some(answer) = slot.borrow_and_update().answer(id, Instant::now()) {
                return answer;
            }
            if slot.changed().await.is_err() {
                return Err(CertManagerError::Stopped {
                    identity: id.clone(),
                });
            }
        }
    }

    /// Starts fetching, then rotating, `id`'s certificate in the background;
    /// returns at once. Does nothing if `id` is already managed.
    pub fn prefetch(&self, id: &Identity) {
        self.subscribe(id);
    }

    /// The entry's channel for `id`, creating the entry and its task if needed.
    fn subscribe(&self, id: &Identity) -> watch::Receiver<Slot> {
        let mut entries = self.inner.entries();
        if let Some(entry) = entries.get(id) {
            if !entry.task.is_finished() {
                return entry.slot.clone();
            }
            warn!(identity = %id, "certificate rotation task had stopped; restarting it");
        }
        let (sender, slot) = watch::channel(Slot::default());
        let ca = Arc::clone(&self.inner.ca);
        let task = tokio::spawn(rotate(ca, self.inner.config, id.clone(), sender));
        debug!(identity = %id, "managing certificate");
        let entry = Entry {
            slot: slot.clone(),
            task: task.abort_handle(),
        };
        entries.insert(id.clone(), entry);
        slot
    }
}

impl<C> CertManager<C> {
    /// Stops rotating `id` and drops its certificate and key (the workload
    /// left the node). Fetches of `id` still waiting fail with `Stopped`.
    pub fn forget(&self, id: &Identity) {
        // Dropping the entry aborts its task.
        if self.inner.entries().remove(id).is_some() {
            debug!(identity = %id, "forgot certificate");
        }
    }

    /// A snapshot of every managed identity, sorted by identity.
    pub fn status(&self) -> Vec<CertStatus> {
        let now = Instant::now();
        let mut status: Vec<CertStatus> = self
            .inner
            .entries()
            .iter()
            .map(|(id, entry)| {
                let slot = entry.slot.borrow();
                CertStatus {
                    identity: id.clone(),
                    cert: slot
                        .current
                        .as_ref()
                        .map(|current| current.cert.info.clone()),
                    state: slot.state(now),
                }
            })
            .collect();
        status.sort_by(|a, b| a.identity.cmp(&b.identity));
        status
    }
}

impl<C> Clone for CertManager<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for CertManager<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertManager")
            .field("config", &self.inner.config)
            .field("identities", &self.inner.entries().len())
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl<C> Inner<C> {
    fn entries(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Every critical section is a single map operation, so a panic while
        // the lock was held cannot have left the map half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Entry ===

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Slot ===

impl Slot {
    /// What `fetch` returns for this slot at `now`, or `None` to wait for the
    /// first CA answer.
    fn answer(
        &self,
        id: &Identity,
        now: Instant,
    ) -> Option<Result<Arc<WorkloadCert>, CertManagerError>> {
        match (&self.current, &self.last_error) {
            (Some(current), _) if now < current.expires_at => Some(Ok(Arc::clone(&current.cert))),
            (Some(current), error) => Some(Err(CertManagerError::Expired {
                identity: id.clone(),
                not_after: current.cert.info.not_after,
                error: error.clone().unwrap_or_else(renewal_pending),
            })),
            (None, Some(error)) => Some(Err(CertManagerError::Unavailable {
                identity: id.clone(),
                error: error.clone(),
            })),
            (None, None) => None,
        }
    }

    fn state(&self, now: Instant) -> CertState {
        match (&self.current, &self.last_error) {
            (Some(current), error) if now >= current.expires_at => CertState::Expired {
                error: error.clone().unwrap_or_else(renewal_pending),
            },
            (_, Some(error)) => CertState::Failed {
                error: error.clone(),
            },
            (Some(_), None) => CertState::Available,
            (None, None) => CertState::Initializing,
        }
    }
}

/// The reason given when a certificate expired while its renewal was still in
/// flight (the CA was slow, but has not failed yet).
fn renewal_pending() -> String {
    "the renewal request has not been answered yet".to_owned()
}

// === rotation task ===

/// The body of an identity's task: fetch, publish, sleep, forever. Ends only
/// when aborted (see [`Entry`]).
async fn rotate<C: CaClient>(
    ca: Arc<C>,
    config: CertManagerConfig,
    id: Identity,
    slot: watch::Sender<Slot>,
) {
    let mut backoff = config.initial_backoff;
    loop {
        match request(&*ca, &id, &config).await {
            Ok((current, refresh_in)) => {
                backoff = config.initial_backoff;
                let info = &current.cert.info;
                let rotated = slot.borrow().current.is_some();
                info!(
                    identity = %id,
                    serial = %info.serial,
                    not_after = %Rfc3339(info.not_after),
                    ?refresh_in,
                    "{}",
                    if rotated { "rotated certificate" } else { "issued certificate" },
                );
                slot.send_modify(|slot| {
                    slot.current = Some(current);
                    slot.last_error = None;
                });
                time::sleep(refresh_in).await;
            }
            Err(error) => {
                let retry_in = jittered(backoff, config.jitter);
                warn!(identity = %id, %error, ?retry_in, "certificate request failed; retrying");
                slot.send_modify(|slot| slot.last_error = Some(error));
                time::sleep(retry_in).await;
                backoff = backoff.saturating_mul(2).min(config.max_backoff);
            }
        }
    }
}

/// One CA request, checked and turned into a deadline and a renewal delay.
async fn request<C: CaClient>(
    ca: &C,
    id: &Identity,
    config: &CertManagerConfig,
) -> Result<(Current, Duration), String> {
    let cert = match time::timeout(config.request_timeout, ca.fetch_certificate(id)).await {
        Err(_elapsed) => {
            let timeout = config.request_timeout;
            return Err(format!("the CA did not answer within {timeout:?}"));
        }
        Ok(Err(error)) => return Err(error_chain(&*error)),
        Ok(Ok(cert)) => cert,
    };
    // Never serve a certificate under the wrong name, whatever the CA says.
    if cert.identity != *id {
        return Err(format!(
            "the CA issued a certificate for {} instead",
            cert.identity
        ));
    }
    let schedule = schedule(&cert.info, config, SystemTime::now(), fastrand::f64())?;
    let expires_at = Instant::now()
        .checked_add(schedule.remaining)
        .ok_or_else(|| {
            format!(
                "the certificate's not_after {} is out of range",
                Rfc3339(cert.info.not_after)
            )
        })?;
    let current = Current {
        cert: Arc::new(cert),
        expires_at,
    };
    Ok((current, schedule.refresh_in))
}

/// When a certificate issued with `info` expires and when to renew it,
/// relative to the wall-clock `now`; `jitter_sample` is uniform in [0, 1).
fn schedule(
    info: &CertInfo,
    config: &CertManagerConfig,
    now: SystemTime,
    jitter_sample: f64,
) -> Result<Schedule, String> {
    let remaining = info
        .not_after
        .duration_since(now)
        .ok()
        .filter(|remaining| !remaining.is_zero())
        .ok_or_else(|| {
            format!(
                "the CA issued a certificate that expired at {}: is this node's clock or the CA's wrong?",
                Rfc3339(info.not_after)
            )
        })?;
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .map_err(|_| {
            format!(
                "the CA issued a certificate valid from {} to {}, which is backwards",
                Rfc3339(info.not_before),
                Rfc3339(info.not_after)
            )
        })?;
    // Renew once `refresh_at` of the lifetime has passed, i.e. when
    // `1 - refresh_at` of it is left, earlier by the jitter.
    let keep = lifetime.mul_f64(1.0 - config.refresh_at);
    let jitter = lifetime.mul_f64(config.jitter * jitter_sample);
    let mut refresh_in = remaining.saturating_sub(keep).saturating_sub(jitter);
    if refresh_in.is_zero() {
        // Less is left than we keep in reserve (clock skew, a backdated cert):
        // renew part-way through what is left rather than at once, so that a
        // CA that keeps issuing such certificates is not asked in a hot loop.
        refresh_in = remaining.mul_f64(config.refresh_at);
    }
    Ok(Schedule {
        remaining,
        refresh_in,
    })
}

/// `delay` shortened by a random part of `jitter` (a fraction below 1).
fn jittered(delay: Duration, jitter: f64) -> Duration {
    delay.saturating_sub(delay.mul_f64(jitter * fastrand::f64()))
}

/// An error and all its sources, joined, since only the text is kept.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// === impl Rfc3339 ===

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let utc = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|since| ::time::Duration::try_from(since).ok())
            .and_then(|since| ::time::OffsetDateTime::UNIX_EPOCH.checked_add(since));
        match utc {
            Some(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            // Before 1970 or after 9999: no certificate we issue, but say something.
            None => write!(f, "{:?}", self.0),
        }
    }
}
