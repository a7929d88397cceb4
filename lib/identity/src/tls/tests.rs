//! Handshakes over in-memory pipes: each rule of the verifiers has a case that
//! passes and a case that fails.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::ca::Ca;

const HOUR: Duration = Duration::from_secs(3600);

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn mesh_ca() -> Ca {
    Ca::self_signed("cluster.local", 24 * HOUR).unwrap()
}

/// Runs one handshake (and a one-byte exchange, so that the server's verdict
/// on the client certificate reaches the client) and reports what each side saw.
async fn handshake(
    client: &WorkloadCert,
    expected: &[Identity],
    server: &WorkloadCert,
) -> (Result<(), String>, Result<Identity, String>) {
    let connector = TlsConnector::from(Arc::new(client_config(client, expected).unwrap()));
    let acceptor = TlsAcceptor::from(Arc::new(server_config(server).unwrap()));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let client_side = async move {
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let group = conn.negotiated_key_exchange_group().map(|g| g.name());
        assert_eq!(group, Some(rustls::NamedGroup::X25519MLKEM768));
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::join!(client_side, server_side)
}

#[tokio::test]
async fn expected_server_identity_is_accepted_and_client_identity_learned() {
    let ca = mesh_ca();
    let client = ca
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    let server = ca
        .issue(&id("spiffe://cluster.local/ns/b/sa/server"), HOUR)
        .unwrap();
    let expected = [
        id("spiffe://cluster.local/ns/x/sa/other"),
        server.identity.clone(),
    ];
    let (client_result, server_result) = handshake(&client, &expected, &server).await;
    client_result.unwrap();
    assert_eq!(server_result.unwrap(), client.identity);
}

#[tokio::test]
async fn unexpected_server_identity_is_refused() {
    let ca = mesh_ca();
    let client = ca
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    let server = ca
        .issue(&id("spiffe://cluster.local/ns/b/sa/impostor"), HOUR)
        .unwrap();
    let expected = [id("spiffe://cluster.local/ns/b/sa/server")];
    let (client_result, server_result) = handshake(&client, &expected, &server).await;
    let error = client_result.unwrap_err();
    assert!(
        error.contains("presented identity spiffe://cluster.local/ns/b/sa/impostor")
            && error.contains("spiffe://cluster.local/ns/b/sa/server"),
        "error should name both identities: {error}"
    );
    assert!(server_result.is_err());
}

#[tokio::test]
async fn server_from_another_ca_is_refused() {
    let client = mesh_ca()
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    let server_id = id("spiffe://cluster.local/ns/b/sa/server");
    let server = mesh_ca().issue(&server_id, HOUR).unwrap();
    let (client_result, _) = handshake(&client, &[server_id], &server).await;
    let error = client_result.unwrap_err();
    // Same subject name, different key: webpki reports a bad signature.
    assert!(
        error.contains("UnknownIssuer") || error.contains("BadSignature"),
        "{error}"
    );
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let server_ca = mesh_ca();
    let server = server_ca
        .issue(&id("spiffe://cluster.local/ns/b/sa/server"), HOUR)
        .unwrap();
    let mut client = mesh_ca()
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    // The client trusts the server's root, so only the server's check can fail.
    client.roots = server.roots.clone();
    let (client_result, server_result) =
        handshake(&client, std::slice::from_ref(&server.identity), &server).await;
    let error = server_result.unwrap_err();
    assert!(
        error.contains("UnknownIssuer") || error.contains("BadSignature"),
        "{error}"
    );
    assert!(client_result.is_err(), "client must see the refusal");
}

#[tokio::test]
async fn client_from_another_trust_domain_is_refused_even_when_its_root_is_trusted() {
    let mesh = mesh_ca();
    let foreign = Ca::self_signed("other.example", 24 * HOUR).unwrap();
    let mut server = mesh
        .issue(&id("spiffe://cluster.local/ns/b/sa/server"), HOUR)
        .unwrap();
    // Trusting both roots isolates the trust-domain rule from chain validation.
    server.roots.extend(foreign.root_certs());
    let mut outsider = foreign
        .issue(&id("spiffe://other.example/ns/a/sa/client"), HOUR)
        .unwrap();
    outsider.roots = server.roots.clone();
    let (_, server_result) =
        handshake(&outsider, std::slice::from_ref(&server.identity), &server).await;
    let error = server_result.unwrap_err();
    assert!(
        error.contains("spiffe://other.example/ns/a/sa/client")
            && error.contains("not in trust domain \"cluster.local\""),
        "{error}"
    );

    // Positive twin: a client of the mesh's own trust domain, same server.
    let insider = mesh
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    let (client_result, server_result) =
        handshake(&insider, std::slice::from_ref(&server.identity), &server).await;
    client_result.unwrap();
    assert_eq!(server_result.unwrap(), insider.identity);
}

#[tokio::test]
async fn expired_certificates_are_refused_in_both_directions() {
    let ca = mesh_ca();
    let now = SystemTime::now();
    let expired = |name: &str| {
        ca.issue_with_validity(&id(name), now - 2 * HOUR, now - HOUR)
            .unwrap()
    };
    let fresh_client = ca
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    let fresh_server = ca
        .issue(&id("spiffe://cluster.local/ns/b/sa/server"), HOUR)
        .unwrap();

    let old_server = expired("spiffe://cluster.local/ns/b/sa/server");
    let (client_result, _) = handshake(
        &fresh_client,
        std::slice::from_ref(&old_server.identity),
        &old_server,
    )
    .await;
    let error = client_result.unwrap_err();
    assert!(error.contains("Expired"), "{error}");

    let old_client = expired("spiffe://cluster.local/ns/a/sa/client");
    let (_, server_result) = handshake(
        &old_client,
        std::slice::from_ref(&fresh_server.identity),
        &fresh_server,
    )
    .await;
    let error = server_result.unwrap_err();
    assert!(error.contains("Expired"), "{error}");

    let (client_result, server_result) = handshake(
        &fresh_client,
        std::slice::from_ref(&fresh_server.identity),
        &fresh_server,
    )
    .await;
    client_result.unwrap();
    server_result.unwrap();
}

#[test]
fn provider_offers_only_tls13_and_prefers_post_quantum() {
    let provider = provider();
    assert!(provider.cipher_suites.iter().all(|s| s.tls13().is_some()));
    assert!(!provider.cipher_suites.is_empty());
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(groups[0], rustls::NamedGroup::X25519MLKEM768);
    assert_eq!(groups[1], rustls::NamedGroup::X25519);
}

#[test]
fn certificate_without_roots_cannot_build_a_config() {
    let mut cert = mesh_ca()
        .issue(&id("spiffe://cluster.local/ns/a/sa/client"), HOUR)
        .unwrap();
    cert.roots.clear();
    let error = client_config(&cert, &[]).unwrap_err();
    assert!(error.to_string().contains("no trust anchors"), "{error}");
}

#[tokio::test]
async fn control_plane_config_serves_a_dns_named_certificate_without_client_auth() {
    let ca = mesh_ca();
    let (chain, key) = ca
        .issue_server_cert(&["istiod.istio-system.svc"], HOUR)
        .unwrap();
    let server = control_plane_server_config(chain, key).unwrap();
    assert_eq!(server.alpn_protocols, vec![ALPN_H2.to_vec()]);
    let acceptor = TlsAcceptor::from(Arc::new(server));

    let mut roots = rustls::RootCertStore::empty();
    for root in ca.root_certs() {
        roots.add(root).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    let connector = TlsConnector::from(Arc::new(client));

    for (name, accepted) in [
        ("istiod.istio-system.svc", true),
        ("istiod.elsewhere.svc", false),
    ] {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = acceptor.clone();
        let server_side = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.ok()?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.ok()?;
            Some(byte[0])
        });
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let result = connector.connect(server_name, client_io).await;
        assert_eq!(result.is_ok(), accepted, "{name}: {:?}", result.err());
        if let Ok(mut tls) = result {
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
            tls.write_all(b"x").await.unwrap();
            assert_eq!(server_side.await.unwrap(), Some(b'x'));
        }
    }
}
