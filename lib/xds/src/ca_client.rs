//! The proxies' CA client: `istio.v1.auth.IstioCertificateService/
//! CreateCertificate` over the control plane channel, sent exactly as Istio's
//! ztunnel sends it, so that it works against istiod-lite and istiod alike.
//!
//! # Per-request sequence
//!
//! ```text
//!  key + CSR for the identity (empty subject, one URI SAN)
//!  request {csr, validity_duration: ttl,
//!           metadata: {ImpersonatedIdentity: id} (node proxies only)}
//!          + authorization: Bearer <token read now>
//!  response cert_chain: PEM strings, leaf first, the CA's root last
//!  check: leaf's URI SAN == id, key matches the leaf,
//!         leaf chains to the roots of the configured root file
//!  WorkloadCert {leaf + intermediates, key, roots: the configured file's}
//! ```
//!
//! The trust roots come from the configured root file, never from the
//! response: a CA must not be able to tell a proxy whom to trust. A response
//! whose chain does not lead to those roots is refused here, where the cause
//! is clear, rather than in every handshake that would use the certificate.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use identity::manager::BoxError;
use identity::{CaClient, CertError, Identity, WorkloadCert};
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use proto::ca::IstioCertificateRequest;
use proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use tonic::Code;
use tonic::transport::Channel;
use tracing::debug;

use crate::channel::{ChannelConfig, ChannelError, TrustRoots};
use crate::token::{AUTH_TOKEN_ENV, TokenError, TokenSource};

/// The request metadata key under which a node proxy names the workload it
/// asks for (Istio's `security.ImpersonatedIdentity`).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Istio's default workload certificate lifetime (`SECRET_TTL`).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of a [`GrpcCaClient`].
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// Where the CA is and which roots it (and every issued chain) must lead to.
    pub channel: ChannelConfig,
    /// The bearer token, read again for every request.
    pub token: TokenSource,
    /// The lifetime asked for (`validity_duration`); the CA may cap it.
    pub ttl: Duration,
    /// Name the identity in `ImpersonatedIdentity`: a node proxy asking for
    /// the workloads on its node. Off for a proxy asking for its own identity.
    pub impersonate: bool,
}

/// A [`CaClient`] over gRPC. Cheap to share: requests clone the channel.
pub struct GrpcCaClient {
    client: IstioCertificateServiceClient<Channel>,
    /// The configured address, for error messages.
    address: Arc<str>,
    roots: TrustRoots,
    token: TokenSource,
    /// `ttl` in whole seconds, as the request carries it.
    ttl_seconds: i64,
    impersonate: bool,
}

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("cannot send a certificate request to the CA at {address}: {source}")]
    Token {
        address: Arc<str>,
        #[source]
        source: TokenError,
    },
    #[error("cannot make a key and CSR for {identity}: {source}")]
    Csr {
        identity: Identity,
        #[source]
        source: CertError,
    },
    #[error(
        "the certificate request for {identity} to the CA at {address} failed: {code:?}: \
         {message}{}",
        hint(*.code)
    )]
    Rpc {
        identity: Identity,
        address: Arc<str>,
        code: Code,
        message: String,
    },
    #[error("the CA at {address} answered the request for {identity} with {reason}")]
    Response {
        identity: Identity,
        address: Arc<str>,
        #[source]
        reason: ResponseError,
    },
}

/// What is wrong with a `CreateCertificate` response.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("an empty certificate chain")]
    EmptyChain,
    #[error("a certificate chain that cannot be used: {0}")]
    Unusable(#[source] CertError),
    #[error("a certificate for {issued}; refusing it")]
    WrongIdentity { issued: Identity },
    #[error(
        "a certificate that does not chain to the roots in {path} ({reason}): is that file the \
         mesh root the CA signs under?"
    )]
    Untrusted { path: PathBuf, reason: String },
}

/// What to check after a refusal with `code`.
fn hint(code: Code) -> String {
    match code {
        Code::Unauthenticated => format!(
            ": the CA does not accept this proxy's token; check {AUTH_TOKEN_ENV} and that the \
             token is current"
        ),
        Code::PermissionDenied => {
            ": this proxy may not obtain that identity (a node proxy obtains only identities of \
             workloads scheduled on its node)"
                .to_owned()
        }
        Code::Unavailable | Code::DeadlineExceeded => "; the request is retried".to_owned(),
        _ => String::new(),
    }
}

// === impl CaClientConfig ===

impl CaClientConfig {
    /// Istio's defaults: a 24 h lifetime, impersonation on (a node proxy).
    pub fn new(channel: ChannelConfig, token: TokenSource) -> Self {
        CaClientConfig {
            channel,
            token,
            ttl: DEFAULT_CERT_TTL,
            impersonate: true,
        }
    }
}

// === impl GrpcCaClient ===

impl GrpcCaClient {
    /// Reads the roots and builds the (lazy) channel; nothing is sent yet.
    /// Must be called inside a Tokio runtime.
    pub fn new(config: CaClientConfig) -> Result<Self, ChannelError> {
        let roots = config.channel.load_roots()?;
        let channel = config.channel.connect_lazy_with(&roots)?;
        Ok(GrpcCaClient {
            client: IstioCertificateServiceClient::new(channel),
            address: config.channel.address.as_str().into(),
            roots,
            token: config.token,
            ttl_seconds: i64::try_from(config.ttl.as_secs()).unwrap_or(i64::MAX),
            impersonate: config.impersonate,
        })
    }

    /// Obtains a certificate for `id` with a fresh key; one request, no retry.
    pub async fn request_certificate(&self, id: &Identity) -> Result<WorkloadCert, CaClientError> {
        let csr_error = |source| CaClientError::Csr {
            identity: id.clone(),
            source,
        };
        let key = identity::cert::generate_key().map_err(csr_error)?;
        let csr = identity::cert::build_csr(id, &key).map_err(csr_error)?;
        let metadata = self.impersonate.then(|| Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_owned(),
                Value {
                    kind: Some(Kind::StringValue(id.to_string())),
                },
            )]
            .into(),
        });
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.ttl_seconds,
            metadata,
        });
        self.token
            .attach(request.metadata_mut())
            .map_err(|source| CaClientError::Token {
                address: self.address.clone(),
                source,
            })?;

        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| CaClientError::Rpc {
                identity: id.clone(),
                address: self.address.clone(),
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
        let cert = assemble(
            id,
            &key.serialize_pem(),
            &response.cert_chain,
            &self.roots,
            UnixTime::now(),
        )
        .map_err(|reason| CaClientError::Response {
            identity: id.clone(),
            address: self.address.clone(),
            reason,
        })?;
        debug!(identity = %id, serial = %cert.info.serial, "certificate issued");
        Ok(cert)
    }
}

/// The settings, not the root certificates' bytes.
impl fmt::Debug for GrpcCaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCaClient")
            .field("address", &self.address)
            .field("root_cert", &self.roots.path)
            .field("token", &self.token)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("impersonate", &self.impersonate)
            .finish_non_exhaustive()
    }
}

impl CaClient for GrpcCaClient {
    async fn fetch_certificate(&self, id: &Identity) -> Result<WorkloadCert, BoxError> {
        Ok(self.request_certificate(id).await?)
    }
}

/// Turns a response chain into a workload certificate for `requested`, with
/// `roots` as its trust anchors, after checking that it is one.
fn assemble(
    requested: &Identity,
    key_pem: &str,
    cert_chain: &[String],
    roots: &TrustRoots,
    now: UnixTime,
) -> Result<WorkloadCert, ResponseError> {
    // An element may hold several PEM blocks; certificates are what count.
    let mut certs = Vec::new();
    for pem in cert_chain {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                ResponseError::Unusable(CertError::Pem {
                    what: "certificate chain".to_owned(),
                    reason: e.to_string(),
                })
            })?;
            certs.push(cert);
        }
    }
    let Some((leaf, rest)) = certs.split_first() else {
        return Err(ResponseError::EmptyChain);
    };
    let issued = identity::cert::identity_of(leaf).map_err(ResponseError::Unusable)?;
    if issued != *requested {
        return Err(ResponseError::WrongIdentity { issued });
    }
    // The CA's own copy of a root is dropped; ours stands in for it.
    let intermediates: Vec<CertificateDer<'static>> = rest
        .iter()
        .filter(|cert| !roots.certs.contains(cert))
        .cloned()
        .collect();
    verify_chain(leaf, &intermediates, roots, now).map_err(|e| ResponseError::Untrusted {
        path: roots.path.clone(),
        reason: e.to_string(),
    })?;

    // `from_pem_chain` takes its last element as the roots and checks that
    // the key belongs to the leaf.
    let mut chain_pem: Vec<String> = std::iter::once(leaf)
        .chain(&intermediates)
        .map(identity::cert::to_pem)
        .collect();
    chain_pem.push(
        roots
            .certs
            .iter()
            .map(identity::cert::to_pem)
            .collect::<String>(),
    );
    WorkloadCert::from_pem_chain(key_pem, &chain_pem).map_err(ResponseError::Unusable)
}

/// Whether `leaf` chains to `roots` at `now`, for use as a TLS server (its
/// use as a client is the same chain; HBONE needs both).
fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &TrustRoots,
    now: UnixTime,
) -> Result<(), webpki::Error> {
    let algorithms = identity::tls::provider().signature_verification_algorithms;
    webpki::EndEntityCert::try_from(leaf)?
        .verify_for_usage(
            algorithms.all,
            &roots.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::Ca;

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "apps", sa).unwrap()
    }

    fn roots_of(ca: &Ca) -> TrustRoots {
        let certs = ca.root_certs();
        let anchors = certs
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).unwrap().to_owned())
            .collect();
        TrustRoots {
            path: PathBuf::from("/etc/root-cert.pem"),
            certs,
            anchors,
        }
    }

    /// A key and the chain `ca` signs for `csr_id`, authorized as `csr_id`.
    fn issue(ca: &Ca, csr_id: &Identity) -> (String, Vec<String>) {
        let key = identity::cert::generate_key().unwrap();
        let csr = identity::cert::build_csr(csr_id, &key).unwrap();
        let chain = ca
            .sign_csr(&csr, csr_id, Duration::from_secs(3600))
            .unwrap();
        (key.serialize_pem(), chain)
    }

    #[test]
    fn assembles_with_the_configured_roots_not_the_responses() {
        let ca = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
        let (key, chain) = issue(&ca, &id("web"));
        assert!(chain.len() >= 2, "leaf then root");
        let roots = roots_of(&ca);
        let cert = assemble(&id("web"), &key, &chain, &roots, UnixTime::now()).unwrap();
        assert_eq!(cert.identity, id("web"));
        assert_eq!(cert.roots, roots.certs);
        assert_eq!(cert.chain.len(), 1, "the root is not part of the chain");
    }

    #[test]
    fn refuses_another_identity_an_empty_chain_and_another_key() {
        let ca = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
        let roots = roots_of(&ca);
        let (key, chain) = issue(&ca, &id("db"));
        let error = assemble(&id("web"), &key, &chain, &roots, UnixTime::now()).unwrap_err();
        assert!(
            matches!(&error, ResponseError::WrongIdentity { issued } if *issued == id("db")),
            "{error}"
        );

        let error = assemble(&id("web"), &key, &[], &roots, UnixTime::now()).unwrap_err();
        assert!(matches!(error, ResponseError::EmptyChain), "{error}");

        let other_key = identity::cert::generate_key().unwrap().serialize_pem();
        let error = assemble(&id("db"), &other_key, &chain, &roots, UnixTime::now()).unwrap_err();
        assert!(
            matches!(
                error,
                ResponseError::Unusable(CertError::KeyMismatch { .. })
            ),
            "{error}"
        );
    }

    #[test]
    fn refuses_a_chain_that_does_not_lead_to_the_configured_roots() {
        let ca = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
        let other = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
        let (key, chain) = issue(&other, &id("web"));
        let error =
            assemble(&id("web"), &key, &chain, &roots_of(&ca), UnixTime::now()).unwrap_err();
        assert!(matches!(error, ResponseError::Untrusted { .. }), "{error}");
        assert!(error.to_string().contains("/etc/root-cert.pem"), "{error}");
    }

    #[test]
    fn refusals_say_what_to_check() {
        let error = CaClientError::Rpc {
            identity: id("web"),
            address: "https://istiod:15012".into(),
            code: Code::PermissionDenied,
            message: "node \"a\" may not obtain it".to_owned(),
        };
        let message = error.to_string();
        assert!(message.contains("PermissionDenied"), "{message}");
        assert!(message.contains("https://istiod:15012"), "{message}");
        assert!(message.contains("scheduled on its node"), "{message}");
    }
}
