//! The CA over real gRPC on loopback, with the generated client: each rule
//! (authentication, node authorization, CSR checks, TTL) has a request that
//! passes and one that is refused; then the state directory (root and token
//! persistence, file modes) and the plug-in CA.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use identity::Identity;
use istiod_lite::ca::{
    AuthError, Authenticator, CaConfig, CaCounts, CaOrigin, CaService, CaStore, CaStoreError,
    Caller, IMPERSONATED_IDENTITY, NodeDirectory, NodeTokens,
};
use prost_types::{Struct, Value, value::Kind};
use proto::ca::IstioCertificateRequest;
use proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use tempfile::TempDir;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request};

const TRUST_DOMAIN: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// The CA backdates every leaf by a minute (clock skew).
const BACKDATE: Duration = Duration::from_secs(60);

type Client = IstioCertificateServiceClient<Channel>;

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).unwrap()
}

/// The workload on `node-a`.
fn on_a() -> Identity {
    id("ns-a", "sa-a")
}

/// The workload on `node-b`.
fn on_b() -> Identity {
    id("ns-b", "sa-b")
}

/// Which identities run on which node: what the translation layer will
/// provide, here a fixed map.
#[derive(Default)]
struct Directory(HashMap<&'static str, HashSet<Identity>>);

impl NodeDirectory for Directory {
    fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool {
        self.0.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

fn directory() -> Directory {
    let mut directory = Directory::default();
    directory.0.insert("node-a", HashSet::from([on_a()]));
    directory.0.insert("node-b", HashSet::from([on_b()]));
    directory
}

/// A running CA with node tokens for `node-a` and `node-b`.
struct Mesh {
    state: TempDir,
    store: CaStore,
    service_stats: Arc<istiod_lite::ca::CaStats>,
    client: Client,
}

impl Mesh {
    async fn start() -> Result<Mesh> {
        Mesh::start_with(TempDir::new()?, None).await
    }

    async fn start_with(state: TempDir, plugin: Option<&Path>) -> Result<Mesh> {
        let store = CaStore::open(state.path(), TRUST_DOMAIN, plugin)?;
        let tokens = NodeTokens::open(state.path(), ["node-a", "node-b"])?;
        let service = CaService::new(store.ca().clone(), tokens, directory(), CaConfig::default());
        let service_stats = service.stats();
        let client = serve(service).await?;
        Ok(Mesh {
            state,
            store,
            service_stats,
            client,
        })
    }

    fn token(&self, node: &str) -> Result<String> {
        let path = self.state.path().join(format!("tokens/{node}.token"));
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(text.trim().to_owned())
    }

    fn counts(&self) -> CaCounts {
        self.service_stats.counts()
    }

    fn root(&self) -> CertificateDer<'static> {
        der(&self.store.roots_pem()[0])
    }
}

/// Serves `service` on 127.0.0.1:0 in plaintext and connects a client.
async fn serve<A: Authenticator, D: NodeDirectory>(service: CaService<A, D>) -> Result<Client> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(IstioCertificateServiceClient::new(channel))
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn csr_for(identity: &Identity) -> String {
    let key = identity::cert::generate_key().unwrap();
    identity::cert::build_csr(identity, &key).unwrap()
}

/// A CSR request, as ztunnel sends it: bearer token in the gRPC metadata,
/// the workload named under `ImpersonatedIdentity`.
fn request(
    csr: String,
    ttl_seconds: i64,
    impersonate: Option<&Identity>,
    token: Option<&str>,
) -> Request<IstioCertificateRequest> {
    let metadata = impersonate.map(|identity| Struct {
        fields: [(
            IMPERSONATED_IDENTITY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(identity.to_string())),
            },
        )]
        .into(),
    });
    let mut request = Request::new(IstioCertificateRequest {
        csr,
        validity_duration: ttl_seconds,
        metadata,
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Checks a response chain: leaf first with exactly `expected` as its one URI
/// SAN, root last and equal to `root`, and the leaf validates against `root`
/// for client auth through any intermediates. Returns the leaf's validity.
fn check_chain(
    chain: &[String],
    expected: &Identity,
    root: &CertificateDer<'static>,
) -> Result<(SystemTime, SystemTime)> {
    assert!(chain.len() >= 2, "chain has {} element(s)", chain.len());
    let certs: Vec<_> = chain.iter().map(|pem| der(pem)).collect();
    assert!(
        chain
            .iter()
            .all(|pem| pem.matches("BEGIN CERTIFICATE").count() == 1),
        "one certificate per element"
    );
    let (leaf, rest) = certs.split_first().context("empty chain")?;
    let (last, intermediates) = rest.split_last().context("no root")?;
    assert_eq!(last, root, "the root comes last");

    let info = identity::cert::inspect(leaf)?;
    assert_eq!(info.uri_sans, vec![expected.to_string()]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        identity::tls::provider(),
    )
    .build()?;
    verifier.verify_client_cert(leaf, intermediates, UnixTime::now())?;
    Ok((info.not_before, info.not_after))
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, says: &[&str]) {
    let status = result.expect_err("the request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for part in says {
        assert!(
            status.message().contains(part),
            "{:?} lacks {part:?}",
            status.message()
        );
    }
}

/// Who may obtain which identity.
mod ca_authorization {
    use super::*;

    #[tokio::test]
    async fn node_obtains_the_identity_of_a_workload_on_its_node() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;

        // As ztunnel asks: on behalf of the workload, by impersonation.
        let response = mesh
            .client
            .create_certificate(request(csr_for(&on_a()), 3600, Some(&on_a()), Some(&token)))
            .await?
            .into_inner();
        check_chain(&response.cert_chain, &on_a(), &mesh.root())?;

        // Without impersonation metadata the CSR's SAN names the identity.
        let response = mesh
            .client
            .create_certificate(request(csr_for(&on_a()), 3600, None, Some(&token)))
            .await?
            .into_inner();
        check_chain(&response.cert_chain, &on_a(), &mesh.root())?;
        assert_eq!(mesh.counts().issued, 2);
        Ok(())
    }

    #[tokio::test]
    async fn workload_on_another_node_is_refused_and_counted() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;

        let result = mesh
            .client
            .create_certificate(request(csr_for(&on_b()), 3600, Some(&on_b()), Some(&token)))
            .await;
        assert_refused(
            result,
            Code::PermissionDenied,
            &["node-a", &on_b().to_string()],
        );
        // Naming it only in the CSR changes nothing.
        let result = mesh
            .client
            .create_certificate(request(csr_for(&on_b()), 3600, None, Some(&token)))
            .await;
        assert_refused(result, Code::PermissionDenied, &["node-a"]);
        // Nor does an identity no node runs.
        let nowhere = id("ns-a", "not-scheduled");
        let result = mesh
            .client
            .create_certificate(request(
                csr_for(&nowhere),
                3600,
                Some(&nowhere),
                Some(&token),
            ))
            .await;
        assert_refused(result, Code::PermissionDenied, &["not-scheduled"]);

        let counts = mesh.counts();
        assert_eq!((counts.denied, counts.issued), (3, 0));
        Ok(())
    }

    #[tokio::test]
    async fn impersonating_one_identity_with_a_csr_for_another_is_refused() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;
        // node-a may have on_a(), but the key in this CSR asks for on_b().
        let result = mesh
            .client
            .create_certificate(request(csr_for(&on_b()), 3600, Some(&on_a()), Some(&token)))
            .await;
        assert_refused(result, Code::InvalidArgument, &[&on_b().to_string()]);
        assert_eq!(mesh.counts().issued, 0);
        Ok(())
    }

    #[tokio::test]
    async fn unknown_and_missing_tokens_are_unauthenticated() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let csr = csr_for(&on_a());

        let unknown = "00".repeat(32);
        let result = mesh
            .client
            .create_certificate(request(csr.clone(), 3600, Some(&on_a()), Some(&unknown)))
            .await;
        assert_refused(
            result,
            Code::Unauthenticated,
            &["not one istiod-lite knows"],
        );

        let result = mesh
            .client
            .create_certificate(request(csr.clone(), 3600, Some(&on_a()), None))
            .await;
        assert_refused(result, Code::Unauthenticated, &["no bearer token"]);

        // A valid token under another scheme is not a bearer token.
        let mut basic = request(csr, 3600, Some(&on_a()), None);
        let token = mesh.token("node-a")?;
        basic
            .metadata_mut()
            .insert("authorization", format!("Basic {token}").parse()?);
        let result = mesh.client.create_certificate(basic).await;
        assert_refused(result, Code::Unauthenticated, &["Bearer"]);

        let counts = mesh.counts();
        assert_eq!((counts.unauthenticated, counts.issued), (3, 0));
        Ok(())
    }

    /// Another authenticator behind the same trait (TokenReview will be one):
    /// every caller is the workload `on_a()`.
    struct AlwaysWorkloadA;

    impl Authenticator for AlwaysWorkloadA {
        async fn authenticate(&self, _: &MetadataMap) -> Result<Caller, AuthError> {
            Ok(Caller::Workload(on_a()))
        }
    }

    #[tokio::test]
    async fn workload_obtains_its_own_identity_only() -> Result<()> {
        let state = TempDir::new()?;
        let store = CaStore::open(state.path(), TRUST_DOMAIN, None)?;
        let root = der(&store.roots_pem()[0]);
        let service = CaService::new(
            store.ca().clone(),
            AlwaysWorkloadA,
            directory(),
            CaConfig::default(),
        );
        let stats = service.stats();
        let mut client = serve(service).await?;

        let response = client
            .create_certificate(request(csr_for(&on_a()), 3600, None, None))
            .await?
            .into_inner();
        check_chain(&response.cert_chain, &on_a(), &root)?;

        let result = client
            .create_certificate(request(csr_for(&on_b()), 3600, None, None))
            .await;
        assert_refused(
            result,
            Code::PermissionDenied,
            &["only its own identity", &on_b().to_string()],
        );
        // Impersonation is for node proxies; a workload gets nothing from it.
        let result = client
            .create_certificate(request(csr_for(&on_b()), 3600, Some(&on_b()), None))
            .await;
        assert_refused(result, Code::PermissionDenied, &["only its own identity"]);
        assert_eq!((stats.counts().issued, stats.counts().denied), (1, 2));
        Ok(())
    }
}

/// CSRs that must be refused however the caller is authorized.
mod ca_csr {
    use super::*;

    fn csr_with_sans(sans: &[&Identity]) -> Result<String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        for san in sans {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(san.to_string().try_into()?));
        }
        Ok(params.serialize_request(&key)?.pem()?)
    }

    #[tokio::test]
    async fn csr_with_two_sans_or_none_is_refused() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;
        let two = csr_with_sans(&[&on_a(), &id("ns-a", "other")])?;

        for impersonate in [Some(on_a()), None] {
            let result = mesh
                .client
                .create_certificate(request(
                    two.clone(),
                    3600,
                    impersonate.as_ref(),
                    Some(&token),
                ))
                .await;
            assert_refused(
                result,
                Code::InvalidArgument,
                &["2 subject alternative names", "exactly one"],
            );
        }
        let none = csr_with_sans(&[])?;
        let result = mesh
            .client
            .create_certificate(request(none, 3600, None, Some(&token)))
            .await;
        assert_refused(
            result,
            Code::InvalidArgument,
            &["no subject alternative name"],
        );

        // The same request with a proper CSR passes: only the SANs were wrong.
        let one = csr_with_sans(&[&on_a()])?;
        mesh.client
            .create_certificate(request(one, 3600, Some(&on_a()), Some(&token)))
            .await?;
        let counts = mesh.counts();
        assert_eq!((counts.bad_csr, counts.issued), (3, 1));
        Ok(())
    }

    #[tokio::test]
    async fn csr_with_a_bad_signature_is_refused() -> Result<()> {
        let mut mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;
        let csr = csr_for(&on_a());
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())?
            .as_ref()
            .to_vec();
        // The last byte belongs to the ECDSA signature's `s`.
        *der.last_mut().context("empty CSR")? ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));

        for impersonate in [Some(on_a()), None] {
            let result = mesh
                .client
                .create_certificate(request(
                    tampered.clone(),
                    3600,
                    impersonate.as_ref(),
                    Some(&token),
                ))
                .await;
            assert_refused(
                result,
                Code::InvalidArgument,
                &["signature does not verify"],
            );
        }
        let result = mesh
            .client
            .create_certificate(request("not a csr".to_owned(), 3600, None, Some(&token)))
            .await;
        assert_refused(result, Code::InvalidArgument, &["CSR is not PEM"]);
        assert_eq!(mesh.counts().bad_csr, 3);
        Ok(())
    }
}

/// How long issued certificates live.
mod ca_ttl {
    use super::*;

    #[tokio::test]
    async fn ttl_is_capped_at_a_day_and_a_shorter_one_is_honoured() -> Result<()> {
        let mesh = Mesh::start().await?;
        let token = mesh.token("node-a")?;
        let slack = Duration::from_secs(5);

        let validity = |ttl_seconds: i64| {
            let request = request(csr_for(&on_a()), ttl_seconds, Some(&on_a()), Some(&token));
            let root = mesh.root();
            let mut client = mesh.client.clone();
            async move {
                let asked = SystemTime::now();
                let chain = client
                    .create_certificate(request)
                    .await?
                    .into_inner()
                    .cert_chain;
                let (not_before, not_after) = check_chain(&chain, &on_a(), &root)?;
                anyhow::Ok((asked, not_before, not_after))
            }
        };

        // A week is more than anyone gets.
        let (asked, not_before, not_after) = validity(7 * 24 * 3600).await?;
        assert!(not_after.duration_since(not_before)? <= DAY + BACKDATE);
        assert!(not_after.duration_since(asked)? <= DAY + slack);
        assert!(not_after.duration_since(asked)? >= DAY - slack);

        // Ten minutes are ten minutes.
        let (asked, _, not_after) = validity(600).await?;
        let lifetime = not_after.duration_since(asked)?;
        assert!(lifetime <= Duration::from_secs(600) + slack, "{lifetime:?}");
        assert!(lifetime >= Duration::from_secs(600) - slack, "{lifetime:?}");

        // Zero and negative mean "the default", a day.
        for ttl_seconds in [0, -5] {
            let (asked, _, not_after) = validity(ttl_seconds).await?;
            assert!(not_after.duration_since(asked)? >= DAY - slack);
            assert!(not_after.duration_since(asked)? <= DAY + slack);
        }
        Ok(())
    }

    #[test]
    fn ttl_policy_defaults_and_caps() {
        let config = CaConfig {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7200),
        };
        assert_eq!(config.ttl(0), Duration::from_secs(3600));
        assert_eq!(config.ttl(-1), Duration::from_secs(3600));
        assert_eq!(config.ttl(60), Duration::from_secs(60));
        assert_eq!(config.ttl(i64::MAX), Duration::from_secs(7200));
    }
}

/// Root and token persistence, file modes, broken state.
mod ca_state {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn root_and_tokens_survive_a_restart() -> Result<()> {
        let state = TempDir::new()?;
        let first = CaStore::open(state.path(), TRUST_DOMAIN, None)?;
        assert_eq!(
            first.origin(),
            &CaOrigin::Generated(state.path().join("ca"))
        );
        let tokens = NodeTokens::open(state.path(), ["node-a"])?;
        let token_a = std::fs::read_to_string(tokens.token_path("node-a"))?;
        let issued_before = first.ca().issue(&on_a(), Duration::from_secs(600))?;

        let second = CaStore::open(state.path(), TRUST_DOMAIN, None)?;
        assert_eq!(
            second.origin(),
            &CaOrigin::Persisted(state.path().join("ca"))
        );
        assert_eq!(second.roots_pem(), first.roots_pem());
        // A certificate from before the restart validates against the root after it.
        let chain: Vec<String> = issued_before
            .chain
            .iter()
            .map(identity::cert::to_pem)
            .chain(second.roots_pem())
            .collect();
        check_chain(&chain, &on_a(), &der(&second.roots_pem()[0]))?;

        // The restarted CA still signs, and a known node keeps its token while a
        // new one gets its own.
        let mesh = Mesh::start_with(state, None).await?;
        assert_eq!(mesh.store.roots_pem(), first.roots_pem());
        assert_eq!(mesh.token("node-a")?, token_a.trim());
        assert_ne!(mesh.token("node-b")?, mesh.token("node-a")?);
        let mut client = mesh.client.clone();
        let response = client
            .create_certificate(request(
                csr_for(&on_a()),
                600,
                Some(&on_a()),
                Some(token_a.trim()),
            ))
            .await?
            .into_inner();
        check_chain(&response.cert_chain, &on_a(), &der(&first.roots_pem()[0]))?;
        Ok(())
    }

    #[test]
    fn secrets_are_owner_only_and_loosened_ones_are_refused() -> Result<()> {
        let state = TempDir::new()?;
        CaStore::open(state.path(), TRUST_DOMAIN, None)?;
        let tokens = NodeTokens::open(state.path(), ["node-a", "node-b"])?;
        let key = state.path().join("ca/ca-key.pem");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&state.path().join("ca")), 0o700);
        assert_eq!(mode(&state.path().join("tokens")), 0o700);
        for node in ["node-a", "node-b"] {
            let path = tokens.token_path(node);
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            let token = std::fs::read_to_string(&path)?;
            // At least 128 bits, hex.
            assert!(
                token.trim().len() >= 32 && token.trim().bytes().all(|b| b.is_ascii_hexdigit())
            );
        }

        let path = tokens.token_path("node-a");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let error = NodeTokens::open(state.path(), ["node-a"]).unwrap_err();
        assert!(
            matches!(&error, CaStoreError::NotPrivate { path: p, .. } if *p == path),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))?;
        let error = CaStore::open(state.path(), TRUST_DOMAIN, None).unwrap_err();
        assert!(error.to_string().contains("ca-key.pem"), "{error}");
        Ok(())
    }

    #[test]
    fn broken_persisted_state_is_reported_with_the_file() -> Result<()> {
        let state = TempDir::new()?;
        CaStore::open(state.path(), TRUST_DOMAIN, None)?;
        std::fs::write(state.path().join("ca/ca-cert.pem"), "garbage")?;
        let error = CaStore::open(state.path(), TRUST_DOMAIN, None).unwrap_err();
        assert!(matches!(error, CaStoreError::Persisted { .. }), "{error}");
        assert!(error.to_string().contains("ca-cert.pem"), "{error}");

        let tokens_dir = state.path().join("tokens");
        std::fs::create_dir_all(&tokens_dir)?;
        let short = tokens_dir.join("node-a.token");
        std::fs::write(&short, "abcd\n")?;
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600))?;
        let error = NodeTokens::open(state.path(), ["node-a"]).unwrap_err();
        assert!(error.to_string().contains("node-a.token"), "{error}");
        assert!(error.to_string().contains("128 bits"), "{error}");
        // Every token on disk is loaded at open, so the broken one fails an
        // open that does not name its node too.
        let error = NodeTokens::open(state.path(), [] as [&str; 0]).unwrap_err();
        assert!(error.to_string().contains("node-a.token"), "{error}");

        std::fs::remove_file(&short)?;
        let error = NodeTokens::open(state.path(), ["../escape"]).unwrap_err();
        assert!(
            matches!(error, CaStoreError::InvalidNodeName { .. }),
            "{error}"
        );
        Ok(())
    }
}

/// Istio's plug-in CA files.
mod ca_plugin {
    use super::*;

    fn ca_params(name: &str, constraint: BasicConstraints) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(constraint);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    /// Istio's plug-in layout: a root, and an intermediate that signs.
    fn write_plugin_dir(dir: &Path) -> Result<CertificateDer<'static>> {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let root_params = ca_params("plug-in root", BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key)?;
        let intermediate_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let intermediate = ca_params("plug-in intermediate", BasicConstraints::Constrained(0))
            .signed_by(&intermediate_key, &Issuer::new(root_params, root_key))?;
        std::fs::write(dir.join("ca-cert.pem"), intermediate.pem())?;
        std::fs::write(dir.join("ca-key.pem"), intermediate_key.serialize_pem())?;
        std::fs::write(dir.join("root-cert.pem"), root.pem())?;
        std::fs::write(dir.join("cert-chain.pem"), intermediate.pem() + &root.pem())?;
        Ok(root.der().clone())
    }

    #[tokio::test]
    async fn plugin_ca_is_used_when_configured() -> Result<()> {
        let plugin = TempDir::new()?;
        let plugin_root = write_plugin_dir(plugin.path())?;
        let state = TempDir::new()?;
        let state_path = state.path().to_owned();

        let mut mesh = Mesh::start_with(state, Some(plugin.path())).await?;
        assert_eq!(
            mesh.store.origin(),
            &CaOrigin::Plugin(plugin.path().to_owned())
        );
        assert_eq!(mesh.root(), plugin_root);
        // No self-signed root is generated next to a plug-in CA.
        assert!(!state_path.join("ca").exists());

        let token = mesh.token("node-a")?;
        let response = mesh
            .client
            .create_certificate(request(csr_for(&on_a()), 3600, Some(&on_a()), Some(&token)))
            .await?
            .into_inner();
        assert_eq!(response.cert_chain.len(), 3, "leaf, intermediate, root");
        check_chain(&response.cert_chain, &on_a(), &plugin_root)?;

        // A plug-in directory that lacks a file is reported with that file.
        std::fs::remove_file(plugin.path().join("ca-key.pem"))?;
        let error = CaStore::open(&state_path, TRUST_DOMAIN, Some(plugin.path())).unwrap_err();
        assert!(error.to_string().contains("ca-key.pem"), "{error}");
        Ok(())
    }
}
