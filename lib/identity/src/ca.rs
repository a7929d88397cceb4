//! Self-signed or plug-in CA: signs workload leaf certificates from CSRs.
//!
//! The CA trusts nothing in a CSR except the public key and the one identity
//! it asks for, and even that only after the CSR's signature proves the
//! requester holds the key, and the identity matches the one the caller
//! authorized (istiod-lite decides who may have what; this module fails
//! closed). Everything else in the leaf (usages, validity, serial) is the CA's
//! choice, never copied from the request.
//!
//! Responses follow Istio's `CreateCertificate`: leaf first, then the signing
//! chain, root(s) last.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::crypto::SecureRandom;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;
use tracing::debug;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use crate::cert::{self, CertError};
use crate::{Identity, IdentityError, WorkloadCert};

/// Certificates start this far in the past, so that a peer whose clock runs a
/// little behind does not see a brand-new certificate as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60);

/// Istio's plug-in CA file names (the `cacerts` secret).
const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
const ROOT_CERT: &str = "root-cert.pem";
const CERT_CHAIN: &str = "cert-chain.pem";

/// A certificate authority for one trust domain.
pub struct Ca {
    /// The only trust domain this CA issues identities in.
    trust_domain: Arc<str>,
    /// Signs leaves: the signing certificate's subject and key identifier,
    /// and its private key.
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate, then intermediates up to (not including) the
    /// root, as PEM; empty when the signer is the root itself.
    chain_pem: Vec<String>,
    /// Trust anchors handed to every workload.
    roots: Vec<CertificateDer<'static>>,
    /// When the first certificate on the signing chain expires: no leaf may
    /// outlive it, since it would not validate past that point anyway.
    signer_not_after: SystemTime,
    /// Serial numbers come from the TLS stack's CSPRNG.
    random: &'static dyn SecureRandom,
}

/// Why the CA could not be set up or refused to sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("trust domain {trust_domain:?} is not usable in SPIFFE identities: {source}")]
    InvalidTrustDomain {
        trust_domain: String,
        #[source]
        source: IdentityError,
    },
    #[error("cannot generate the CA's key: {0}")]
    GenerateKey(#[source] CertError),
    #[error("cannot generate the CA's certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error(
        "cannot read {path}: {source} (a plug-in CA directory holds {CA_CERT}, {CA_KEY}, {ROOT_CERT} and {CERT_CHAIN})"
    )]
    ReadPlugin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not usable: {reason}")]
    PluginFile { path: PathBuf, reason: String },
    #[error(
        "{key} does not match {cert}: the key's public key is not the certificate's; \
         put the key that belongs to this certificate in place"
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{path} does not chain to {root}: {reason}")]
    Chain {
        path: PathBuf,
        root: PathBuf,
        reason: String,
    },
    #[error("CSR is not PEM: {0} (send one 'CERTIFICATE REQUEST' block)")]
    CsrPem(String),
    #[error("CSR is malformed: {0}")]
    CsrMalformed(String),
    #[error(
        "CSR signature does not verify ({0}): the CSR was altered or not signed by the key \
         it carries; generate a fresh CSR"
    )]
    CsrSignature(String),
    #[error(
        "CSR has no subject alternative name: it must carry exactly one, the SPIFFE URI {authorized}"
    )]
    NoSan { authorized: Identity },
    #[error("CSR has {} subject alternative names ({}): it must carry exactly one, the SPIFFE URI", .names.len(), .names.join(", "))]
    SeveralSans { names: Vec<String> },
    #[error("CSR subject alternative name {0} is not a URI: it must be the SPIFFE URI")]
    NonUriSan(String),
    #[error("CSR URI {uri:?} is not a SPIFFE identity: {source}")]
    InvalidIdentity {
        uri: String,
        #[source]
        source: IdentityError,
    },
    #[error("CSR asks for {requested}, outside this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        requested: Identity,
        trust_domain: Arc<str>,
    },
    #[error("CSR asks for {requested} but the caller is authorized only for {authorized}")]
    NotAuthorized {
        requested: Identity,
        authorized: Identity,
    },
    #[error("CSR public key is not supported ({0}): use ECDSA P-256")]
    UnsupportedKey(String),
    #[error("invalid validity for a certificate: {0}")]
    Validity(String),
    #[error("cannot sign a certificate for {identity}: {source}")]
    Sign {
        identity: Identity,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot sign a serving certificate for [{names}]: {reason}")]
    ServerCert { names: String, reason: String },
    #[error("the system random generator failed: cannot draw a serial number")]
    Random,
    #[error("certificate issued for {identity} is not usable: {source}")]
    Issued {
        identity: Identity,
        #[source]
        source: Box<CertError>,
    },
}

// === impl Ca ===

impl Ca {
    /// A fresh self-signed root for `trust_domain`, like istiod's own:
    /// ECDSA P-256, CA:TRUE, keyCertSign + cRLSign, subject `O=<trust domain>`.
    pub fn self_signed(trust_domain: &str, validity: Duration) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let random = random();
        let key = cert::generate_key().map_err(CaError::GenerateKey)?;
        let now = SystemTime::now();
        let not_after = checked_add(now, validity)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial(random)?);
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        let root = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(Ca {
            trust_domain: trust_domain.into(),
            issuer: Issuer::new(params, key),
            chain_pem: Vec::new(),
            roots: vec![root.der().clone()],
            signer_not_after: not_after,
            random,
        })
    }

    /// Loads Istio's plug-in CA layout from `dir`: `ca-cert.pem` (the signing
    /// certificate), `ca-key.pem` (its key), `root-cert.pem` (the root or
    /// roots) and `cert-chain.pem` (signing certificate up to the root).
    ///
    /// Everything is checked before the CA is used: the key must match the
    /// certificate, the chain must link signature by signature to a root, and
    /// a probe leaf signed with it must validate the way peers will validate.
    pub fn load_plugin(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let root_path = dir.join(ROOT_CERT);
        let chain_path = dir.join(CERT_CHAIN);

        let signer = match read_certs(&cert_path)?.as_slice() {
            [signer] => signer.clone(),
            certs => {
                return Err(plugin_error(
                    &cert_path,
                    format!("expected exactly one certificate, found {}", certs.len()),
                ));
            }
        };
        let roots = read_certs(&root_path)?;
        let chain = read_certs(&chain_path)?;
        let key = read_key(&key_path)?;

        let signer_parsed = parse_cert(&cert_path, &signer)?;
        if !signer_parsed.is_ca() {
            return Err(plugin_error(
                &cert_path,
                "not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        let may_sign = match signer_parsed.key_usage() {
            Ok(Some(usage)) => usage.value.key_cert_sign(),
            Ok(None) => true,
            Err(e) => {
                return Err(plugin_error(
                    &cert_path,
                    format!("key usage extension: {e}"),
                ));
            }
        };
        if !may_sign {
            return Err(plugin_error(
                &cert_path,
                "its key usage does not allow keyCertSign",
            ));
        }
        if key.public_key_raw() != signer_parsed.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let intermediates = check_chain(&signer, &chain, &roots, &chain_path, &root_path)?;

        let issuer = Issuer::from_ca_cert_der(&signer, key)
            .map_err(|e| plugin_error(&cert_path, format!("cannot sign with it: {e}")))?;
        let mut signer_not_after = cert_not_after(&signer_parsed);
        for der in &intermediates {
            signer_not_after = signer_not_after.min(cert_not_after(&parse_cert(&chain_path, der)?));
        }
        let ca = Ca {
            trust_domain: trust_domain.into(),
            issuer,
            chain_pem: intermediates.iter().map(cert::to_pem).collect(),
            roots,
            signer_not_after,
            random: random(),
        };
        ca.probe(&intermediates, &chain_path, &root_path)?;
        debug!(dir = %dir.display(), trust_domain, "loaded plug-in CA");
        Ok(ca)
    }

    /// Signs a leaf for the identity in `csr_pem`, valid from a minute ago
    /// for `ttl` (never past the signing certificate's own expiry).
    ///
    /// The CSR must verify, carry exactly one SAN, a URI naming a SPIFFE
    /// identity in this CA's trust domain, and that identity must be
    /// `authorized`. Returns PEMs: leaf, signing chain, root(s) last (several
    /// roots share the last element, as in Istio's response).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        authorized: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        if ttl.is_zero() {
            return Err(CaError::Validity("the requested TTL is zero".to_owned()));
        }
        let now = SystemTime::now();
        let mut not_after = checked_add(now, ttl)?;
        if not_after > self.signer_not_after {
            debug!(%authorized, "leaf validity capped at the signing certificate's expiry");
            not_after = self.signer_not_after;
        }
        if not_after <= now {
            return Err(CaError::Validity(format!(
                "the signing certificate expired at {}: rotate the CA certificate",
                OffsetDateTime::from(self.signer_not_after)
            )));
        }
        self.sign_with_validity(csr_pem, authorized, now - BACKDATE, not_after)
    }

    /// The root certificates, one PEM per root.
    pub fn roots_pem(&self) -> Vec<String> {
        self.roots.iter().map(cert::to_pem).collect()
    }

    /// The root certificates, as trust anchors for TLS configs.
    pub fn root_certs(&self) -> Vec<CertificateDer<'static>> {
        self.roots.clone()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The signing certificate's private key, PKCS#8 PEM: what a
    /// self-signed root must persist to survive a restart. Together with
    /// [`Ca::roots_pem`] it forms the plug-in layout [`Ca::load_plugin`] reads
    /// back. It is the only copy of the key: store it readable by its owner
    /// only.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let ca = identity::Ca::self_signed("cluster.local", Duration::from_secs(3600))?;
    /// let dir = tempfile::tempdir()?;
    /// let root = ca.roots_pem().concat();
    /// for file in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
    ///     std::fs::write(dir.path().join(file), &root)?;
    /// }
    /// std::fs::write(dir.path().join("ca-key.pem"), ca.signing_key_pem())?;
    /// let reloaded = identity::Ca::load_plugin(dir.path(), "cluster.local")?;
    /// assert_eq!(reloaded.roots_pem(), ca.roots_pem());
    /// # Ok(())
    /// # }
    /// ```
    pub fn signing_key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Key, CSR, signature and assembly in one step: what tests, the local
    /// mesh and benches use when there is no network between them and the CA.
    pub fn issue(&self, id: &Identity, ttl: Duration) -> Result<WorkloadCert, CaError> {
        let (key, csr) = key_and_csr(id)?;
        let chain = self.sign_csr(&csr, id, ttl)?;
        assemble(id, &key, &chain)
    }

    /// A TLS serving certificate for the control plane, named by DNS names
    /// (and IP addresses, for entries that parse as one), valid from a
    /// minute ago for `ttl` (never past the signing certificate's expiry).
    /// Returns the chain without the root (leaf, then intermediates) and the
    /// leaf's key, ready for a rustls server config. Clients that trust the
    /// mesh root can then verify the control plane by its DNS name.
    pub fn issue_server_cert(
        &self,
        names: &[&str],
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let joined = names.join(", ");
        let error = |reason: String| CaError::ServerCert {
            names: joined.clone(),
            reason,
        };
        if names.is_empty() {
            return Err(error("no name given".to_owned()));
        }
        let now = SystemTime::now();
        let not_after = checked_add(now, ttl)?.min(self.signer_not_after);
        if not_after <= now {
            return Err(CaError::Validity(format!(
                "the signing certificate expired at {}: rotate the CA certificate",
                OffsetDateTime::from(self.signer_not_after)
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    // rcgen accepts any IA5 string; check what clients will
                    // match against, so a typo fails here and not in them.
                    rustls_pki_types::DnsName::try_from(*name)
                        .map_err(|e| error(format!("{name:?} is not a DNS name: {e}")))?;
                    SanType::DnsName(
                        (*name)
                            .try_into()
                            .map_err(|e| error(format!("{name:?} is not a DNS name: {e}")))?,
                    )
                }
            };
            params.subject_alt_names.push(san);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(self.random)?);
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        let key = cert::generate_key().map_err(|e| error(e.to_string()))?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| error(e.to_string()))?;
        let mut chain = vec![leaf.der().clone()];
        for pem in &self.chain_pem {
            chain.extend(
                cert::certs_from_pem("signing chain", pem).map_err(|e| error(e.to_string()))?,
            );
        }
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((chain, key))
    }

    /// Like [`Ca::issue`], with an exact validity window (which may lie in
    /// the past or the future): for expiry and not-yet-valid tests.
    pub fn issue_with_validity(
        &self,
        id: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCert, CaError> {
        let (key, csr) = key_and_csr(id)?;
        let chain = self.sign_with_validity(&csr, id, not_before, not_after)?;
        assemble(id, &key, &chain)
    }

    fn sign_with_validity(
        &self,
        csr_pem: &str,
        authorized: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        if not_after <= not_before {
            return Err(CaError::Validity(format!(
                "not_after ({}) must be later than not_before ({})",
                OffsetDateTime::from(not_after),
                OffsetDateTime::from(not_before)
            )));
        }
        let (identity, public_key) = self.check_csr(csr_pem, authorized)?;

        let mut params = CertificateParams::default();
        // An empty subject, as Istio issues: the URI SAN is the only name,
        // and rcgen marks it critical, as RFC 5280 requires for that case.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|source| CaError::Sign {
                identity: identity.clone(),
                source,
            })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(self.random)?);
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|source| CaError::Sign {
                identity: identity.clone(),
                source,
            })?;
        debug!(%identity, "signed workload certificate");

        let mut response = Vec::with_capacity(self.chain_pem.len() + 2);
        response.push(leaf.pem());
        response.extend(self.chain_pem.iter().cloned());
        response.push(self.roots_pem().concat());
        Ok(response)
    }

    /// Verifies the CSR and returns the identity it asks for, once allowed,
    /// and its public key. Nothing else in the CSR is looked at.
    fn check_csr(
        &self,
        csr_pem: &str,
        authorized: &Identity,
    ) -> Result<(Identity, SubjectPublicKeyInfo), CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::CsrPem(e.to_string()))?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CaError::CsrMalformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::CsrMalformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        // SHA-1 is broken for signatures; a modern client never sends it.
        let algorithm = &csr.signature_algorithm.algorithm;
        if *algorithm == OID_PKCS1_SHA1WITHRSA || *algorithm == OID_SHA1_WITH_RSA {
            return Err(CaError::CsrSignature(
                "SHA-1 signatures are not accepted".to_owned(),
            ));
        }
        csr.verify_signature()
            .map_err(|e| CaError::CsrSignature(e.to_string()))?;

        let names = requested_sans(&csr)?;
        let uri = match names.as_slice() {
            [] => {
                return Err(CaError::NoSan {
                    authorized: authorized.clone(),
                });
            }
            [GeneralName::URI(uri)] => *uri,
            [other] => return Err(CaError::NonUriSan(other.to_string())),
            several => {
                return Err(CaError::SeveralSans {
                    names: several.iter().map(ToString::to_string).collect(),
                });
            }
        };
        let requested: Identity = uri.parse().map_err(|source| CaError::InvalidIdentity {
            uri: uri.to_owned(),
            source,
        })?;
        if requested.trust_domain() != &*self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                requested,
                trust_domain: self.trust_domain.clone(),
            });
        }
        if requested != *authorized {
            return Err(CaError::NotAuthorized {
                requested,
                authorized: authorized.clone(),
            });
        }
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::UnsupportedKey(e.to_string()))?;
        Ok((requested, public_key))
    }

    /// Signs a throwaway leaf and validates it as a peer would (webpki, both
    /// usages), so that a plug-in CA that cannot produce valid chains fails
    /// at startup instead of in every handshake.
    fn probe(
        &self,
        intermediates: &[CertificateDer<'static>],
        chain_path: &Path,
        root_path: &Path,
    ) -> Result<(), CaError> {
        let probe_error = |reason: String| CaError::Chain {
            path: chain_path.to_owned(),
            root: root_path.to_owned(),
            reason: format!("a test leaf signed with {CA_CERT} does not validate: {reason}"),
        };
        let id = Identity::new(&self.trust_domain, "istio-system", "ca-self-check").map_err(
            |source| CaError::InvalidTrustDomain {
                trust_domain: self.trust_domain.to_string(),
                source,
            },
        )?;
        let leaf = self.issue(&id, Duration::from_secs(60))?;
        let anchors = self
            .roots
            .iter()
            .map(|root| {
                webpki::anchor_from_trusted_cert(root).map_err(|e| probe_error(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf_der = leaf
            .chain
            .first()
            .ok_or_else(|| probe_error("no leaf".to_owned()))?;
        let end_entity =
            webpki::EndEntityCert::try_from(leaf_der).map_err(|e| probe_error(e.to_string()))?;
        let now = UnixTime::now();
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &anchors,
                    intermediates,
                    now,
                    usage,
                    None,
                    None,
                )
                .map_err(|e| probe_error(format!("{e:?}")))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The issuer's Debug already elides the key; say nothing more of it.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("issuer", &self.issuer)
            .field("intermediates", &self.chain_pem.len())
            .field("roots", &self.roots.len())
            .field(
                "signer_not_after",
                &OffsetDateTime::from(self.signer_not_after),
            )
            .finish()
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), CaError> {
    Identity::new(trust_domain, "ns", "sa")
        .map(drop)
        .map_err(|source| CaError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
            source,
        })
}

fn random() -> &'static dyn SecureRandom {
    rustls::crypto::aws_lc_rs::default_provider().secure_random
}

/// 16 random bytes, positive and with a fixed length: 126 bits of entropy,
/// well past the 64 the CA/Browser Forum asks for.
fn random_serial(random: &dyn SecureRandom) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes).map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn checked_add(now: SystemTime, duration: Duration) -> Result<SystemTime, CaError> {
    now.checked_add(duration).ok_or_else(|| {
        CaError::Validity(format!("{duration:?} from now is not a representable time"))
    })
}

/// Every general name in every SAN extension the CSR requests. Two
/// extension-request attributes or two SAN extensions are not merged away:
/// all their names count, so "exactly one" means exactly one.
fn requested_sans<'a>(
    csr: &'a X509CertificationRequest<'_>,
) -> Result<Vec<&'a GeneralName<'a>>, CaError> {
    let mut names = Vec::new();
    for attribute in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() else {
            continue;
        };
        for extension in &request.extensions {
            if extension.oid != OID_X509_EXT_SUBJECT_ALT_NAME {
                continue;
            }
            match extension.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    names.extend(san.general_names.iter())
                }
                other => {
                    return Err(CaError::CsrMalformed(format!(
                        "subject alternative name extension cannot be parsed: {other:?}"
                    )));
                }
            }
        }
    }
    Ok(names)
}

fn key_and_csr(id: &Identity) -> Result<(KeyPair, String), CaError> {
    let key = cert::generate_key().map_err(|e| issued_error(id, e))?;
    let csr = cert::build_csr(id, &key).map_err(|e| issued_error(id, e))?;
    Ok((key, csr))
}

fn assemble(id: &Identity, key: &KeyPair, chain: &[String]) -> Result<WorkloadCert, CaError> {
    WorkloadCert::from_pem_chain(&key.serialize_pem(), chain).map_err(|e| issued_error(id, e))
}

fn issued_error(id: &Identity, source: CertError) -> CaError {
    CaError::Issued {
        identity: id.clone(),
        source: Box::new(source),
    }
}

fn plugin_error(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::PluginFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::ReadPlugin {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let text = read_file(path)?;
    cert::certs_from_pem(&path.display().to_string(), &text)
        .map_err(|e| plugin_error(path, e.to_string()))
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let text = read_file(path)?;
    let der = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| plugin_error(path, format!("no private key PEM block: {e}")))?;
    KeyPair::try_from(&der).map_err(|e| {
        plugin_error(
            path,
            format!("unsupported private key ({e}): use ECDSA P-256/P-384 or RSA"),
        )
    })
}

fn parse_cert<'a>(
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| plugin_error(path, format!("certificate is not valid X.509: {e}")))
}

fn cert_not_after(cert: &X509Certificate<'_>) -> SystemTime {
    cert::system_time(cert.validity().not_after)
}

/// Checks that `chain` starts with `signer` and links, signature by
/// signature, to one of `roots`. Returns the chain without any root: the
/// certificates that go between a leaf and the root in every response.
fn check_chain(
    signer: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    chain_path: &Path,
    root_path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let chain_error = |reason: String| CaError::Chain {
        path: chain_path.to_owned(),
        root: root_path.to_owned(),
        reason,
    };
    if chain.first() != Some(signer) {
        return Err(chain_error(format!(
            "its first certificate must be {CA_CERT}"
        )));
    }
    // Istio's cert-chain.pem may or may not end with the root; responses add
    // the root themselves, so drop it here.
    let without_roots: Vec<_> = chain
        .iter()
        .filter(|cert| !roots.contains(cert))
        .cloned()
        .collect();
    let parsed_roots = roots
        .iter()
        .map(|root| parse_cert(root_path, root))
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = without_roots
        .iter()
        .map(|cert| parse_cert(chain_path, cert))
        .collect::<Result<Vec<_>, _>>()?;
    for (index, cert) in parsed.iter().enumerate() {
        let signed_by = |issuer: &X509Certificate<'_>| {
            cert.issuer().as_raw() == issuer.subject().as_raw()
                && cert.verify_signature(Some(issuer.public_key())).is_ok()
        };
        let linked = match parsed.get(index + 1) {
            Some(next) => signed_by(next),
            None => parsed_roots.iter().any(signed_by),
        };
        if !linked {
            let by = if index + 1 < parsed.len() {
                "the next certificate in the chain"
            } else {
                "any root"
            };
            return Err(chain_error(format!(
                "certificate {index} (subject \"{}\", issuer \"{}\") is not signed by {by}",
                cert.subject(),
                cert.issuer()
            )));
        }
    }
    Ok(without_roots)
}

#[cfg(test)]
mod tests;
