use std::future::Future;

use hyper::body::Incoming;

use super::*;

/// The size of the future that `handle` returns, without making one.
fn size_of_future<'a, F, Fut>(_: F) -> usize
where
    F: FnOnce(&'a Inner, &'a Downstream, Request<Incoming>) -> Fut,
    Fut: Future,
{
    std::mem::size_of::<Fut>()
}

#[test]
fn a_request_future_stays_small() {
    let size = size_of_future(Inner::handle);
    println!("handle: {size} bytes");
    assert!(size < 8 * 1024, "{size}");
}

fn head(version: Version, uri: &str, host: Option<&str>) -> http::request::Parts {
    let mut request = Request::builder().version(version).uri(uri);
    if let Some(host) = host {
        request = request.header(HOST, host);
    }
    request.body(()).unwrap().into_parts().0
}

fn service() -> Service {
    Service {
        name: "echo".into(),
        namespace: "wp".into(),
        hostname: "echo.wp.svc.cluster.local".into(),
        vips: vec![],
        ports: vec![(8080, 8080)],
        subject_alt_names: vec![],
        waypoint: None,
    }
}

#[test]
fn an_http2_head_goes_up_with_scheme_authority_and_no_host() {
    let service = service();
    // As an HTTP/2 client sends it: kept, Host dropped.
    let mut parts = head(Version::HTTP_2, "http://echo:8080/a?b=1", Some("echo:8080"));
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(parts.uri, "http://echo:8080/a?b=1");
    assert!(parts.headers.get(HOST).is_none());
    // Another scheme is made http (the tunnel is the transport).
    let mut parts = head(Version::HTTP_2, "https://echo:8080/a", None);
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(parts.uri, "http://echo:8080/a");
    // Origin form with a Host: the authority comes from the Host.
    let mut parts = head(Version::HTTP_2, "/a", Some("echo:8080"));
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(parts.uri, "http://echo:8080/a");
    assert!(parts.headers.get(HOST).is_none());
    // Neither: the service's name and port.
    let mut parts = head(Version::HTTP_2, "/a", None);
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(parts.uri, "http://echo.wp.svc.cluster.local:8080/a");
}

#[test]
fn an_http1_head_goes_up_in_origin_form_with_a_host() {
    let service = service();
    let mut parts = head(Version::HTTP_11, "http://echo:8080/a?b=1", None);
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(parts.uri, "/a?b=1");
    assert_eq!(parts.headers[HOST], "echo:8080");
    let mut parts = head(Version::HTTP_10, "/a", Some("echo"));
    prepare_upstream_head(&mut parts, &service, 8080);
    assert_eq!(
        (parts.uri.to_string().as_str(), parts.version),
        ("/a", Version::HTTP_11)
    );
    assert_eq!(parts.headers[HOST], "echo");
}
