//! Address parsing and config errors as pure functions; then dialing real
//! loopback sockets: a TLS server under an in-process CA, a closed port, and
//! a listener that never answers.

use std::path::Path;

use identity::Ca;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

const ISTIOD_NAME: &str = "istiod.istio-system.svc";

fn parse(s: &str) -> Result<ControlPlaneAddress, AddressError> {
    s.parse()
}

fn dns(name: &str, port: u16) -> ControlPlaneAddress {
    ControlPlaneAddress {
        host: Host::Dns(name.to_owned()),
        port,
    }
}

fn ip(ip: &str, port: u16) -> ControlPlaneAddress {
    ControlPlaneAddress {
        host: Host::Ip(ip.parse().unwrap()),
        port,
    }
}

fn ca() -> Ca {
    Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap()
}

/// Writes `ca`'s root to `dir/root-cert.pem` and returns its path.
fn write_root(dir: &TempDir, ca: &Ca) -> PathBuf {
    let path = dir.path().join("root-cert.pem");
    std::fs::write(&path, ca.roots_pem().concat()).unwrap();
    path
}

fn xds_config(address: &str, root: &Path) -> ChannelConfig {
    ChannelConfig::new(ControlPlaneService::Xds, address, root)
}

fn dialer(config: &ChannelConfig) -> Dialer {
    config.dialer(&config.load_roots().unwrap()).unwrap()
}

/// A TLS 1.3 server on loopback presenting a certificate for `names` under
/// `ca`, selecting ALPN `h2` if `h2`; it holds each connection open.
async fn tls_server(ca: &Ca, names: &[&str], h2: bool) -> SocketAddr {
    let (chain, key) = ca
        .issue_server_cert(names, Duration::from_secs(3600))
        .unwrap();
    let mut config = identity::tls::control_plane_server_config(chain, key).unwrap();
    if !h2 {
        config.alpn_protocols.clear();
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.read(&mut [0; 1]).await;
                }
            });
        }
    });
    addr
}

/// Opens a discovery stream on `channel`; every test here expects it to fail.
async fn open_stream(channel: Channel) -> tonic::Status {
    AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(tokio_stream::iter(Vec::new()))
        .await
        .unwrap_err()
}

#[test]
fn parses_urls_and_authorities_with_names_and_ips() {
    assert_eq!(
        parse("https://istiod.istio-system.svc:15012"),
        Ok(dns(ISTIOD_NAME, 15012))
    );
    assert_eq!(
        parse("istiod.istio-system.svc:15012"),
        Ok(dns(ISTIOD_NAME, 15012))
    );
    assert_eq!(parse("HTTPS://istiod:15012/"), Ok(dns("istiod", 15012)));
    assert_eq!(parse("https://istiod"), Ok(dns("istiod", 443)));
    assert_eq!(
        parse("https://10.96.0.10:15012"),
        Ok(ip("10.96.0.10", 15012))
    );
    assert_eq!(parse("10.96.0.10:15012"), Ok(ip("10.96.0.10", 15012)));
    assert_eq!(parse("[::1]:15012"), Ok(ip("::1", 15012)));
    assert_eq!(parse("https://[fd00::10]:15012"), Ok(ip("fd00::10", 15012)));

    // Display is the URI authority, brackets included.
    assert_eq!(ip("fd00::10", 15012).to_string(), "[fd00::10]:15012");
    assert_eq!(
        dns(ISTIOD_NAME, 15012).to_string(),
        format!("{ISTIOD_NAME}:15012")
    );
    assert_eq!(parse(DEFAULT_ADDRESS), Ok(dns(ISTIOD_NAME, 15012)));
}

#[test]
fn refuses_addresses_it_cannot_connect_to() {
    assert_eq!(
        parse("http://istiod:15010"),
        Err(AddressError::Scheme("http".to_owned()))
    );
    assert_eq!(parse("istiod"), Err(AddressError::NoPort));
    assert_eq!(
        parse("https://istiod:0"),
        Err(AddressError::Port("0".to_owned()))
    );
    assert_eq!(
        parse("https://istiod:15012/xds"),
        Err(AddressError::Path("/xds".to_owned()))
    );
    assert_eq!(
        parse("https://istiod:15012?a=b"),
        Err(AddressError::Path("?a=b".to_owned()))
    );
    assert_eq!(
        parse("https://admin@istiod:15012"),
        Err(AddressError::UserInfo)
    );
    assert_eq!(
        parse("https://[istiod]:15012"),
        Err(AddressError::Host("[istiod]".to_owned()))
    );
    assert_eq!(
        parse("https://isti_od!:15012"),
        Err(AddressError::Host("isti_od!".to_owned()))
    );
    assert!(matches!(parse(""), Err(AddressError::Malformed(_))));
    assert_eq!(
        parse("https://istiod:99999"),
        Err(AddressError::Port("99999".to_owned()))
    );
}

#[test]
fn root_file_errors_name_the_path_and_the_variable() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("root-cert.pem");
    let config = ChannelConfig::new(ControlPlaneService::Ca, DEFAULT_ADDRESS, &missing);
    let error = config.connect_lazy().unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ChannelError::RootRead { .. }), "{message}");
    assert!(
        message.starts_with(&format!(
            "cannot read the root certificate at {}",
            missing.display()
        )),
        "{message}"
    );
    assert!(message.contains("CA_ROOT_CA"), "{message}");

    // No PEM block at all: an empty file, or a key instead of a certificate.
    for text in [
        "",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        std::fs::write(&missing, text).unwrap();
        let error = config.load_roots().unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ChannelError::NoRoot { .. }), "{message}");
        assert!(
            message.starts_with(&format!("no certificate in {}", missing.display())),
            "{message}"
        );
    }

    std::fs::write(
        &missing,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = config.load_roots().unwrap_err();
    assert!(matches!(error, ChannelError::RootPem { .. }), "{error}");

    std::fs::write(
        &missing,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = config.load_roots().unwrap_err();
    assert!(matches!(error, ChannelError::BadRoot { .. }), "{error}");
}

#[test]
fn bad_address_and_server_name_name_their_variables() {
    let dir = TempDir::new().unwrap();
    let root = write_root(&dir, &ca());

    let error = xds_config("http://istiod:15010", &root)
        .connect_lazy()
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ChannelError::Address { .. }), "{message}");
    assert!(message.contains("XDS_ADDRESS"), "{message}");
    assert!(message.contains("use https://"), "{message}");

    let mut config = xds_config(DEFAULT_ADDRESS, &root);
    config.server_name = Some("not a name".to_owned());
    let error = config.connect_lazy().unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, ChannelError::ServerName { .. }),
        "{message}"
    );
    assert!(message.contains("ALT_XDS_HOSTNAME"), "{message}");
}

#[tokio::test]
async fn dials_with_tls_and_h2_verifying_the_name_against_the_root_only() {
    let dir = TempDir::new().unwrap();
    let ca = ca();
    let root = write_root(&dir, &ca);
    let server = tls_server(&ca, &[ISTIOD_NAME], true).await;

    // An IP address with the certificate's name as override (ALT_XDS_HOSTNAME).
    let mut config = xds_config(&format!("https://{server}"), &root);
    config.server_name = Some(ISTIOD_NAME.to_owned());
    let tls = dialer(&config).dial().await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));

    // A DNS name, resolved on connect.
    let mut config = xds_config(&format!("localhost:{}", server.port()), &root);
    config.server_name = Some(ISTIOD_NAME.to_owned());
    dialer(&config).dial().await.unwrap();

    // Without the override the IP is what the certificate must name.
    let config = xds_config(&format!("https://{server}"), &root);
    let error = dialer(&config).dial().await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DialError::Handshake { .. }), "{message}");
    assert!(message.contains("name 127.0.0.1"), "{message}");
    assert!(message.contains("ALT_XDS_HOSTNAME"), "{message}");

    // Another mesh's root: the chain does not verify.
    let other_dir = TempDir::new().unwrap();
    let other_root = write_root(
        &other_dir,
        &Ca::self_signed("cluster.local", Duration::from_secs(60)).unwrap(),
    );
    let mut config = xds_config(&format!("https://{server}"), &other_root);
    config.server_name = Some(ISTIOD_NAME.to_owned());
    let error = dialer(&config).dial().await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DialError::Handshake { .. }), "{message}");
    assert!(
        message.contains(&other_root.display().to_string()),
        "{message}"
    );
    assert!(message.contains("XDS_ROOT_CA"), "{message}");
}

#[tokio::test]
async fn a_server_without_h2_is_refused() {
    let dir = TempDir::new().unwrap();
    let ca = ca();
    let root = write_root(&dir, &ca);
    let server = tls_server(&ca, &[ISTIOD_NAME], false).await;
    let mut config = xds_config(&format!("https://{server}"), &root);
    config.server_name = Some(ISTIOD_NAME.to_owned());
    let error = dialer(&config).dial().await.unwrap_err();
    assert!(matches!(error, DialError::NoHttp2 { .. }), "{error}");
}

#[tokio::test]
async fn connect_failures_reach_the_caller_in_the_status() {
    let dir = TempDir::new().unwrap();
    let root = write_root(&dir, &ca());

    // Nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = xds_config(&format!("https://{closed}"), &root)
        .connect_lazy()
        .unwrap();
    let status = open_stream(channel).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(
        status
            .message()
            .starts_with(&format!("connect to {closed} failed")),
        "{status}"
    );
    assert!(
        status.message().contains("is the control plane running"),
        "{status}"
    );

    // A DNS name: the message shows what it resolved to.
    let by_name = format!("localhost:{}", closed.port());
    let error = dialer(&xds_config(&by_name, &root))
        .dial()
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("connect to {by_name} (")),
        "{error}"
    );

    // A listener that never answers the TLS handshake.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = xds_config(&format!("https://{}", silent.local_addr().unwrap()), &root);
    config.connect_timeout = Duration::from_millis(200);
    let status = open_stream(config.connect_lazy().unwrap()).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(
        status.message().contains("timed out after 200ms"),
        "{status}"
    );
}
