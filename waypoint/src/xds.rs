//! The waypoint's xDS handler: one delta ADS stream carries the mesh
//! (`istio.workload.Address`, applied to the shared workload state by its
//! own handler) and the waypoint's own config (`WaypointRoutes`,
//! `WaypointAuthorization`, `WaypointFaults`, `WaypointBackendPolicy`,
//! applied to the
//! [`ConfigStore`]). Each resource
//! is decoded and converted at this edge; what fails is returned as a
//! rejection, so the client NACKs it with the reason while the rest of the
//! response is applied.

use std::sync::Arc;

use proto::discovery::Resource;
use proto::waypoint as pb;
use proto::{
    ADDRESS_TYPE_URL, WAYPOINT_AUTHORIZATION_TYPE_URL, WAYPOINT_BACKEND_POLICY_TYPE_URL,
    WAYPOINT_FAULTS_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL,
};
use workload::StateStore;
use workload::handler::{StateHandler, decode_all, finish, unused_type};
use xds::{Rejection, ResourceHandler};

use crate::snapshot::{ConfigStore, Rejected};

/// Applies pushed resources to the mesh state and the waypoint config.
#[derive(Debug, Clone)]
pub struct WaypointHandler {
    mesh: StateHandler,
    config: Arc<ConfigStore>,
}

// === impl WaypointHandler ===

impl WaypointHandler {
    pub fn new(mesh: Arc<StateStore>, config: Arc<ConfigStore>) -> Self {
        WaypointHandler {
            mesh: StateHandler::new(mesh),
            config,
        }
    }

    /// The type URLs to subscribe to. L4 `Authorization` is not among them:
    /// the destination's ztunnel enforces it.
    pub fn type_urls() -> Vec<String> {
        vec![
            ADDRESS_TYPE_URL.to_owned(),
            WAYPOINT_ROUTES_TYPE_URL.to_owned(),
            WAYPOINT_AUTHORIZATION_TYPE_URL.to_owned(),
            WAYPOINT_FAULTS_TYPE_URL.to_owned(),
            WAYPOINT_BACKEND_POLICY_TYPE_URL.to_owned(),
        ]
    }
}

impl ResourceHandler for WaypointHandler {
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>> {
        let mut rejected = Vec::new();
        let converted = match type_url {
            ADDRESS_TYPE_URL => return self.mesh.apply(type_url, upserts, removals),
            WAYPOINT_ROUTES_TYPE_URL => {
                let decoded = decode_all::<pb::WaypointRoutes>(type_url, upserts, &mut rejected);
                self.config
                    .update(|config| config.apply_routes(decoded, &removals))
            }
            WAYPOINT_AUTHORIZATION_TYPE_URL => {
                let decoded =
                    decode_all::<pb::WaypointAuthorization>(type_url, upserts, &mut rejected);
                self.config
                    .update(|config| config.apply_authorization(decoded, &removals))
            }
            WAYPOINT_FAULTS_TYPE_URL => {
                let decoded = decode_all::<pb::WaypointFaults>(type_url, upserts, &mut rejected);
                self.config
                    .update(|config| config.apply_faults(decoded, &removals))
            }
            WAYPOINT_BACKEND_POLICY_TYPE_URL => {
                let decoded =
                    decode_all::<pb::WaypointBackendPolicy>(type_url, upserts, &mut rejected);
                self.config
                    .update(|config| config.apply_backend_policies(decoded, &removals))
            }
            other => return Err(unused_type(other, upserts, "the waypoint")),
        };
        finish(type_url, removals.len(), rejected, converted, rejection)
    }
}

fn rejection(rejected: Rejected) -> Rejection {
    Rejection {
        name: rejected.name.clone(),
        reason: rejected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::route::ServiceKey;

    fn resource(name: &str, type_url: &str, value: Vec<u8>) -> Resource {
        Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(prost_types::Any {
                type_url: type_url.into(),
                value,
            }),
            ..Resource::default()
        }
    }

    #[test]
    fn a_malformed_routes_resource_is_nacked_and_the_good_one_applied() {
        let config = Arc::new(ConfigStore::new());
        let handler = WaypointHandler::new(Arc::new(StateStore::new()), config.clone());
        let good = pb::WaypointRoutes {
            hostname: "echo.b.svc.cluster.local".into(),
            port: 80,
            routes: vec![],
        };
        let rejected = handler
            .apply(
                WAYPOINT_ROUTES_TYPE_URL,
                vec![
                    resource(
                        "echo.b.svc.cluster.local:80",
                        WAYPOINT_ROUTES_TYPE_URL,
                        good.encode_to_vec(),
                    ),
                    resource("garbage:80", WAYPOINT_ROUTES_TYPE_URL, vec![0xff, 0xff]),
                ],
                vec![],
            )
            .unwrap_err();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name, "garbage:80");
        assert!(
            rejected[0].reason.contains("cannot decode"),
            "{:?}",
            rejected[0]
        );
        let key = ServiceKey {
            hostname: "echo.b.svc.cluster.local".into(),
            port: 80,
        };
        assert!(config.snapshot().routes(&key).is_some());
    }

    #[test]
    fn a_bad_faults_resource_is_nacked_and_the_previous_one_kept() {
        let config = Arc::new(ConfigStore::new());
        let handler = WaypointHandler::new(Arc::new(StateStore::new()), config.clone());
        let hostname = "echo.b.svc.cluster.local";
        let faults = |status: u32| pb::WaypointFaults {
            hostname: hostname.into(),
            rules: vec![pb::FaultRule {
                source: "b/faults http 0".into(),
                matches: vec![],
                fault: Some(pb::Fault {
                    delay: None,
                    abort: Some(pb::FaultAbort {
                        http_status: status,
                        percentage: 100.0,
                        grpc_status: None,
                    }),
                }),
            }],
        };
        let push = |status: u32| {
            handler.apply(
                WAYPOINT_FAULTS_TYPE_URL,
                vec![resource(
                    hostname,
                    WAYPOINT_FAULTS_TYPE_URL,
                    faults(status).encode_to_vec(),
                )],
                vec![],
            )
        };
        assert!(push(503).is_ok());
        let rejected = push(99).unwrap_err();
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0]
                .reason
                .contains("status 99 is not from 200 to 599"),
            "{:?}",
            rejected[0]
        );
        // The 503 rule still applies.
        let request = crate::fault::FaultRequest {
            path: "/",
            method: &http::Method::GET,
            headers: &http::HeaderMap::new(),
        };
        let rolls = crate::fault::Rolls {
            delay: 0.0,
            abort: 0.0,
        };
        let injected = config
            .snapshot()
            .faults(hostname)
            .and_then(|faults| faults.decide(&request, rolls));
        assert_eq!(
            injected.and_then(|i| i.abort),
            Some(http::StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[test]
    fn other_types_are_returned_as_rejected() {
        let handler =
            WaypointHandler::new(Arc::new(StateStore::new()), Arc::new(ConfigStore::new()));
        let error = handler
            .apply(
                proto::AUTHORIZATION_TYPE_URL,
                vec![resource("x", proto::AUTHORIZATION_TYPE_URL, vec![])],
                vec![],
            )
            .unwrap_err();
        assert_eq!(error.len(), 1);
    }
}
