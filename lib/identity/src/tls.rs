//! TLS configurations for every mTLS hop of the mesh (HBONE, xDS, CA).
//!
//! The rules are the mesh's, not the web's: TLS 1.3 only, ALPN `h2`, both
//! sides present certificates, and names are SPIFFE URI SANs rather than DNS
//! names. The client accepts a server only if its certificate chains to the
//! mesh root and names one of the identities the destination is expected to
//! have; the server accepts a client only if it chains to the mesh root and
//! belongs to the server's trust domain. Key exchange prefers the post-quantum
//! hybrid `X25519MLKEM768`, falling back to X25519 (and P-256 for old peers).
//!
//! Resumption is off on both sides: connections are pooled and long-lived, so
//! it would save little, and every connection then proves its identity afresh.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::cert::{self, CertError};
use crate::{Identity, WorkloadCert};

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration could not be built or a peer not identified.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot build TLS config for {identity}: {source}")]
    Config {
        identity: Identity,
        #[source]
        source: rustls::Error,
    },
    #[error("certificate for {identity} has no trust anchors: the CA response lacked a root")]
    NoRoots { identity: Identity },
    #[error("cannot build the control plane's TLS config: {0}")]
    ControlPlane(#[source] rustls::Error),
    #[error("mesh root certificate is not a usable trust anchor: {0}")]
    BadRoot(webpki::Error),
    #[error("peer presented no certificate (was the handshake completed?)")]
    NoPeerCertificate,
    #[error("peer certificate does not carry a usable SPIFFE identity: {0}")]
    PeerIdentity(#[from] CertError),
}

/// The crypto provider every config uses: aws-lc-rs, TLS 1.3 suites only,
/// post-quantum hybrid key exchange first.
pub fn provider() -> Arc<CryptoProvider> {
    let base = aws_lc_rs::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: base
            .cipher_suites
            .iter()
            .copied()
            .filter(|suite| suite.tls13().is_some())
            .collect(),
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
            aws_lc_rs::kx_group::SECP256R1,
        ],
        ..base
    })
}

/// A client config presenting `cert` and accepting only a server that proves
/// one of `expected` (the destination's identities, from the control plane).
pub fn client_config(cert: &WorkloadCert, expected: &[Identity]) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(cert, &provider)?;
    let config_error = |source| TlsError::Config {
        identity: cert.identity.clone(),
        source,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerIdentityVerifier {
            spiffe: verifier,
            expected: expected.to_vec(),
        }))
        .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(config_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A server config presenting `cert` and requiring a client certificate that
/// chains to the mesh root and belongs to `cert`'s trust domain.
pub fn server_config(cert: &WorkloadCert) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(cert, &provider)?;
    let config_error = |source| TlsError::Config {
        identity: cert.identity.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(Arc::new(ClientTrustDomainVerifier {
            spiffe: verifier,
            trust_domain: cert.identity.trust_domain().into(),
        }))
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(config_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The control plane's gRPC server config (xDS and CA on 15012): TLS 1.3,
/// ALPN `h2`, presenting `chain` (a DNS-named certificate from
/// [`crate::Ca::issue_server_cert`]) and asking for no client certificate,
/// because proxies authenticate to the control plane with bearer tokens, as
/// Istio's ztunnel does with istiod.
pub fn control_plane_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::ControlPlane)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::ControlPlane)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The identity the peer proved during a completed handshake.
pub fn peer_identity(conn: &CommonState) -> Result<Identity, TlsError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    Ok(cert::identity_of(leaf)?)
}

/// Chain validation against the mesh roots and TLS 1.3 signature checks,
/// shared by both directions; they differ only in the name check.
struct SpiffeVerifier {
    roots: Vec<TrustAnchor<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// A client-side verifier: the chain, then the server's URI SAN against the
/// expected identities.
struct ServerIdentityVerifier {
    spiffe: SpiffeVerifier,
    expected: Vec<Identity>,
}

/// A server-side verifier: the chain, then the client's trust domain.
struct ClientTrustDomainVerifier {
    spiffe: SpiffeVerifier,
    trust_domain: Arc<str>,
}

/// Why a peer's certificate was refused beyond what webpki reports; carried
/// inside `rustls::Error` so the handshake error names the identities.
#[derive(thiserror::Error)]
enum PeerRefused {
    #[error("server presented identity {presented}, expected one of [{}]", join(.expected))]
    UnexpectedServer {
        presented: Identity,
        expected: Vec<Identity>,
    },
    #[error("client identity {presented} is not in trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        presented: Identity,
        trust_domain: Arc<str>,
    },
    #[error("peer certificate has no usable SPIFFE identity: {0}")]
    NoIdentity(CertError),
    #[error("peer certificate chain is invalid: {0}")]
    Chain(webpki::Error),
}

/// rustls prints the inner error with `{:?}`; make that the readable message.
impl fmt::Debug for PeerRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn join(ids: &[Identity]) -> String {
    ids.iter()
        .map(Identity::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// === impl SpiffeVerifier ===

impl SpiffeVerifier {
    fn new(cert: &WorkloadCert, provider: &CryptoProvider) -> Result<Self, TlsError> {
        if cert.roots.is_empty() {
            return Err(TlsError::NoRoots {
                identity: cert.identity.clone(),
            });
        }
        let roots = cert
            .roots
            .iter()
            .map(|root| webpki::anchor_from_trusted_cert(root).map(|anchor| anchor.to_owned()))
            .collect::<Result<_, _>>()
            .map_err(TlsError::BadRoot)?;
        Ok(SpiffeVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// Validates the chain for `usage` and returns the leaf's identity.
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<Identity, rustls::Error> {
        let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_to_rustls)?;
        leaf.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_to_rustls)?;
        cert::identity_of(end_entity).map_err(|e| refused(PeerRefused::NoIdentity(e)))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn refused(reason: PeerRefused) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        reason,
    ))))
}

/// Keeps rustls's own variants for the common cases, so alerts sent to the
/// peer are the specific ones (expired, unknown CA) rather than a generic one.
fn webpki_to_rustls(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let certificate_error = match error {
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        other => return refused(PeerRefused::Chain(other)),
    };
    rustls::Error::InvalidCertificate(certificate_error)
}

// === impl ServerIdentityVerifier ===

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // HBONE dials IP addresses; the name that matters is the URI SAN.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = self.spiffe.verify_chain(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        if !self.expected.contains(&presented) {
            return Err(refused(PeerRefused::UnexpectedServer {
                presented,
                expected: self.expected.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable in practice: the config only enables TLS 1.3.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.spiffe.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.spiffe.algorithms.supported_schemes()
    }
}

// === impl ClientTrustDomainVerifier ===

impl ClientCertVerifier for ClientTrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: every mesh client has exactly one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = self.spiffe.verify_chain(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        if presented.trust_domain() != &*self.trust_domain {
            return Err(refused(PeerRefused::ForeignTrustDomain {
                presented,
                trust_domain: self.trust_domain.clone(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.spiffe.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.spiffe.algorithms.supported_schemes()
    }
}

impl fmt::Debug for ServerIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentityVerifier")
            .field("expected", &self.expected)
            .finish()
    }
}

impl fmt::Debug for ClientTrustDomainVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTrustDomainVerifier")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

#[cfg(test)]
mod tests;
