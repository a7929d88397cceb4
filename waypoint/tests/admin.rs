//! The waypoint's admin server on a real mesh (istiod-lite, a ztunnel and
//! the waypoint in one process): `/config_dump` lists the services the
//! waypoint serves with their endpoints, and the routes pushed to it;
//! `/certs` has its certificate; the other pages answer as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use prost::Message;
use proto::WAYPOINT_ROUTES_TYPE_URL;
use proto::waypoint as pb;
use support::{ECHO_HOST, Mesh, eventually, http_get};

/// A network no other test of this crate uses.
const NET: u8 = 44;

async fn config_dump(mesh: &Mesh) -> serde_json::Value {
    let (status, body) = http_get(mesh.waypoint.admin_addr(), "/config_dump")
        .await
        .expect("the admin server answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn echo_entry(dump: &serde_json::Value) -> Option<serde_json::Value> {
    dump["services"]
        .as_array()?
        .iter()
        .find(|s| s["hostname"] == ECHO_HOST)
        .cloned()
}

fn one_route() -> prost_types::Any {
    let routes = pb::WaypointRoutes {
        hostname: ECHO_HOST.into(),
        port: 80,
        routes: vec![pb::Route {
            namespace: "b".into(),
            name: "echo".into(),
            creation_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            rules: vec![pb::Rule::default()],
        }],
    };
    prost_types::Any {
        type_url: WAYPOINT_ROUTES_TYPE_URL.into(),
        value: routes.encode_to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_shows_what_the_waypoint_serves_and_the_routes_in_force() {
    let mesh = Mesh::start(NET, "").await;
    let dump = config_dump(&mesh).await;
    assert_eq!(dump["identity"], "spiffe://cluster.local/ns/b/sa/waypoint");
    assert_eq!(dump["control_plane"]["synced"], true, "{dump:#}");

    let echo = echo_entry(&dump).unwrap_or_else(|| panic!("echo is not served: {dump:#}"));
    assert_eq!(echo["namespace"], "b");
    let endpoints = echo["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty(), "{echo:#}");
    assert_eq!(echo["routes"], serde_json::json!([]), "no route pushed yet");
    // Only services that use this waypoint: none of the others' names.
    let served: Vec<&str> = dump["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["namespace"].as_str())
        .collect();
    assert!(served.iter().all(|ns| *ns == "b"), "{served:?}");

    mesh.plane
        .ads
        .apply(
            WAYPOINT_ROUTES_TYPE_URL,
            vec![(format!("{ECHO_HOST}:80"), one_route())],
            vec![],
        )
        .unwrap();
    eventually("the pushed route to show in /config_dump", || async {
        let dump = config_dump(&mesh).await;
        echo_entry(&dump).is_some_and(|echo| {
            echo["routes"] == serde_json::json!([{"port": 80, "routes": ["b/echo (1 rules)"]}])
        })
    })
    .await;

    eventually("the waypoint's certificate to show in /certs", || async {
        let (_, body) = http_get(mesh.waypoint.admin_addr(), "/certs")
            .await
            .unwrap_or_default();
        let certs: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        certs.as_array().is_some_and(|certs| {
            certs.iter().any(|c| {
                c["identity"] == "spiffe://cluster.local/ns/b/sa/waypoint"
                    && c["state"] == "available"
            })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_admin_pages_answer_as_documented() {
    let mesh = Mesh::start(NET + 1, "").await;
    let admin = mesh.waypoint.admin_addr();
    assert!(admin.ip().is_loopback());
    let (status, index) = http_get(admin, "/").await.unwrap();
    assert_eq!((status, index.contains("/config_dump")), (200, true));
    // In-process tests share one log subscriber and do not hand it over.
    let (status, body) = http_get(admin, "/logging").await.unwrap();
    assert_eq!(status, 503, "{body}");
    let (status, body) = http_get(admin, "/secrets").await.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("/config_dump"), "{body}");
}
