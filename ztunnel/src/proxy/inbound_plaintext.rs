//! Inbound plaintext (15006): connections from clients outside the mesh,
//! redirected to the proxy by the pod's capture rules.
//!
//! The original destination (from conntrack) must be this pod. The client
//! proved no identity, so policy sees none: a STRICT peer-authentication
//! policy (a DENY of every connection without a principal) refuses it. An
//! allowed connection goes on to the app; a refused one is closed, because a
//! plaintext client has no way to receive a reason.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{Instrument, debug_span};

use super::access_log::{AccessLog, Direction};
use super::inbound::authorize;
use super::{Inner, ProxyError};
use crate::connections::{PolicyCheck, Protocol};
use crate::state::Connection;

// === impl Inner ===

impl Inner {
    pub(super) async fn inbound_plaintext(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let span = debug_span!("inbound_plaintext", src.addr = %peer);
        async move {
            let mut log = AccessLog::new(Direction::Inbound, peer);
            let result = match self.admit_plaintext(&tcp, peer, &mut log).await {
                Ok((mut app, conn)) => {
                    let check = PolicyCheck {
                        workload_uid: self.workload_uid.clone(),
                        conn,
                    };
                    let tracked = log.track(&self.connections, Protocol::Tcp, Some(check));
                    tracked
                        .pipe(hbone::copy_bidirectional(&mut tcp, &mut app))
                        .await
                        .map_err(ProxyError::from)
                }
                Err(error) => Err(error),
            };
            log.finish(result.as_ref().copied());
        }
        .instrument(span)
        .await;
    }

    async fn admit_plaintext(
        &self,
        tcp: &TcpStream,
        peer: SocketAddr,
        log: &mut AccessLog,
    ) -> Result<(TcpStream, Connection), ProxyError> {
        let dst = original_dst(tcp)?;
        log.dst_addr = Some(dst);
        let state = self.state.snapshot();
        let workload = self.local_workload(&state)?;
        log.destination(&workload);
        if let Some(source) = state.workload_by_address(&workload.network, peer.ip()) {
            log.peer(source);
        }
        if !workload.addresses.contains(&dst.ip()) {
            return Err(ProxyError::NotThisPod {
                dst,
                workload: workload.name.clone(),
            });
        }
        let conn = Connection::new(peer.ip(), None, dst.ip(), dst.port());
        authorize(&state, &workload, &conn)?;
        Ok((self.connect_plaintext(dst).await?, conn))
    }
}

/// Where a redirected connection was going (`SO_ORIGINAL_DST`). A socket
/// that was not redirected has either no answer (no conntrack entry) or its
/// own local address as the answer; both are reported as such, since
/// serving them would connect the proxy to itself.
pub(super) fn original_dst(tcp: &TcpStream) -> Result<SocketAddr, ProxyError> {
    let local = tcp.local_addr().map_err(ProxyError::OriginalDst)?;
    let original = crate::capture::original_dst(tcp, local).map_err(ProxyError::OriginalDst)?;
    check_redirected(original, local)
}

fn check_redirected(original: SocketAddr, local: SocketAddr) -> Result<SocketAddr, ProxyError> {
    if original == local {
        return Err(ProxyError::NotRedirected(local));
    }
    Ok(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_the_listener_itself_was_not_redirected() {
        let listener: SocketAddr = "10.0.0.2:15006".parse().unwrap();
        let app: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        assert_eq!(check_redirected(app, listener).unwrap(), app);
        let error = check_redirected(listener, listener).unwrap_err();
        assert!(error.to_string().contains("not redirected"), "{error}");
    }

    #[tokio::test]
    async fn a_plain_socket_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_client, (accepted, _)) = (client.unwrap(), accepted.unwrap());
        let error = original_dst(&accepted).unwrap_err();
        // Without conntrack: no answer; with it: the listener's own address.
        assert!(
            matches!(
                error,
                ProxyError::OriginalDst(_) | ProxyError::NotRedirected(_)
            ),
            "{error}"
        );
    }
}
