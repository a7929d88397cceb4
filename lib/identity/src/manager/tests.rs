//! The manager against an in-process CA, on Tokio's paused clock: the test
//! sleeps, the runtime jumps to the next timer, and the rotation tasks run
//! exactly when their deadlines come, however far apart they are.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::ca::Ca;

const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn config() -> CertManagerConfig {
    CertManagerConfig {
        refresh_at: 0.5,
        jitter: 0.05,
        initial_backoff: SECOND,
        max_backoff: 60 * SECOND,
        request_timeout: 10 * SECOND,
    }
}

/// A [`CaClient`] over a real in-process CA that records every call and can
/// be made to fail, to be slow, or to issue a certificate for someone else.
#[derive(Clone)]
struct TestCa(Arc<TestCaState>);

struct TestCaState {
    ca: Ca,
    ttl: Duration,
    failing: AtomicBool,
    delay: Mutex<Duration>,
    issue_as: Mutex<Option<Identity>>,
    calls: Mutex<Vec<(Identity, Instant)>>,
}

impl TestCa {
    fn new(ttl: Duration) -> Self {
        Self(Arc::new(TestCaState {
            ca: Ca::self_signed("cluster.local", 24 * HOUR).unwrap(),
            ttl,
            failing: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            issue_as: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }))
    }

    fn calls(&self) -> usize {
        self.0.calls.lock().unwrap().len()
    }

    /// When each request for `id` was made.
    fn calls_for(&self, id: &Identity) -> Vec<Instant> {
        let calls = self.0.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(called, _)| called == id)
            .map(|(_, at)| *at)
            .collect()
    }

    fn set_failing(&self, failing: bool) {
        self.0.failing.store(failing, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        *self.0.delay.lock().unwrap() = delay;
    }
}

impl CaClient for TestCa {
    fn fetch_certificate(
        &self,
        id: &Identity,
    ) -> impl Future<Output = Result<WorkloadCert, BoxError>> + Send {
        let state = Arc::clone(&self.0);
        let id = id.clone();
        async move {
            state
                .calls
                .lock()
                .unwrap()
                .push((id.clone(), Instant::now()));
            let delay = *state.delay.lock().unwrap();
            time::sleep(delay).await;
            if state.failing.load(Ordering::SeqCst) {
                return Err("connect to 10.0.0.1:15012: connection refused".into());
            }
            let subject = state.issue_as.lock().unwrap().clone().unwrap_or(id);
            Ok(state.ca.issue(&subject, state.ttl)?)
        }
    }
}

/// Bounds, as paused-clock instants, on when `cert` has `left` (a fraction) of
/// its lifetime left, given that it was requested at `start` (`wall_start` on
/// the wall clock) and arrived before now.
fn point_in_life(
    cert: &WorkloadCert,
    start: Instant,
    wall_start: SystemTime,
    left: f64,
) -> (Instant, Instant) {
    let info = &cert.info;
    let lifetime = info.not_after.duration_since(info.not_before).unwrap();
    let reserve = lifetime.mul_f64(left);
    // The wall clock has moved (a little) since the request; the paused one not.
    let earliest = info.not_after.duration_since(SystemTime::now()).unwrap() - reserve;
    let latest = info.not_after.duration_since(wall_start).unwrap() - reserve;
    (start + earliest, start + latest)
}

fn state_of(manager: &CertManager<TestCa>, id: &Identity) -> CertStatus {
    let status = manager.status();
    status
        .into_iter()
        .find(|status| status.identity == *id)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn rotates_at_half_life_minus_jitter() {
    let ca = TestCa::new(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    let (start, wall_start) = (Instant::now(), SystemTime::now());

    let first = manager.fetch(&a).await.unwrap();
    assert_eq!(ca.calls(), 1);
    assert_eq!(first.identity, a);
    // Refreshes happen at half-life, earlier by up to 5% of the lifetime.
    let (earliest, _) = point_in_life(&first, start, wall_start, 0.5 + 0.05);
    let (_, latest) = point_in_life(&first, start, wall_start, 0.5);

    time::sleep_until(earliest - SECOND).await;
    assert_eq!(
        ca.calls(),
        1,
        "renewed before half-life minus the largest jitter"
    );
    let same = manager.fetch(&a).await.unwrap();
    assert_eq!(same.info.serial, first.info.serial);

    time::sleep_until(latest + SECOND).await;
    assert_eq!(ca.calls(), 2, "not renewed at half-life");
    let renewed = manager.fetch(&a).await.unwrap();
    assert_ne!(renewed.info.serial, first.info.serial);
    let status = state_of(&manager, &a);
    assert_eq!(status.state, CertState::Available);
    assert_eq!(status.cert.unwrap().serial, renewed.info.serial);
}

#[tokio::test(start_paused = true)]
async fn coalesces_concurrent_fetches_into_one_request() {
    let ca = TestCa::new(HOUR);
    ca.set_delay(2 * SECOND);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");

    let fetches: Vec<_> = (0..50)
        .map(|_| {
            let (manager, a) = (manager.clone(), a.clone());
            tokio::spawn(async move { manager.fetch(&a).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(state_of(&manager, &a).state, CertState::Initializing);
    let mut serials = Vec::new();
    for fetch in fetches {
        serials.push(fetch.await.unwrap().unwrap().info.serial.clone());
    }
    assert_eq!(
        ca.calls(),
        1,
        "50 concurrent fetches must cost one CA request"
    );
    assert!(serials.iter().all(|serial| *serial == serials[0]));

    // Coalescing is per identity: two others cost one request each.
    let b = id("spiffe://cluster.local/ns/default/sa/b");
    let c = id("spiffe://cluster.local/ns/other/sa/c");
    let (cert_b, cert_c) = tokio::join!(manager.fetch(&b), manager.fetch(&c));
    let (cert_b, cert_c) = (cert_b.unwrap(), cert_c.unwrap());
    assert_eq!(
        (cert_b.identity.clone(), cert_c.identity.clone()),
        (b.clone(), c.clone())
    );
    assert_ne!(cert_b.info.serial, cert_c.info.serial);
    assert_eq!(ca.calls(), 3);
    assert_eq!((ca.calls_for(&b).len(), ca.calls_for(&c).len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn fails_closed_after_expiry_and_recovers() {
    let ca = TestCa::new(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    let (start, wall_start) = (Instant::now(), SystemTime::now());
    let first = manager.fetch(&a).await.unwrap();
    let (_, expiry) = point_in_life(&first, start, wall_start, 0.0);

    // Past the refresh point the CA fails, but the certificate is still valid.
    ca.set_failing(true);
    time::sleep_until(expiry - 5 * 60 * SECOND).await;
    assert!(ca.calls() > 2, "renewal is retried while the CA fails");
    let cached = manager.fetch(&a).await.unwrap();
    assert_eq!(cached.info.serial, first.info.serial);
    let status = state_of(&manager, &a);
    assert!(
        matches!(&status.state, CertState::Failed { error } if error.contains("connection refused")),
        "{status:?}"
    );

    // Once it expires, fetch fails at once (no paused time passes) and says why.
    time::sleep_until(expiry + SECOND).await;
    let asked = Instant::now();
    let error = manager.fetch(&a).await.unwrap_err();
    assert_eq!(Instant::now(), asked, "an expired fetch must not wait");
    assert!(
        matches!(error, CertManagerError::Expired { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        "certificate for spiffe://cluster.local/ns/default/sa/a expired at ",
        "connect to 10.0.0.1:15012: connection refused",
        "connections using this identity fail until the CA is reachable",
    ] {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let status = state_of(&manager, &a);
    assert!(
        matches!(status.state, CertState::Expired { .. }),
        "{status:?}"
    );
    assert_eq!(status.cert.unwrap().serial, first.info.serial);

    // The CA comes back: the next retry (at most max_backoff away) succeeds.
    ca.set_failing(false);
    time::sleep(config().max_backoff + SECOND).await;
    let renewed = manager.fetch(&a).await.unwrap();
    assert_ne!(renewed.info.serial, first.info.serial);
    assert_eq!(state_of(&manager, &a).state, CertState::Available);
}

#[tokio::test(start_paused = true)]
async fn first_failure_names_the_ca_error_and_retries_with_backoff() {
    let ca = TestCa::new(HOUR);
    ca.set_failing(true);
    let config = CertManagerConfig {
        jitter: 0.0,
        max_backoff: 8 * SECOND,
        ..config()
    };
    let manager = CertManager::new(ca.clone(), config);
    let a = id("spiffe://cluster.local/ns/default/sa/a");

    let error = manager.fetch(&a).await.unwrap_err();
    assert!(
        matches!(error, CertManagerError::Unavailable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("spiffe://cluster.local/ns/default/sa/a"),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");
    // A second fetch reports the same failure without asking the CA again.
    assert!(manager.fetch(&a).await.is_err());
    assert_eq!(ca.calls(), 1);
    let status = state_of(&manager, &a);
    assert!(
        matches!(status.state, CertState::Failed { .. }),
        "{status:?}"
    );
    assert_eq!(status.cert, None);

    time::sleep(60 * SECOND).await;
    let calls = ca.calls_for(&a);
    let gaps: Vec<u64> = calls.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(
        gaps[..5],
        [1, 2, 4, 8, 8],
        "backoff doubles up to max_backoff"
    );

    ca.set_failing(false);
    time::sleep(config.max_backoff + SECOND).await;
    assert_eq!(manager.fetch(&a).await.unwrap().identity, a);
    assert_eq!(state_of(&manager, &a).state, CertState::Available);
}

#[tokio::test(start_paused = true)]
async fn backoff_jitter_only_shortens_the_wait() {
    let ca = TestCa::new(HOUR);
    ca.set_failing(true);
    let config = CertManagerConfig {
        jitter: 0.2,
        ..config()
    };
    let manager = CertManager::new(ca.clone(), config);
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    manager.prefetch(&a);

    time::sleep(10 * 60 * SECOND).await;
    let calls = ca.calls_for(&a);
    let mut backoff = config.initial_backoff;
    for gap in calls.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap <= backoff && gap >= backoff.mul_f64(0.8),
            "{gap:?} vs {backoff:?}"
        );
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

#[tokio::test(start_paused = true)]
async fn forget_stops_rotation_and_drops_the_entry() {
    let ca = TestCa::new(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    let b = id("spiffe://cluster.local/ns/default/sa/b");
    manager.fetch(&a).await.unwrap();
    manager.fetch(&b).await.unwrap();

    manager.forget(&a);
    let managed: Vec<Identity> = manager.status().into_iter().map(|s| s.identity).collect();
    assert_eq!(managed, std::slice::from_ref(&b));
    time::sleep(3 * HOUR).await;
    assert_eq!(
        ca.calls_for(&a).len(),
        1,
        "a forgotten identity is not renewed"
    );
    assert!(
        ca.calls_for(&b).len() >= 6,
        "the other identity keeps rotating"
    );

    // Fetching it again starts over.
    assert_eq!(manager.fetch(&a).await.unwrap().identity, a);
    assert_eq!(ca.calls_for(&a).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn forget_wakes_a_waiting_fetch() {
    let ca = TestCa::new(HOUR);
    ca.set_delay(5 * SECOND);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");

    let waiting = tokio::spawn({
        let (manager, a) = (manager.clone(), a.clone());
        async move { manager.fetch(&a).await }
    });
    tokio::task::yield_now().await;
    manager.forget(&a);
    let error = waiting.await.unwrap().unwrap_err();
    assert_eq!(error, CertManagerError::Stopped { identity: a });
}

#[tokio::test(start_paused = true)]
async fn dropping_the_manager_aborts_its_tasks() {
    let ca = TestCa::new(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    manager.fetch(&a).await.unwrap();
    manager.prefetch(&id("spiffe://cluster.local/ns/default/sa/b"));
    let clone = manager.clone();

    drop(manager);
    time::sleep(3 * HOUR).await;
    assert!(
        ca.calls_for(&a).len() > 1,
        "a live clone keeps rotation going"
    );

    drop(clone);
    tokio::task::yield_now().await;
    assert_eq!(
        Arc::strong_count(&ca.0),
        1,
        "a rotation task outlived the manager"
    );
    let calls = ca.calls();
    time::sleep(3 * HOUR).await;
    assert_eq!(ca.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn refuses_a_certificate_for_another_identity() {
    let ca = TestCa::new(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    let impostor = id("spiffe://cluster.local/ns/default/sa/impostor");
    *ca.0.issue_as.lock().unwrap() = Some(impostor);

    let message = manager.fetch(&a).await.unwrap_err().to_string();
    assert!(
        message.contains(
            "issued a certificate for spiffe://cluster.local/ns/default/sa/impostor instead"
        ),
        "{message}"
    );

    *ca.0.issue_as.lock().unwrap() = None;
    // The retry comes within initial_backoff; a tie with it would be a race.
    time::sleep(config().initial_backoff + SECOND).await;
    assert_eq!(manager.fetch(&a).await.unwrap().identity, a);
}

#[tokio::test(start_paused = true)]
async fn a_hung_ca_request_times_out() {
    let ca = TestCa::new(HOUR);
    ca.set_delay(HOUR);
    let manager = CertManager::new(ca.clone(), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");

    let start = Instant::now();
    let message = manager.fetch(&a).await.unwrap_err().to_string();
    assert!(message.contains("did not answer within 10s"), "{message}");
    assert_eq!(Instant::now() - start, config().request_timeout);
}

#[test]
fn fetch_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let manager = CertManager::new(TestCa::new(HOUR), config());
    let a = id("spiffe://cluster.local/ns/default/sa/a");
    assert_send(&manager.fetch(&a));
}

// === schedule ===

fn info(not_before: SystemTime, not_after: SystemTime) -> CertInfo {
    CertInfo {
        serial: "01".to_owned(),
        not_before,
        not_after,
        uri_sans: vec![],
    }
}

#[test]
fn schedule_renews_at_half_life_minus_jitter() {
    let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
    let fresh = info(now, now + 24 * HOUR);
    let config = config();

    let no_jitter = schedule(&fresh, &config, now, 0.0).unwrap();
    assert_eq!(no_jitter.remaining, 24 * HOUR);
    assert_eq!(no_jitter.refresh_in, 12 * HOUR);
    let most_jitter = schedule(&fresh, &config, now, 1.0).unwrap();
    assert_eq!(
        most_jitter.refresh_in,
        12 * HOUR - (24 * HOUR).mul_f64(0.05)
    );

    // Issued an hour ago: the refresh point is measured from not_before.
    let older = schedule(&fresh, &config, now + HOUR, 0.0).unwrap();
    assert_eq!((older.remaining, older.refresh_in), (23 * HOUR, 11 * HOUR));
}

#[test]
fn schedule_never_renews_in_a_hot_loop() {
    let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
    // Only a quarter of the lifetime is left (skewed clocks): renew half-way
    // through what remains, not at once.
    let late = info(now - 3 * HOUR, now + HOUR);
    let schedule = schedule(&late, &config(), now, 0.5).unwrap();
    assert_eq!(schedule.refresh_in, HOUR / 2);
}

#[test]
fn schedule_refuses_expired_and_backwards_certificates() {
    let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
    let expired = schedule(&info(now - 2 * HOUR, now), &config(), now, 0.0).unwrap_err();
    assert!(
        expired.contains("is this node's clock or the CA's wrong?"),
        "{expired}"
    );
    let backwards = schedule(&info(now + 2 * HOUR, now + HOUR), &config(), now, 0.0);
    assert!(backwards.unwrap_err().contains("backwards"));
}

#[test]
fn config_is_sanitized() {
    let config = CertManagerConfig {
        refresh_at: 1.5,
        jitter: f64::NAN,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        request_timeout: Duration::ZERO,
    }
    .sanitized();
    let default = CertManagerConfig::default();
    assert_eq!(
        config,
        CertManagerConfig {
            max_backoff: default.initial_backoff,
            ..default
        }
    );
}

#[test]
fn formats_times_as_rfc3339() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(Rfc3339(time).to_string(), "2023-11-14T22:13:20Z");
}
