//! Keys, CSRs and certificates. `WorkloadCert` is what a workload presents:
//! its leaf certificate (with exactly one SPIFFE URI SAN), the intermediates
//! that chain it to the mesh root, its private key, and the roots it trusts.
//!
//! A workload's name lives only in its URI SAN: the subject stays empty, as in
//! Istio, so there is exactly one place to read an identity from, and
//! [`identity_of`] refuses any certificate where that place is ambiguous.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::{Identity, IdentityError};

/// A workload's certificate and key, ready to build TLS configs from.
#[derive(Debug)]
pub struct WorkloadCert {
    /// The identity in the leaf's URI SAN.
    pub identity: Identity,
    /// Leaf first, then intermediates; never the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// Trust anchors: the mesh root(s) peers must chain to.
    pub roots: Vec<CertificateDer<'static>>,
    /// What status pages show; parsed once from the leaf.
    pub info: CertInfo,
}

/// The facts about a certificate that status pages and rotation need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Every URI SAN in the certificate, in order.
    pub uri_sans: Vec<String>,
}

/// Why a key, CSR or certificate could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "cannot generate an ECDSA P-256 key: {0} (is the aws-lc-rs crypto backend usable here?)"
    )]
    KeyGeneration(#[source] rcgen::Error),
    #[error("cannot build a CSR for {identity}: {source}")]
    Csr {
        identity: Identity,
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate is not valid X.509 DER: {0} (was it PEM-decoded first?)")]
    Malformed(String),
    #[error(
        "certificate must carry exactly one URI SAN (its SPIFFE identity), found {} [{}]; \
         it was not issued by a mesh CA",
        .uris.len(), .uris.join(", ")
    )]
    UriSanCount { uris: Vec<String> },
    #[error("certificate URI SAN is not a SPIFFE identity: {0}")]
    NotSpiffe(#[source] IdentityError),
    #[error("{what} is not usable PEM: {reason}")]
    Pem { what: String, reason: String },
    #[error(
        "certificate chain has {0} element(s) but must be leaf, intermediates, then the root \
         last: did the CA leave out its root?"
    )]
    MissingRoot(usize),
    #[error("private key cannot be used: {0} (expected a PKCS#8, SEC1 or PKCS#1 key)")]
    Key(#[source] rcgen::Error),
    #[error(
        "private key does not match the leaf certificate for {identity}: the CA answered a \
         different CSR than the one made with this key"
    )]
    KeyMismatch { identity: Identity },
}

/// Generates a fresh ECDSA P-256 key: what Istio's ztunnel uses, and fast to
/// sign and verify on every handshake.
pub fn generate_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::KeyGeneration)
}

/// A PEM CSR for `id`, signed by `key`: an empty subject and one URI SAN.
///
/// The CA decides everything else (usages, validity); asking for more would
/// only give it something to refuse.
pub fn build_csr(id: &Identity, key: &KeyPair) -> Result<String, CertError> {
    let csr_error = |source| CertError::Csr {
        identity: id.clone(),
        source,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().map_err(csr_error)?)];
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(csr_error)
}

/// Parses the facts status pages and rotation need from a DER certificate.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let cert = parse(der)?;
    let validity = cert.validity();
    Ok(CertInfo {
        serial: format!("{:x}", cert.serial),
        not_before: system_time(validity.not_before),
        not_after: system_time(validity.not_after),
        uri_sans: uri_sans(&cert)?.into_iter().map(str::to_owned).collect(),
    })
}

/// The SPIFFE identity a certificate proves: its one and only URI SAN.
///
/// Strict because the TLS verifiers call it on every peer leaf: a certificate
/// with no URI SAN or several is refused rather than guessed at. Other SAN
/// kinds (DNS, IP) are ignored; they never name a workload.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<Identity, CertError> {
    let cert = parse(der)?;
    match uri_sans(&cert)?.as_slice() {
        [uri] => uri.parse().map_err(CertError::NotSpiffe),
        uris => Err(CertError::UriSanCount {
            uris: uris.iter().map(|uri| (*uri).to_owned()).collect(),
        }),
    }
}

/// Encodes a DER certificate as one PEM `CERTIFICATE` block (LF line endings).
pub fn to_pem(der: &CertificateDer<'_>) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.as_ref());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Every certificate in a PEM text, in order; `what` names the text in errors.
pub(crate) fn certs_from_pem(
    what: &str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem_error = |reason: String| CertError::Pem {
        what: what.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

/// Parses a whole certificate; trailing bytes are refused, as webpki does.
fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// URI SANs in order. A duplicated SAN extension is an error, not a merge.
fn uri_sans<'a>(cert: &X509Certificate<'a>) -> Result<Vec<&'a str>, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Malformed(format!("subject alternative names: {e}")))?;
    let names = san
        .map(|ext| ext.value.general_names.as_slice())
        .unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

/// Times before 1970 are legal in certificates; they map below the epoch
/// rather than failing.
pub(crate) fn system_time(time: ASN1Time) -> SystemTime {
    let seconds = time.timestamp();
    let offset = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}

// === impl WorkloadCert ===

impl WorkloadCert {
    /// Assembles a workload certificate from its key and a chain as Istio's
    /// `CreateCertificate` returns it: leaf first, intermediates, root(s) last.
    ///
    /// Each element may hold several PEM blocks (Istio sends a root bundle as
    /// one string); the last element is always taken as the roots. The key
    /// must belong to the leaf, so a mixed-up CA response fails here rather
    /// than in the first handshake.
    pub fn from_pem_chain(key_pem: &str, chain_pem: &[String]) -> Result<Self, CertError> {
        let [leaf_and_intermediates @ .., root_pem] = chain_pem else {
            return Err(CertError::MissingRoot(0));
        };
        if leaf_and_intermediates.is_empty() {
            return Err(CertError::MissingRoot(chain_pem.len()));
        }
        let mut chain = Vec::new();
        for (index, pem) in leaf_and_intermediates.iter().enumerate() {
            chain.extend(certs_from_pem(
                &format!("certificate chain element {index}"),
                pem,
            )?);
        }
        let roots = certs_from_pem("root certificate (last chain element)", root_pem)?;

        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Pem {
                what: "private key".to_owned(),
                reason: e.to_string(),
            })?;
        // The first element always yields at least one certificate, or
        // certs_from_pem would have returned an error above.
        let leaf = chain
            .first()
            .ok_or(CertError::MissingRoot(chain_pem.len()))?;
        let identity = identity_of(leaf)?;
        let info = inspect(leaf)?;

        let key_pair = KeyPair::try_from(&key).map_err(CertError::Key)?;
        let leaf_key = parse(leaf)?.public_key().subject_public_key.data.to_vec();
        if key_pair.public_key_raw() != leaf_key.as_slice() {
            return Err(CertError::KeyMismatch { identity });
        }
        Ok(WorkloadCert {
            identity,
            chain,
            key,
            roots,
            info,
        })
    }

    /// Whether the leaf is past its `not_after` at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.info.not_after
    }

    /// The leaf and intermediates as PEM, leaf first (for status pages).
    pub fn chain_pem(&self) -> Vec<String> {
        self.chain.iter().map(to_pem).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    /// A self-signed certificate with exactly the given SANs, made without the
    /// CA so that it can break the CA's rules.
    fn cert_with_sans(sans: Vec<SanType>) -> (KeyPair, CertificateDer<'static>) {
        let key = generate_key().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let cert = params.self_signed(&key).unwrap();
        (key, cert.der().clone())
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn identity_of_reads_the_one_uri_san_and_ignores_dns_names() {
        let (_, cert) = cert_with_sans(vec![
            SanType::DnsName("example.com".try_into().unwrap()),
            uri("spiffe://cluster.local/ns/a/sa/b"),
        ]);
        assert_eq!(
            identity_of(&cert).unwrap(),
            id("spiffe://cluster.local/ns/a/sa/b")
        );
    }

    #[test]
    fn identity_of_refuses_zero_or_several_uri_sans_and_non_spiffe_uris() {
        let (_, none) = cert_with_sans(vec![SanType::DnsName("example.com".try_into().unwrap())]);
        let error = identity_of(&none).unwrap_err();
        assert!(
            matches!(&error, CertError::UriSanCount { uris } if uris.is_empty()),
            "{error}"
        );

        let (_, two) = cert_with_sans(vec![
            uri("spiffe://cluster.local/ns/a/sa/b"),
            uri("spiffe://cluster.local/ns/a/sa/c"),
        ]);
        let error = identity_of(&two).unwrap_err();
        assert!(
            matches!(&error, CertError::UriSanCount { uris } if uris.len() == 2),
            "{error}"
        );
        assert!(error.to_string().contains("found 2"), "{error}");

        let (_, https) = cert_with_sans(vec![uri("https://cluster.local/ns/a/sa/b")]);
        assert!(matches!(identity_of(&https), Err(CertError::NotSpiffe(_))));

        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(matches!(
            identity_of(&garbage),
            Err(CertError::Malformed(_))
        ));
    }

    #[test]
    fn csr_carries_only_the_uri_san_and_an_empty_subject() {
        let key = generate_key().unwrap();
        let csr = build_csr(&id("spiffe://cluster.local/ns/a/sa/b"), &key).unwrap();
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(
            params.params.subject_alt_names,
            vec![uri("spiffe://cluster.local/ns/a/sa/b")]
        );
        assert_eq!(params.params.distinguished_name.iter().count(), 0);
    }

    #[test]
    fn from_pem_chain_needs_a_root_after_the_leaf() {
        let (key, cert) = cert_with_sans(vec![uri("spiffe://cluster.local/ns/a/sa/b")]);
        let leaf = to_pem(&cert);
        let error = WorkloadCert::from_pem_chain(&key.serialize_pem(), std::slice::from_ref(&leaf))
            .unwrap_err();
        assert!(matches!(error, CertError::MissingRoot(1)), "{error}");
        assert!(matches!(
            WorkloadCert::from_pem_chain(&key.serialize_pem(), &[]),
            Err(CertError::MissingRoot(0))
        ));

        // Self-signed stands in for its own root here; only the shape matters.
        let workload =
            WorkloadCert::from_pem_chain(&key.serialize_pem(), &[leaf.clone(), leaf.clone()])
                .unwrap();
        assert_eq!(workload.chain.len(), 1);
        assert_eq!(workload.roots.len(), 1);
        assert_eq!(workload.chain_pem(), vec![leaf]);
        assert!(!workload.is_expired_at(SystemTime::now()));
        assert!(workload.is_expired_at(workload.info.not_after + Duration::from_secs(1)));
    }

    #[test]
    fn from_pem_chain_refuses_a_key_that_is_not_the_leafs() {
        let (_, cert) = cert_with_sans(vec![uri("spiffe://cluster.local/ns/a/sa/b")]);
        let other_key = generate_key().unwrap();
        let chain = [to_pem(&cert), to_pem(&cert)];
        let error = WorkloadCert::from_pem_chain(&other_key.serialize_pem(), &chain).unwrap_err();
        assert!(matches!(error, CertError::KeyMismatch { .. }), "{error}");
    }
}
