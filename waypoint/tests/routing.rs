//! Routes, filters, L7 policy and the refusal of unknown authorities, on
//! the real data path, with resources written by hand rather than
//! translated from YAML (`from_yaml` does that): put into istiod-lite's
//! delta ADS store, so they travel the real xDS path (and a malformed one,
//! which istiod-lite would never produce, can be NACKed), or applied to
//! the waypoint's snapshot with the functions its xDS handler uses.

mod support;

use std::net::SocketAddr;

use prost::Message;
use proto::waypoint as pb;
use proto::{WAYPOINT_AUTHORIZATION_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL};
use support::{ECHO_HOST, ECHO_V2_HOST, Mesh, eventually, get1, hbone_as, id, ip, vip};
use waypoint::route::ServiceKey;

fn echo_key() -> ServiceKey {
    ServiceKey {
        hostname: ECHO_HOST.into(),
        port: 80,
    }
}

fn to(hostname: &str) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(pb::weighted_backend::Backend::Service(pb::ServiceRef {
            hostname: hostname.into(),
            port: 80,
        })),
        weight: 1,
        filters: vec![],
    }
}

fn header_is(name: &str, value: &str) -> pb::RequestMatch {
    pb::RequestMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Prefix("/".into())),
        }),
        headers: vec![pb::HeaderMatch {
            name: name.into(),
            value: Some(pb::StringMatch {
                kind: Some(pb::string_match::Kind::Exact(value.into())),
            }),
        }],
        ..pb::RequestMatch::default()
    }
}

fn path_prefix(prefix: &str) -> pb::RequestMatch {
    pb::RequestMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Prefix(prefix.into())),
        }),
        ..pb::RequestMatch::default()
    }
}

fn header(name: &str, value: &str) -> pb::Header {
    pb::Header {
        name: name.into(),
        value: value.into(),
    }
}

fn routes(port: u32, rules: Vec<pb::Rule>) -> pb::WaypointRoutes {
    pb::WaypointRoutes {
        hostname: ECHO_HOST.into(),
        port,
        routes: vec![pb::Route {
            namespace: "b".into(),
            name: "echo".into(),
            creation_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            rules,
        }],
    }
}

/// `x-version: v2` goes to `echo-v2`, `/v1` to `echo`, nothing else
/// matches.
fn canary() -> pb::WaypointRoutes {
    routes(
        80,
        vec![
            pb::Rule {
                matches: vec![header_is("x-version", "v2")],
                backends: vec![to(ECHO_V2_HOST)],
                ..pb::Rule::default()
            },
            pb::Rule {
                matches: vec![path_prefix("/v1")],
                backends: vec![to(ECHO_HOST)],
                ..pb::Rule::default()
            },
        ],
    )
}

fn any(type_url: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.into(),
        value: message.encode_to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_routes_pick_the_backend_and_a_malformed_resource_is_nacked() {
    let mesh = Mesh::start(20, "").await;
    let nacks_before = mesh.waypoint.xds_status().borrow().nacks;
    let good = (
        format!("{ECHO_HOST}:80"),
        any(WAYPOINT_ROUTES_TYPE_URL, &canary()),
    );
    // Port 0 cannot be converted: the waypoint NACKs it, keeps the rest.
    let bad = (
        format!("{ECHO_HOST}:9000"),
        any(WAYPOINT_ROUTES_TYPE_URL, &routes(0, vec![])),
    );
    mesh.plane
        .ads
        .apply(WAYPOINT_ROUTES_TYPE_URL, vec![good, bad], vec![])
        .unwrap();
    let status = mesh.waypoint.xds_status();
    eventually("the waypoint to NACK the malformed resource", || {
        let nacks = status.borrow().nacks;
        async move { nacks > nacks_before }
    })
    .await;
    let config = mesh.waypoint.config().snapshot();
    assert!(
        config.routes(&echo_key()).is_some(),
        "the good resource was applied"
    );
    assert!(
        config
            .routes(&ServiceKey {
                hostname: ECHO_HOST.into(),
                port: 9000
            })
            .is_none()
    );

    let mut client = mesh.http1().await;
    let (status, _, body) = get1(&mut client, "/v1/x", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /v1/x HTTP/1.1"));
    let (status, _, body) = get1(&mut client, "/x", &[("x-version", "v2")]).await;
    assert_eq!((status, body.as_str()), (200, "v2 GET /x HTTP/1.1"));
    // Gateway API precedence: the longer path prefix beats the header.
    let (status, _, body) = get1(&mut client, "/v1/x", &[("x-version", "v2")]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /v1/x HTTP/1.1"));
    // Routes are attached and none matches: 404, not the service.
    let (status, _, _) = get1(&mut client, "/elsewhere", &[]).await;
    assert_eq!(status, 404);
    // The log event of a request goes out when its response body has
    // been sent, which may trail the client's view a little.
    support::wait_for_events(2, &["request complete", "route=\"b/echo\"", "path=/v1/x"]).await;
    let events =
        support::access_events(&["request complete", "path=/elsewhere", "response_code=404"]);
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_an_invalid_backend() {
    let mesh = Mesh::start(21, "").await;
    let with_filters = routes(
        80,
        vec![
            pb::Rule {
                matches: vec![path_prefix("/filtered")],
                filters: vec![
                    pb::Filter {
                        kind: Some(pb::filter::Kind::RequestHeaderModifier(
                            pb::HeaderModifier {
                                set: vec![header("x-echo", "set-by-route")],
                                ..pb::HeaderModifier::default()
                            },
                        )),
                    },
                    pb::Filter {
                        kind: Some(pb::filter::Kind::ResponseHeaderModifier(
                            pb::HeaderModifier {
                                add: vec![header("x-served-by", "waypoint")],
                                ..pb::HeaderModifier::default()
                            },
                        )),
                    },
                ],
                backends: vec![to(ECHO_HOST)],
                ..pb::Rule::default()
            },
            pb::Rule {
                matches: vec![path_prefix("/broken")],
                backends: vec![pb::WeightedBackend {
                    backend: Some(pb::weighted_backend::Backend::Invalid(pb::InvalidBackend {
                        reason: "service nope not found".into(),
                    })),
                    weight: 1,
                    filters: vec![],
                }],
                ..pb::Rule::default()
            },
        ],
    );
    let rejected = mesh
        .waypoint
        .config()
        .update(|config| config.apply_routes(vec![(format!("{ECHO_HOST}:80"), with_filters)], &[]));
    assert!(rejected.is_empty(), "{rejected:?}");
    let mut client = mesh.http1().await;
    let (status, headers, body) =
        get1(&mut client, "/filtered", &[("x-echo", "from-client")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("x-echo").unwrap(), "set-by-route");
    assert_eq!(headers.get("x-served-by").unwrap(), "waypoint");
    let (status, _, _) = get1(&mut client, "/broken", &[]).await;
    assert_eq!(status, 500);
}

fn policy(
    action: pb::authorization_policy::Action,
    rule: pb::authorization_policy::Rule,
) -> pb::WaypointAuthorization {
    pb::WaypointAuthorization {
        hostname: ECHO_HOST.into(),
        policies: vec![pb::AuthorizationPolicy {
            namespace: "b".into(),
            name: "echo-policy".into(),
            action: action as i32,
            dry_run: false,
            rules: vec![rule],
        }],
    }
}

fn to_paths(paths: &[&str]) -> pb::authorization_policy::Rule {
    pb::authorization_policy::Rule {
        to: vec![pb::authorization_policy::Operation {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn from_namespaces(namespaces: &[&str]) -> pb::authorization_policy::Rule {
    pb::authorization_policy::Rule {
        from: vec![pb::authorization_policy::Source {
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l7_deny_answers_403_and_other_requests_pass() {
    let mesh = Mesh::start(22, "").await;
    let deny_admin = policy(
        pb::authorization_policy::Action::Deny,
        to_paths(&["/admin*"]),
    );
    // Through the real xDS path this time.
    mesh.plane
        .ads
        .apply(
            WAYPOINT_AUTHORIZATION_TYPE_URL,
            vec![(
                ECHO_HOST.into(),
                any(WAYPOINT_AUTHORIZATION_TYPE_URL, &deny_admin),
            )],
            vec![],
        )
        .unwrap();
    let config = mesh.waypoint.config().clone();
    eventually("the policy to arrive", || {
        let arrived = config.snapshot().policies(ECHO_HOST).is_some();
        async move { arrived }
    })
    .await;
    let mut client = mesh.http1().await;
    // Other spellings of the same path are normalized before policy.
    for path in [
        "/admin/users",
        "/x/../admin/users",
        "/%61dmin/users",
        "/./admin",
    ] {
        let (status, _, body) = get1(&mut client, path, &[]).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(body, waypoint::authz::DENIED_BODY);
    }
    let (status, _, body) = get1(&mut client, "/public", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /public HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l7_allow_lets_its_sources_in_and_no_one_else() {
    let mesh = Mesh::start(23, "").await;
    let apply = |namespaces: &[&str]| {
        let allow = policy(
            pb::authorization_policy::Action::Allow,
            from_namespaces(namespaces),
        );
        let rejected = mesh
            .waypoint
            .config()
            .update(|config| config.apply_authorization(vec![(ECHO_HOST.into(), allow)], &[]));
        assert!(rejected.is_empty(), "{rejected:?}");
    };
    apply(&["a"]);
    let mut client = mesh.http1().await;
    let (status, _, body) = get1(&mut client, "/from-a", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /from-a HTTP/1.1"));
    // Allowing only another namespace shuts `a` out, on the same
    // connection: each request reads the current snapshot.
    apply(&["c"]);
    let (status, _, body) = get1(&mut client, "/from-a", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(body, waypoint::authz::DENIED_BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_to_an_authority_the_waypoint_does_not_serve_is_refused() {
    let net = 24;
    let mesh = Mesh::start(net, "").await;
    let waypoint_id = id("b", "waypoint");
    let known = SocketAddr::new(vip(net, 1), 80);
    let tunnel = hbone_as(
        &mesh.plane,
        ("a", "a"),
        ip(net, 50),
        waypoint_id.clone(),
        known,
    )
    .await;
    assert!(tunnel.is_ok(), "the service VIP and port: {tunnel:?}");
    for authority in [
        SocketAddr::new(vip(net, 99), 80),
        SocketAddr::new(vip(net, 1), 81),
        SocketAddr::new(ip(net, 20), 8080),
        // A service that does not use this waypoint: serving it would
        // let clients skip that service's own policy.
        SocketAddr::new(vip(net, 4), 80),
        // The waypoint's own service.
        SocketAddr::new(vip(net, 50), 15008),
    ] {
        let refused = hbone_as(
            &mesh.plane,
            ("a", "a"),
            ip(net, 50),
            waypoint_id.clone(),
            authority,
        )
        .await;
        assert!(
            matches!(
                refused,
                Err(hbone::Error::Refused { status, .. }) if status == 400
            ),
            "{authority}: {refused:?}"
        );
    }
}
