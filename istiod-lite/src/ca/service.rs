//! `IstioCertificateService/CreateCertificate`: authenticate, name the
//! identity asked for, authorize, sign; answer as istiod does (one PEM per
//! element, leaf first, root last) so that an unmodified ztunnel can use it.
//!
//! A refusal tells the caller what was wrong (these callers are our own
//! proxies, and an opaque error only slows down whoever debugs them), and is
//! logged and counted here, in one place.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use identity::{Ca, CaError, Identity};
use prost_types::value::Kind;
use proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span, warn};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::auth::{AuthError, Authenticator, Caller, Denied, NodeDirectory, authorize};

/// The request metadata key under which a node proxy names the workload
/// identity it asks for: Istio's `security.ImpersonatedIdentity`, sent by
/// ztunnel's CA client and read by istiod's `CreateCertificate`.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Istio's default workload certificate lifetime, and its default maximum.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long issued certificates live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// When the request asks for no validity (zero, negative or absent).
    pub default_ttl: Duration,
    /// The most any request gets: a leaked key is useful for this long.
    pub max_ttl: Duration,
}

/// Requests by result. Plain counters: the metrics endpoint reads them.
#[derive(Debug, Default)]
pub struct CaStats {
    issued: AtomicU64,
    unauthenticated: AtomicU64,
    denied: AtomicU64,
    bad_csr: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of [`CaStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaCounts {
    /// Certificates signed.
    pub issued: u64,
    /// Requests without a valid credential.
    pub unauthenticated: u64,
    /// Authenticated callers asking for an identity they may not have.
    pub denied: u64,
    /// Malformed requests: the CSR or the impersonation metadata.
    pub bad_csr: u64,
    /// Our side failed (signing, an expired signing certificate, an unreachable
    /// API server for TokenReview).
    pub failed: u64,
}

/// The CA's gRPC service.
pub struct CaService<A, D> {
    ca: Arc<Ca>,
    authenticator: A,
    directory: D,
    config: CaConfig,
    stats: Arc<CaStats>,
}

/// Why a request was not answered with a certificate.
enum Refusal {
    Unauthenticated(AuthError),
    /// Authentication could not be done now (the API server that reviews
    /// tokens is unreachable): UNAVAILABLE, so that the caller retries.
    Unavailable(AuthError),
    Denied(Denied),
    BadRequest(String),
    /// Our side failed; the message says what.
    Failed(String),
}

// === impl CaConfig ===

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            default_ttl: DAY,
            max_ttl: DAY,
        }
    }
}

impl CaConfig {
    /// The lifetime for a request asking for `requested_seconds`.
    pub fn ttl(&self, requested_seconds: i64) -> Duration {
        let requested = u64::try_from(requested_seconds)
            .ok()
            .filter(|&seconds| seconds > 0)
            .map_or(self.default_ttl, Duration::from_secs);
        requested.min(self.max_ttl)
    }
}

// === impl CaStats ===

impl CaStats {
    pub fn counts(&self) -> CaCounts {
        CaCounts {
            issued: self.issued.load(Ordering::Relaxed),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            bad_csr: self.bad_csr.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// === impl CaService ===

impl<A: Authenticator, D: NodeDirectory> CaService<A, D> {
    pub fn new(ca: Arc<Ca>, authenticator: A, directory: D, config: CaConfig) -> Self {
        CaService {
            ca,
            authenticator,
            directory,
            config,
            stats: Arc::default(),
        }
    }

    /// The counters, to export as metrics.
    pub fn stats(&self) -> Arc<CaStats> {
        self.stats.clone()
    }

    /// The service, ready to add to a tonic server.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let caller = match self.authenticator.authenticate(request.metadata()).await {
            Ok(caller) => caller,
            Err(error) if error.is_retryable() => {
                return Err(self.refuse(Refusal::Unavailable(error), None, None));
            }
            Err(error) => return Err(self.refuse(Refusal::Unauthenticated(error), None, None)),
        };
        let request = request.into_inner();
        let identity = match requested_identity(&request) {
            Ok(identity) => identity,
            Err(reason) => {
                return Err(self.refuse(Refusal::BadRequest(reason), Some(&caller), None));
            }
        };
        let issued = authorize(&caller, &identity, &self.directory)
            .map_err(Refusal::Denied)
            .and_then(|()| self.sign(&request, &identity));
        match issued {
            Ok(response) => {
                CaStats::count(&self.stats.issued);
                debug!(caller = %caller, identity = %identity, "issued a certificate");
                Ok(response)
            }
            Err(refusal) => Err(self.refuse(refusal, Some(&caller), Some(&identity))),
        }
    }

    fn sign(
        &self,
        request: &IstioCertificateRequest,
        identity: &Identity,
    ) -> Result<IstioCertificateResponse, Refusal> {
        let ttl = self.config.ttl(request.validity_duration);
        let chain = self
            .ca
            .sign_csr(&request.csr, identity, ttl)
            .map_err(|error| match error {
                CaError::CsrPem(_)
                | CaError::CsrMalformed(_)
                | CaError::CsrSignature(_)
                | CaError::NoSan { .. }
                | CaError::SeveralSans { .. }
                | CaError::NonUriSan(_)
                | CaError::InvalidIdentity { .. }
                | CaError::ForeignTrustDomain { .. }
                | CaError::NotAuthorized { .. }
                | CaError::UnsupportedKey(_) => Refusal::BadRequest(error.to_string()),
                _ => Refusal::Failed(format!("cannot sign the certificate: {error}")),
            })?;
        // Istio answers one certificate per element (several roots would
        // otherwise share the last one), which ztunnel expects.
        let mut cert_chain = Vec::with_capacity(chain.len());
        for entry in &chain {
            for der in CertificateDer::pem_slice_iter(entry.as_bytes()) {
                let der = der.map_err(|e| {
                    Refusal::Failed(format!("the CA produced a chain that is not PEM: {e}"))
                })?;
                cert_chain.push(identity::cert::to_pem(&der));
            }
        }
        Ok(IstioCertificateResponse {
            cert_chain,
            root_cert: None,
        })
    }

    /// Logs and counts a refusal, and turns it into the gRPC status.
    fn refuse(
        &self,
        refusal: Refusal,
        caller: Option<&Caller>,
        identity: Option<&Identity>,
    ) -> Status {
        let caller_name = caller.map(ToString::to_string);
        let node = match caller {
            Some(Caller::Node(node)) => Some(&**node),
            _ => None,
        };
        let identity = identity.map(ToString::to_string);
        let (counter, result, status) = match &refusal {
            Refusal::Unauthenticated(e) => (
                &self.stats.unauthenticated,
                "unauthenticated",
                Status::unauthenticated(e.to_string()),
            ),
            Refusal::Unavailable(e) => (
                &self.stats.failed,
                "unavailable",
                Status::unavailable(e.to_string()),
            ),
            Refusal::Denied(e) => (
                &self.stats.denied,
                "denied",
                Status::permission_denied(e.to_string()),
            ),
            Refusal::BadRequest(reason) => (
                &self.stats.bad_csr,
                "bad_csr",
                Status::invalid_argument(reason.clone()),
            ),
            Refusal::Failed(e) => (&self.stats.failed, "failed", Status::internal(e.clone())),
        };
        CaStats::count(counter);
        warn!(
            result,
            caller = caller_name.as_deref(),
            node,
            identity = identity.as_deref(),
            error = status.message(),
            "certificate request refused"
        );
        status
    }
}

#[tonic::async_trait]
impl<A: Authenticator, D: NodeDirectory> IstioCertificateService for CaService<A, D> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        // The span carries the peer into every log line of this request,
        // refusals included, where the caller may be unknown; at info level
        // so that it is there whenever a refusal (warn) is logged.
        let span = info_span!("create_certificate", peer.addr = ?request.remote_addr());
        self.create(request)
            .instrument(span)
            .await
            .map(Response::new)
    }
}

impl<A, D> fmt::Debug for CaService<A, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("config", &self.config)
            .field("stats", &self.stats.counts())
            .finish_non_exhaustive()
    }
}

/// The identity a request asks for: the impersonated one when a node proxy
/// names it, otherwise the CSR's one URI SAN.
fn requested_identity(request: &IstioCertificateRequest) -> Result<Identity, String> {
    let impersonated = request
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.fields.get(IMPERSONATED_IDENTITY))
        .and_then(|value| value.kind.as_ref());
    match impersonated {
        // istiod treats an empty string as no impersonation; so do we.
        None => csr_identity(&request.csr),
        Some(Kind::StringValue(id)) if id.is_empty() => csr_identity(&request.csr),
        Some(Kind::StringValue(id)) => id
            .parse()
            .map_err(|e| format!("metadata {IMPERSONATED_IDENTITY} is not a SPIFFE identity: {e}")),
        Some(other) => Err(format!(
            "metadata {IMPERSONATED_IDENTITY} must be a string (a SPIFFE identity), not {other:?}"
        )),
    }
}

/// The SPIFFE identity a CSR asks for, once its signature verifies. The CA
/// checks the CSR again when it signs; this only decides what to authorize.
fn csr_identity(csr_pem: &str) -> Result<Identity, String> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| format!("CSR is not PEM ({e}): send one 'CERTIFICATE REQUEST' block"))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| format!("CSR is malformed: {e}"))?;
    csr.verify_signature().map_err(|e| {
        format!(
            "CSR signature does not verify ({e}): the CSR was altered or not signed by the key \
             it carries; generate a fresh CSR"
        )
    })?;
    // Every name of every SAN extension counts: "exactly one" means one.
    let mut names = Vec::new();
    for attribute in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() else {
            continue;
        };
        for extension in &request.extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() {
                names.extend(san.general_names.iter().map(|name| match name {
                    GeneralName::URI(uri) => Ok((*uri).to_owned()),
                    other => Err(other.to_string()),
                }));
            }
        }
    }
    match names.as_slice() {
        [Ok(uri)] => uri
            .parse()
            .map_err(|e| format!("CSR URI {uri:?} is not a SPIFFE identity: {e}")),
        [Err(other)] => Err(format!(
            "CSR subject alternative name {other} is not a URI: it must be the SPIFFE URI"
        )),
        [] => Err(
            "CSR has no subject alternative name: it must carry exactly one, the SPIFFE \
             URI of the identity asked for"
                .to_owned(),
        ),
        several => Err(format!(
            "CSR has {} subject alternative names ({}): it must carry exactly one, the SPIFFE URI",
            several.len(),
            several
                .iter()
                .map(|name| match name {
                    Ok(uri) => uri.as_str(),
                    Err(other) => other.as_str(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
