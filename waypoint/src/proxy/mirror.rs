//! `RequestMirror`: a copy of the request goes to another service, and its
//! answer is ignored.
//!
//! As Envoy mirrors (and so as Istio users know it):
//! - the copy's host gets `-shadow` appended (`b.ns-b:8080` becomes
//!   `b.ns-b-shadow:8080`), so that the mirror's app and logs
//!   can tell copies from real traffic;
//! - it is fire and forget: the copy runs on a task of its own, within the
//!   rule's timeout (or [`DEFAULT_MIRROR_TIMEOUT`]), its answer is read
//!   and dropped, and the client's request never waits for it;
//! - the filter's fraction is rolled per request.
//!
//! Only a body that was kept whole can be sent twice, so a rule with a
//! mirror keeps bodies up to the replay limit, as a rule with retries
//! does; a larger body is sent once, to the real backend, and not
//! mirrored (the debug log says so).

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use identity::Identity;
use tracing::debug;
use workload::State;

use super::body::{KeptBody, UpstreamBody};
use super::upstream::Upstreams;
use super::{CertSource, Inner};
use crate::route::RequestMirror;

/// A mirrored request's deadline when its rule sets no timeout: Envoy's
/// default route timeout.
pub(crate) const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

// === impl Inner ===

impl Inner {
    /// Sends a copy of the request (`head` already prepared for the
    /// upstream, `body` kept) to each of `mirrors`, in the background.
    pub(super) fn mirror(
        &self,
        state: &State,
        mirrors: &[RequestMirror],
        head: &http::request::Parts,
        body: &KeptBody,
        deadline: Option<Duration>,
    ) {
        for mirror in mirrors {
            let target = &mirror.backend;
            let Some(service) = state.services().find(|s| *s.hostname == *target.hostname) else {
                debug!(mirror = %target.hostname, "mirror backend is not a known service; not mirrored");
                continue;
            };
            let endpoints = state.endpoints(service);
            let Some(endpoint) =
                self.upstreams
                    .choose_endpoint(endpoints, service, target.port, &[])
            else {
                debug!(mirror = %target.hostname, "mirror backend has no healthy endpoint; not mirrored");
                continue;
            };
            let mut request = super::attempts::rebuild(head, body);
            shadow(&mut request);
            let copy = Copy {
                upstreams: self.upstreams.clone(),
                certs: self.certs.clone(),
                identity: self.identity.clone(),
                deadline: deadline.unwrap_or(DEFAULT_MIRROR_TIMEOUT),
            };
            tokio::spawn(copy.send(endpoint, request));
        }
    }
}

/// What a mirrored request needs once the client's request has moved on.
struct Copy {
    upstreams: Arc<Upstreams>,
    certs: Arc<dyn CertSource>,
    identity: Identity,
    deadline: Duration,
}

impl Copy {
    async fn send(self, endpoint: super::upstream::Endpoint, request: Request<UpstreamBody>) {
        let addr = endpoint.addr;
        let exchange = async {
            let cert = super::CertRequest::new(&*self.certs, &self.identity);
            let response = self.upstreams.send(&endpoint, cert, request).await?;
            let status = response.status();
            // Read to the end so that the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<_, super::upstream::UpstreamError>(status)
        };
        match tokio::time::timeout(self.deadline, exchange).await {
            Ok(Ok(status)) => debug!(upstream.addr = %addr, status = status.as_u16(), "mirrored"),
            Ok(Err(error)) => debug!(upstream.addr = %addr, %error, "mirrored request failed"),
            Err(_) => {
                debug!(upstream.addr = %addr, deadline = ?self.deadline, "mirrored request timed out")
            }
        }
    }
}

/// Marks `request` as a copy: `-shadow` after the host of its authority
/// (HTTP/2) and of its `Host` header (HTTP/1).
fn shadow(request: &mut Request<UpstreamBody>) {
    if let Some(authority) = request.uri().authority()
        && let Ok(shadowed) = Authority::try_from(shadow_host(authority.as_str()))
    {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = Some(shadowed);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    if let Some(host) = request.headers().get(HOST).and_then(|h| h.to_str().ok())
        && let Ok(shadowed) = HeaderValue::from_str(&shadow_host(host))
    {
        request.headers_mut().insert(HOST, shadowed);
    }
}

/// `host[:port]` with `-shadow` after the host: `b.ns-b:8080` becomes
/// `b.ns-b-shadow:8080`. An IPv6 literal keeps its brackets whole.
pub(crate) fn shadow_host(authority: &str) -> String {
    let port_at = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => colon,
        _ => authority.len(),
    };
    let (host, port) = authority.split_at(port_at);
    format!("{host}-shadow{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_suffix_goes_after_the_host_before_the_port() {
        assert_eq!(shadow_host("b.ns-b:8080"), "b.ns-b-shadow:8080");
        assert_eq!(shadow_host("b.ns-b"), "b.ns-b-shadow");
        assert_eq!(
            shadow_host("b.ns-b.svc.cluster.local:80"),
            "b.ns-b.svc.cluster.local-shadow:80"
        );
        assert_eq!(shadow_host("[fd00::1]:8080"), "[fd00::1]-shadow:8080");
        assert_eq!(shadow_host("[fd00::1]"), "[fd00::1]-shadow");
    }

    #[test]
    fn a_copy_is_marked_in_its_host_header_and_its_authority() {
        let mut http1 = Request::new(UpstreamBody::replay(&KeptBody::default()));
        http1
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("b.ns-b:8080"));
        shadow(&mut http1);
        assert_eq!(http1.headers()[HOST], "b.ns-b-shadow:8080");

        let mut http2 = Request::new(UpstreamBody::replay(&KeptBody::default()));
        *http2.uri_mut() = Uri::from_static("http://b.ns-b:8080/x?y=1");
        shadow(&mut http2);
        assert_eq!(http2.uri(), "http://b.ns-b-shadow:8080/x?y=1");
    }
}
