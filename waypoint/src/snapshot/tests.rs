use proto::waypoint as pb;

use super::*;

const HOST: &str = "echo.b.svc.cluster.local";

fn routes(hostname: &str, port: u32) -> pb::WaypointRoutes {
    pb::WaypointRoutes {
        hostname: hostname.into(),
        port,
        routes: vec![],
    }
}

fn authorization(hostname: &str) -> pb::WaypointAuthorization {
    pb::WaypointAuthorization {
        hostname: hostname.into(),
        policies: vec![],
    }
}

fn key(port: u16) -> ServiceKey {
    ServiceKey {
        hostname: HOST.into(),
        port,
    }
}

#[test]
fn a_bad_routes_resource_is_rejected_and_the_rest_applied() {
    let mut config = WaypointConfig::default();
    let rejected = config.apply_routes(
        vec![
            (format!("{HOST}:80"), routes(HOST, 80)),
            (format!("{HOST}:81"), routes(HOST, 0)),
            ("other:82".into(), routes(HOST, 82)),
        ],
        &[],
    );
    let names: Vec<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec![format!("{HOST}:81").as_str(), "other:82"]);
    assert!(rejected[0].reason.contains("port 0"), "{}", rejected[0]);
    assert!(
        rejected[1].reason.contains("<hostname>:<port>"),
        "{}",
        rejected[1]
    );
    assert!(config.routes(&key(80)).is_some());
    assert!(config.routes(&key(81)).is_none());
    assert!(config.routes(&key(82)).is_none());
}

#[test]
fn a_rejected_routes_resource_keeps_its_previous_version() {
    let mut config = WaypointConfig::default();
    let name = format!("{HOST}:80");
    assert!(
        config
            .apply_routes(vec![(name.clone(), routes(HOST, 80))], &[])
            .is_empty()
    );
    let before = config.routes(&key(80)).cloned().unwrap();
    let rejected = config.apply_routes(vec![(name.clone(), routes("", 80))], &[]);
    assert_eq!(rejected.len(), 1);
    assert!(Arc::ptr_eq(config.routes(&key(80)).unwrap(), &before));
    assert!(config.apply_routes(vec![], &[name]).is_empty());
    assert!(config.routes(&key(80)).is_none());
}

#[test]
fn authorization_is_named_by_hostname() {
    let mut config = WaypointConfig::default();
    let rejected = config.apply_authorization(
        vec![
            (HOST.into(), authorization(HOST)),
            ("other.b.svc.cluster.local".into(), authorization(HOST)),
            ("".into(), authorization("")),
        ],
        &[],
    );
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(config.policies(HOST).is_some());
    config.apply_authorization(vec![], &[HOST.into()]);
    assert!(config.policies(HOST).is_none());
}

#[test]
fn the_store_publishes_each_update() {
    let store = ConfigStore::new();
    let first = store.snapshot();
    store.update(|config| config.insert_routes(RouteTable::empty(key(80))));
    assert!(first.routes(&key(80)).is_none());
    assert!(store.snapshot().routes(&key(80)).is_some());
}
