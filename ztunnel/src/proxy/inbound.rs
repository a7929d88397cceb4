//! Inbound HBONE (15008): tunnels from other proxies and waypoints to this
//! pod's apps.
//!
//! TLS: the pod's certificate rotates, so the server config is not fixed at
//! startup. Each accepted connection fetches the current certificate (the
//! cert source caches it) and uses the rustls config built for that
//! certificate generation, rebuilding it only when the certificate changed.
//!
//! Each `CONNECT`:
//! 1. `:authority` must be `<ip>:<port>` naming one of this pod's addresses
//!    (and not one of the proxy's own ports), else 400;
//! 2. L4 policy for this pod, with the peer's proven identity, else 401;
//! 3. connect to the app at `<pod-ip>:<port>` through the connector, else
//!    503;
//! 4. answer 200 and pipe.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hbone::{ConnectHandler, InboundConnect, Rejection, Server};
use identity::WorkloadCert;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{Instrument, debug, debug_span, info};

use super::access_log::{AccessLog, Direction};
use super::{Inner, ProxyError};
use crate::authz::{self, Decision};
use crate::connections::{PolicyCheck, Protocol};
use crate::state::{Connection, State, Workload};

/// Ports an authority may not name: connecting to them from inside the pod
/// would hand the tunnel's bytes back to the proxy.
const PROXY_PORTS: [u16; 3] = [
    super::OUTBOUND_PORT,
    super::INBOUND_PLAINTEXT_PORT,
    super::INBOUND_HBONE_PORT,
];

/// The server config of the certificate generation last seen.
#[derive(Debug, Default)]
pub(super) struct TlsCache {
    current: Mutex<Option<(Arc<WorkloadCert>, Arc<rustls::ServerConfig>)>>,
}

// === impl TlsCache ===

impl TlsCache {
    /// The config presenting `cert`: the cached one if `cert` is the same
    /// certificate (same `Arc`, as the manager hands out until rotation).
    fn config_for(
        &self,
        cert: Arc<WorkloadCert>,
    ) -> Result<Arc<rustls::ServerConfig>, identity::tls::TlsError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, config)) = &*current
            && Arc::ptr_eq(cached, &cert)
        {
            return Ok(config.clone());
        }
        let config = Arc::new(identity::tls::server_config(&cert)?);
        debug!(identity = %cert.identity, serial = %cert.info.serial, "inbound TLS config for a new certificate");
        *current = Some((cert, config.clone()));
        Ok(config)
    }
}

/// Hands each `CONNECT` of a connection to the proxy.
struct Handler(Arc<Inner>);

impl ConnectHandler for Handler {
    async fn handle(&self, request: InboundConnect) {
        self.0.inbound(request).await;
    }
}

// === impl Inner ===

impl Inner {
    /// One HBONE connection: TLS with the current certificate, then HTTP/2.
    pub(super) async fn serve_hbone(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        let tls = match self.inbound_tls_config().await {
            Ok(tls) => tls,
            Err(error) => {
                // No handshake happened, so there is no CONNECT to log yet.
                info!(%error, src.addr = %peer, "refusing an HBONE connection");
                return;
            }
        };
        let config = self.config.hbone_server.clone();
        let server = Server::new(tls, Arc::new(Handler(self)), config);
        server.serve_connection(tcp, peer, drain).await;
    }

    async fn inbound_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
        let workload = self.local_workload(&self.state.snapshot())?;
        let cert = self.certificate(&workload.identity).await?;
        self.inbound_tls
            .config_for(cert)
            .map_err(|e| ProxyError::Hbone(e.into()))
    }

    async fn inbound(&self, request: InboundConnect) {
        let mut log = AccessLog::new(Direction::Inbound, request.peer_addr);
        log.src_identity = Some(request.peer_identity.clone());
        let span =
            debug_span!("inbound", src.addr = %request.peer_addr, authority = %request.authority);
        async {
            let (mut app, conn) = match self.admit(&request, &mut log).await {
                Ok(admitted) => admitted,
                Err((rejection, error)) => {
                    request.reject(rejection);
                    log.finish(Err(&error));
                    return;
                }
            };
            let mut tunnel = match request.accept() {
                Ok(tunnel) => tunnel,
                Err(error) => return log.finish(Err(&ProxyError::Answer(error))),
            };
            let check = PolicyCheck {
                workload_uid: self.workload_uid.clone(),
                conn,
            };
            let tracked = log.track(&self.connections, Protocol::Hbone, Some(check));
            let result = tracked
                .pipe(hbone::copy_tunnel(&mut tunnel, &mut app))
                .await;
            log.finish(result.map_err(ProxyError::from).as_ref().copied());
        }
        .instrument(span)
        .await;
    }

    /// Everything before the 200: authority, policy, the app connection.
    async fn admit(
        &self,
        request: &InboundConnect,
        log: &mut AccessLog,
    ) -> Result<(TcpStream, Connection), (Rejection, ProxyError)> {
        let state = self.state.snapshot();
        let workload = self
            .local_workload(&state)
            .map_err(|e| (Rejection::Unavailable, e))?;
        log.destination(&workload);
        if let Some(source) = state.workload_by_address(&workload.network, request.peer_addr.ip()) {
            log.peer(source);
        }
        let dst =
            authority_of(&request.authority, &workload).map_err(|e| (Rejection::BadRequest, e))?;
        log.dst_addr = Some(dst);
        log.dst_hbone_addr = Some(dst);
        let conn = Connection::new(
            request.peer_addr.ip(),
            Some(request.peer_identity.clone()),
            dst.ip(),
            dst.port(),
        );
        authorize(&state, &workload, &conn).map_err(|e| (Rejection::Denied, e))?;
        let app = self
            .connect_plaintext(dst)
            .await
            .map_err(|e| (Rejection::Unavailable, e))?;
        Ok((app, conn))
    }
}

/// The destination an `:authority` names, if it is one of `workload`'s
/// addresses on an app port.
fn authority_of(authority: &str, workload: &Workload) -> Result<SocketAddr, ProxyError> {
    let bad = |reason| ProxyError::BadAuthority {
        authority: authority.to_owned(),
        reason,
    };
    let dst: SocketAddr = authority.parse().map_err(|_| bad("expected <ip>:<port>"))?;
    if !workload.addresses.contains(&dst.ip()) {
        return Err(ProxyError::NotThisPod {
            dst,
            workload: workload.name.clone(),
        });
    }
    if PROXY_PORTS.contains(&dst.port()) {
        return Err(bad("names one of the proxy's own ports"));
    }
    Ok(dst)
}

/// L4 policy of `workload` for `conn`, with its waypoint let in; dry-run
/// findings are logged.
pub(super) fn authorize(
    state: &State,
    workload: &Workload,
    conn: &Connection,
) -> Result<(), ProxyError> {
    let verdict = authz::waypoint::authorize(state, workload, conn);
    if !verdict.dry_run.is_empty() {
        info!(policies = ?verdict.dry_run, allowed = verdict.decision.is_allowed(), "dry-run policies would have decided differently");
    }
    match verdict.decision {
        Decision::Allow => Ok(()),
        denied => Err(ProxyError::Denied(denied.reason())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pod() -> Workload {
        let w = proto::workload::Workload {
            uid: "Kubernetes//Pod/b/b".into(),
            name: "b".into(),
            namespace: "b".into(),
            addresses: vec![vec![10, 0, 0, 2]],
            ..Default::default()
        };
        Workload::try_from(w).unwrap()
    }

    #[test]
    fn the_tls_config_follows_the_certificate_generation() {
        let ca = identity::Ca::self_signed("cluster.local", Duration::from_secs(7200)).unwrap();
        let id = pod().identity;
        let first = Arc::new(ca.issue(&id, Duration::from_secs(3600)).unwrap());
        let rotated = Arc::new(ca.issue(&id, Duration::from_secs(3600)).unwrap());
        let cache = TlsCache::default();
        let config = cache.config_for(first.clone()).unwrap();
        // The same certificate reuses its config; a rotated one replaces it.
        assert!(Arc::ptr_eq(&config, &cache.config_for(first).unwrap()));
        let next = cache.config_for(rotated.clone()).unwrap();
        assert!(!Arc::ptr_eq(&config, &next));
        assert!(Arc::ptr_eq(&next, &cache.config_for(rotated).unwrap()));
    }

    #[test]
    fn the_authority_must_name_this_pod_on_an_app_port() {
        let pod = pod();
        assert_eq!(
            authority_of("10.0.0.2:8080", &pod).unwrap(),
            "10.0.0.2:8080".parse().unwrap()
        );
        for (authority, expected) in [
            ("10.0.0.3:8080", "not an address of this pod"),
            ("10.0.0.2", "expected <ip>:<port>"),
            ("b.svc:80", "expected <ip>:<port>"),
            ("10.0.0.2:15008", "own ports"),
            ("10.0.0.2:15006", "own ports"),
        ] {
            let error = authority_of(authority, &pod).unwrap_err().to_string();
            assert!(error.contains(expected), "{authority}: {error}");
        }
    }
}
