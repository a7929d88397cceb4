//! Every rule of the CA has a case it accepts and a case it refuses; chains
//! are checked with webpki, the way peers check them during handshakes.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
use x509_parser::prelude::FromDer;

use super::*;
use crate::cert::{build_csr, generate_key, identity_of, inspect};

const HOUR: Duration = Duration::from_secs(3600);

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn mesh_ca() -> Ca {
    Ca::self_signed("cluster.local", 24 * HOUR).unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A CSR with exactly `sans` and an empty subject, properly signed: for the
/// cases `build_csr` would never produce.
fn csr_with(sans: Vec<SanType>) -> String {
    let key = generate_key().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn csr_der(csr_pem: &str) -> Vec<u8> {
    CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn csr_pem(der: Vec<u8>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

/// Validates `chain` (leaf first, root last, as the CA returns it) with
/// webpki against `roots`, for `usage`.
fn verify(
    chain: &[String],
    roots: &[CertificateDer<'static>],
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).unwrap())
        .collect();
    let leaf = der(&chain[0]);
    let intermediates: Vec<_> = chain[1..chain.len() - 1]
        .iter()
        .map(|pem| der(pem))
        .collect();
    webpki::EndEntityCert::try_from(&leaf)?
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map(drop)
}

fn assert_near(actual: SystemTime, expected: SystemTime) {
    let gap = actual
        .duration_since(expected)
        .unwrap_or_else(|e| e.duration());
    assert!(
        gap <= Duration::from_secs(5),
        "{actual:?} is not near {expected:?}"
    );
}

#[test]
fn csr_round_trip_signs_one_uri_san_with_a_random_serial_and_the_ttl() {
    let ca = mesh_ca();
    let workload = id("spiffe://cluster.local/ns/default/sa/productpage");
    let key = generate_key().unwrap();
    let csr = build_csr(&workload, &key).unwrap();
    let now = SystemTime::now();
    let chain = ca.sign_csr(&csr, &workload, HOUR).unwrap();

    assert_eq!(chain.len(), 2, "leaf then root");
    assert_eq!(der(&chain[1]), ca.root_certs()[0]);
    assert_eq!(chain[1], ca.roots_pem()[0]);
    let leaf = der(&chain[0]);
    let info = inspect(&leaf).unwrap();
    assert_eq!(info.uri_sans, vec![workload.to_string()]);
    assert_eq!(identity_of(&leaf).unwrap(), workload);
    assert_eq!(
        info.serial.len(),
        32,
        "16 bytes, high bits fixed: {}",
        info.serial
    );
    assert!(
        info.serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_near(info.not_before, now - BACKDATE);
    assert_near(info.not_after, now + HOUR);

    let again = inspect(&der(&ca.sign_csr(&csr, &workload, HOUR).unwrap()[0])).unwrap();
    assert_ne!(again.serial, info.serial, "serials must not repeat");
}

#[test]
fn leaf_is_an_end_entity_for_server_and_client_auth_with_a_critical_san() {
    let ca = mesh_ca();
    let workload = ca
        .issue(&id("spiffe://cluster.local/ns/a/sa/b"), HOUR)
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&workload.chain[0]).unwrap();
    assert!(!leaf.is_ca());
    assert!(
        leaf.basic_constraints().unwrap().is_some(),
        "CA:FALSE is explicit"
    );
    assert_eq!(
        leaf.subject().iter().count(),
        0,
        "empty subject, as Istio issues"
    );
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let san = leaf
        .get_extension_unique(&OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap()
        .unwrap();
    assert!(
        san.critical,
        "RFC 5280: SAN is critical when the subject is empty"
    );
    assert!(matches!(
        san.parsed_extension(),
        ParsedExtension::SubjectAlternativeName(_)
    ));
}

#[test]
fn self_signed_root_is_a_ca_named_after_its_trust_domain() {
    let ca = mesh_ca();
    assert_eq!(ca.trust_domain(), "cluster.local");
    let roots = ca.root_certs();
    let (_, root) = X509Certificate::from_der(&roots[0]).unwrap();
    assert!(root.is_ca());
    let usage = root.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert_eq!(root.subject().to_string(), "O=cluster.local");
    assert_eq!(root.subject(), root.issuer());

    let error = Ca::self_signed("Not A Domain", HOUR).unwrap_err();
    assert!(
        matches!(error, CaError::InvalidTrustDomain { .. }),
        "{error}"
    );
}

#[test]
fn tampered_csr_is_refused_for_its_signature() {
    let ca = mesh_ca();
    let workload = id("spiffe://cluster.local/ns/a/sa/b");
    let csr = build_csr(&workload, &generate_key().unwrap()).unwrap();
    let original = csr_der(&csr);

    // The last byte lies inside the signature's `s` integer.
    let mut signature = original.clone();
    *signature.last_mut().unwrap() ^= 0x01;
    // Rewriting the URI's last character keeps the DER well-formed.
    let mut body = original.clone();
    let at = body.windows(8).position(|w| w == b"ns/a/sa/").unwrap() + 8;
    body[at] = b'c';

    for tampered in [signature, body] {
        let error = ca
            .sign_csr(&csr_pem(tampered), &workload, HOUR)
            .unwrap_err();
        assert!(matches!(error, CaError::CsrSignature(_)), "{error}");
        assert!(
            error.to_string().contains("generate a fresh CSR"),
            "{error}"
        );
    }
    ca.sign_csr(&csr_pem(original), &workload, HOUR).unwrap();
}

#[test]
fn csr_must_carry_exactly_one_spiffe_uri_san_of_the_authorized_identity() {
    let ca = mesh_ca();
    let authorized = id("spiffe://cluster.local/ns/a/sa/b");
    let sign = |sans| ca.sign_csr(&csr_with(sans), &authorized, HOUR);

    assert!(sign(vec![uri("spiffe://cluster.local/ns/a/sa/b")]).is_ok());
    let error = sign(vec![]).unwrap_err();
    assert!(matches!(error, CaError::NoSan { .. }), "{error}");
    let error = sign(vec![
        uri("spiffe://cluster.local/ns/a/sa/b"),
        uri("spiffe://cluster.local/ns/a/sa/c"),
    ])
    .unwrap_err();
    assert!(
        matches!(&error, CaError::SeveralSans { names } if names.len() == 2),
        "{error}"
    );
    let error = sign(vec![
        uri("spiffe://cluster.local/ns/a/sa/b"),
        SanType::DnsName("b.a".try_into().unwrap()),
    ])
    .unwrap_err();
    assert!(matches!(error, CaError::SeveralSans { .. }), "{error}");
    let error = sign(vec![SanType::DnsName("b.a.svc".try_into().unwrap())]).unwrap_err();
    assert!(matches!(error, CaError::NonUriSan(_)), "{error}");
    let error = sign(vec![uri("spiffe://cluster.local/ns/a")]).unwrap_err();
    assert!(matches!(error, CaError::InvalidIdentity { .. }), "{error}");

    let error = sign(vec![uri("spiffe://cluster.local/ns/a/sa/c")]).unwrap_err();
    assert!(matches!(error, CaError::NotAuthorized { .. }), "{error}");
    assert!(
        error.to_string().contains("ns/a/sa/c") && error.to_string().contains("ns/a/sa/b"),
        "{error}"
    );

    let foreign = id("spiffe://other.example/ns/a/sa/b");
    let csr = build_csr(&foreign, &generate_key().unwrap()).unwrap();
    let error = ca.sign_csr(&csr, &foreign, HOUR).unwrap_err();
    assert!(
        matches!(error, CaError::ForeignTrustDomain { .. }),
        "{error}"
    );
}

#[test]
fn csr_that_is_not_a_pem_csr_is_refused() {
    let ca = mesh_ca();
    let authorized = id("spiffe://cluster.local/ns/a/sa/b");
    let error = ca.sign_csr("hello", &authorized, HOUR).unwrap_err();
    assert!(matches!(error, CaError::CsrPem(_)), "{error}");
    // A certificate is not a request, even a perfectly good one.
    let error = ca
        .sign_csr(&ca.roots_pem()[0], &authorized, HOUR)
        .unwrap_err();
    assert!(matches!(error, CaError::CsrPem(_)), "{error}");
    let error = ca
        .sign_csr(&csr_pem(vec![0x30, 0x00]), &authorized, HOUR)
        .unwrap_err();
    assert!(matches!(error, CaError::CsrMalformed(_)), "{error}");
}

#[test]
fn validity_is_checked_and_capped_at_the_signers_expiry() {
    let ca = Ca::self_signed("cluster.local", 2 * HOUR).unwrap();
    let workload = id("spiffe://cluster.local/ns/a/sa/b");
    let csr = build_csr(&workload, &generate_key().unwrap()).unwrap();
    let error = ca.sign_csr(&csr, &workload, Duration::ZERO).unwrap_err();
    assert!(matches!(error, CaError::Validity(_)), "{error}");

    let capped = ca.issue(&workload, 10 * HOUR).unwrap();
    let root = inspect(&ca.root_certs()[0]).unwrap();
    assert_eq!(capped.info.not_after, root.not_after);

    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(&workload, now - 2 * HOUR, now - HOUR)
        .unwrap();
    assert!(expired.is_expired_at(now));
    assert_near(expired.info.not_before, now - 2 * HOUR);
    let error = ca
        .issue_with_validity(&workload, now, now - HOUR)
        .unwrap_err();
    assert!(matches!(error, CaError::Validity(_)), "{error}");
}

#[test]
fn issued_leaf_validates_against_its_root_and_not_another() {
    let ca = mesh_ca();
    let chain = ca
        .sign_csr(
            &build_csr(
                &id("spiffe://cluster.local/ns/a/sa/b"),
                &generate_key().unwrap(),
            )
            .unwrap(),
            &id("spiffe://cluster.local/ns/a/sa/b"),
            HOUR,
        )
        .unwrap();
    verify(&chain, &ca.root_certs(), webpki::KeyUsage::server_auth()).unwrap();
    verify(&chain, &ca.root_certs(), webpki::KeyUsage::client_auth()).unwrap();

    // Same trust domain, same subject, different key: must not validate.
    let other = mesh_ca();
    assert!(verify(&chain, &other.root_certs(), webpki::KeyUsage::server_auth()).is_err());
    let other_leaf = other
        .issue(&id("spiffe://cluster.local/ns/a/sa/b"), HOUR)
        .unwrap();
    let other_chain = [
        cert::to_pem(&other_leaf.chain[0]),
        other.roots_pem()[0].clone(),
    ];
    assert!(
        verify(
            &other_chain,
            &ca.root_certs(),
            webpki::KeyUsage::client_auth()
        )
        .is_err()
    );
}

/// A root and an intermediate made with rcgen alone (not with `Ca`), written
/// in Istio's plug-in layout, as `istioctl`'s cert tooling would leave them.
struct PluginFiles {
    dir: tempfile::TempDir,
    root: CertificateDer<'static>,
}

fn ca_params(common_name: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Istio");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(constraint);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    params
}

fn plugin_files(intermediate_key: KeyPair) -> PluginFiles {
    let root_key = generate_key().unwrap();
    let root_params = ca_params("Root CA", BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let intermediate = ca_params("Intermediate CA", BasicConstraints::Constrained(0))
        .signed_by(
            &intermediate_key,
            &Issuer::from_params(&root_params, &root_key),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write(CA_CERT, intermediate.pem());
    write(CA_KEY, intermediate_key.serialize_pem());
    write(ROOT_CERT, root.pem());
    write(CERT_CHAIN, intermediate.pem() + &root.pem());
    PluginFiles {
        dir,
        root: root.der().clone(),
    }
}

#[test]
fn plugin_ca_signs_chains_that_validate_for_server_and_client() {
    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    for intermediate_key in [generate_key().unwrap(), rsa] {
        let files = plugin_files(intermediate_key);
        let ca = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap();
        assert_eq!(ca.root_certs(), vec![files.root.clone()]);

        let workload = id("spiffe://cluster.local/ns/a/sa/b");
        let key = generate_key().unwrap();
        let chain = ca
            .sign_csr(&build_csr(&workload, &key).unwrap(), &workload, HOUR)
            .unwrap();
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        assert_eq!(der(&chain[2]), files.root);
        verify(
            &chain,
            std::slice::from_ref(&files.root),
            webpki::KeyUsage::server_auth(),
        )
        .unwrap();
        verify(
            &chain,
            std::slice::from_ref(&files.root),
            webpki::KeyUsage::client_auth(),
        )
        .unwrap();

        let assembled = WorkloadCert::from_pem_chain(&key.serialize_pem(), &chain).unwrap();
        assert_eq!(assembled.identity, workload);
        assert_eq!(
            assembled.chain.len(),
            2,
            "leaf and intermediate, never the root"
        );
        assert_eq!(assembled.roots, vec![files.root.clone()]);
    }
}

#[test]
fn plugin_ca_with_a_key_of_another_certificate_is_refused_naming_the_file() {
    let files = plugin_files(generate_key().unwrap());
    std::fs::write(
        files.dir.path().join(CA_KEY),
        generate_key().unwrap().serialize_pem(),
    )
    .unwrap();
    let error = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(error, CaError::KeyMismatch { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("ca-key.pem does not match") && message.contains("ca-cert.pem"),
        "{message}"
    );
}

#[test]
fn plugin_ca_that_does_not_chain_to_its_root_is_refused() {
    let files = plugin_files(generate_key().unwrap());
    let stranger = mesh_ca();
    std::fs::write(
        files.dir.path().join(ROOT_CERT),
        stranger.roots_pem()[0].clone(),
    )
    .unwrap();
    let error = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(error, CaError::Chain { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("cert-chain.pem does not chain to"),
        "{error}"
    );
    assert!(error.to_string().contains("root-cert.pem"), "{error}");
}

#[test]
fn plugin_ca_with_a_missing_or_broken_file_names_it() {
    let files = plugin_files(generate_key().unwrap());
    std::fs::remove_file(files.dir.path().join(CERT_CHAIN)).unwrap();
    let error = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(error, CaError::ReadPlugin { .. }), "{error}");
    assert!(error.to_string().contains("cert-chain.pem"), "{error}");

    std::fs::write(files.dir.path().join(CA_CERT), "not pem").unwrap();
    let error = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(error, CaError::PluginFile { .. }), "{error}");
    assert!(error.to_string().contains("ca-cert.pem"), "{error}");
}

#[test]
fn plugin_ca_whose_signing_certificate_is_no_ca_is_refused() {
    let files = plugin_files(generate_key().unwrap());
    // A workload leaf with its real key is a perfectly matched, useless pair.
    let ca = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap();
    let key = generate_key().unwrap();
    let workload = id("spiffe://cluster.local/ns/a/sa/b");
    let chain = ca
        .sign_csr(&build_csr(&workload, &key).unwrap(), &workload, HOUR)
        .unwrap();
    std::fs::write(files.dir.path().join(CA_CERT), &chain[0]).unwrap();
    std::fs::write(files.dir.path().join(CA_KEY), key.serialize_pem()).unwrap();
    let error = Ca::load_plugin(files.dir.path(), "cluster.local").unwrap_err();
    assert!(
        error.to_string().contains("not a CA certificate"),
        "{error}"
    );
}

#[test]
fn server_cert_validates_for_its_dns_names_and_ip_and_nothing_else() {
    let ca = mesh_ca();
    let (chain, _key) = ca
        .issue_server_cert(&["istiod.istio-system.svc", "localhost", "127.0.0.1"], HOUR)
        .unwrap();
    assert_eq!(chain.len(), 1, "self-signed root: the leaf alone");
    let anchors: Vec<_> = ca
        .root_certs()
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).unwrap().to_owned())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    let name = |n: &str| rustls_pki_types::ServerName::try_from(n.to_owned()).unwrap();
    for ok in ["istiod.istio-system.svc", "localhost", "127.0.0.1"] {
        leaf.verify_is_valid_for_subject_name(&name(ok)).unwrap();
    }
    assert!(
        leaf.verify_is_valid_for_subject_name(&name("istiod.other.svc"))
            .is_err()
    );
    assert!(matches!(
        ca.issue_server_cert(&[], HOUR),
        Err(CaError::ServerCert { .. })
    ));
    assert!(matches!(
        ca.issue_server_cert(&["not a name!"], HOUR),
        Err(CaError::ServerCert { .. })
    ));
}
