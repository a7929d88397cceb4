//! Where the local mesh's waypoints send their traces: an OTLP/gRPC
//! endpoint and a sampling percentage, from the topology's `tracing`
//! block or `meshctl up --otlp-endpoint <url> [--trace-sampling <pct>]`
//! (the flags win), passed to every waypoint `meshctl waypoint apply`
//! starts as the waypoint's own settings, `OTEL_EXPORTER_OTLP_ENDPOINT`
//! and `TRACE_SAMPLING`. Pure.
//!
//! The endpoint is anything a waypoint's pod can reach: a collector in a
//! pod of the mesh (`http://<pod-ip>:4317`), or one on the host network.

use serde::{Deserialize, Serialize};

/// The waypoints' trace settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// `http://host:port` of an OTLP/gRPC collector (Jaeger's 4317).
    pub otlp_endpoint: String,
    /// Percent of requests traced when the caller did not decide (the
    /// waypoint's default, 1, when unset).
    #[serde(default)]
    pub sampling: Option<f64>,
}

// === impl Tracing ===

impl Tracing {
    /// Checks what a waypoint would refuse at start, where `meshctl`
    /// can still say which setting is wrong.
    pub fn check(&self, at: &str) -> Result<(), String> {
        let endpoint = &self.otlp_endpoint;
        if !endpoint.starts_with("http://") || endpoint.len() == "http://".len() {
            return Err(format!(
                "{at} otlp endpoint `{endpoint}` is not http://host:port \
                 (e.g. http://10.20.2.10:4317)"
            ));
        }
        if let Some(sampling) = self.sampling
            && !(0.0..=100.0).contains(&sampling)
        {
            return Err(format!(
                "{at} trace sampling {sampling} is not a percentage from 0 to 100"
            ));
        }
        Ok(())
    }

    /// The environment of a waypoint, in the waypoint's own names.
    pub fn waypoint_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            self.otlp_endpoint.clone(),
        )];
        if let Some(sampling) = self.sampling {
            env.push(("TRACE_SAMPLING".to_owned(), sampling.to_string()));
        }
        env
    }
}

/// The settings in force: `up`'s flags over the topology's block. A
/// sampling flag alone changes the topology's sampling; without any
/// endpoint it is an error, since nothing would be traced.
pub fn merge(
    topology: Option<&Tracing>,
    endpoint_flag: Option<&str>,
    sampling_flag: Option<f64>,
) -> Result<Option<Tracing>, String> {
    let endpoint = endpoint_flag
        .map(str::to_owned)
        .or_else(|| topology.map(|t| t.otlp_endpoint.clone()));
    let Some(otlp_endpoint) = endpoint else {
        return match sampling_flag {
            Some(_) => Err(
                "--trace-sampling needs an endpoint to send traces to: add --otlp-endpoint \
                 or the topology's tracing.otlpEndpoint"
                    .to_owned(),
            ),
            None => Ok(None),
        };
    };
    let tracing = Tracing {
        otlp_endpoint,
        sampling: sampling_flag.or_else(|| topology.and_then(|t| t.sampling)),
    };
    let at = if endpoint_flag.is_some() || sampling_flag.is_some() {
        "--otlp-endpoint/--trace-sampling:"
    } else {
        "tracing:"
    };
    tracing.check(at)?;
    Ok(Some(tracing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_topology() -> Tracing {
        Tracing {
            otlp_endpoint: "http://10.20.2.10:4317".into(),
            sampling: Some(100.0),
        }
    }

    #[test]
    fn flags_win_over_the_topology_and_nothing_means_no_tracing() {
        assert_eq!(merge(None, None, None), Ok(None));
        assert_eq!(
            merge(Some(&from_topology()), None, None),
            Ok(Some(from_topology()))
        );
        let merged = merge(Some(&from_topology()), Some("http://collector:4317"), None)
            .unwrap()
            .unwrap();
        assert_eq!(merged.otlp_endpoint, "http://collector:4317");
        assert_eq!(
            merged.sampling,
            Some(100.0),
            "the topology's sampling stays"
        );
        let merged = merge(None, Some("http://collector:4317"), Some(5.0))
            .unwrap()
            .unwrap();
        assert_eq!(merged.sampling, Some(5.0));
    }

    #[test]
    fn bad_settings_say_which_and_what_is_expected() {
        let error = merge(None, None, Some(10.0)).unwrap_err();
        assert!(error.contains("--otlp-endpoint"), "{error}");
        let error = merge(None, Some("collector:4317"), None).unwrap_err();
        assert!(error.contains("not http://host:port"), "{error}");
        let error = merge(None, Some("http://c:4317"), Some(101.0)).unwrap_err();
        assert!(error.contains("from 0 to 100"), "{error}");
        let bad = Tracing {
            otlp_endpoint: "https://c:4317".into(),
            sampling: None,
        };
        assert!(
            merge(Some(&bad), None, None)
                .unwrap_err()
                .starts_with("tracing:")
        );
    }

    #[test]
    fn the_topology_block_is_read_and_checked() {
        let topology = |tracing: &str| {
            format!("name: t\nnodes: [{{name: n, podCIDR: 10.20.1.0/24}}]\npods: []\n{tracing}")
        };
        let parsed = crate::mesh::topology::Topology::parse(
            "t.yaml",
            &topology("tracing: {otlpEndpoint: \"http://10.20.1.10:4317\", sampling: 100}"),
        )
        .unwrap();
        assert_eq!(
            parsed.tracing,
            Some(from_topology_at("http://10.20.1.10:4317"))
        );
        let error = crate::mesh::topology::Topology::parse(
            "t.yaml",
            &topology("tracing: {otlpEndpoint: \"10.20.1.10:4317\"}"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("tracing: otlp endpoint"), "{error}");
        let none = crate::mesh::topology::Topology::parse("t.yaml", &topology("")).unwrap();
        assert_eq!(none.tracing, None);
    }

    fn from_topology_at(endpoint: &str) -> Tracing {
        Tracing {
            otlp_endpoint: endpoint.into(),
            sampling: Some(100.0),
        }
    }

    #[test]
    fn a_waypoint_gets_its_own_variable_names() {
        assert_eq!(
            from_topology().waypoint_env(),
            [
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    "http://10.20.2.10:4317".to_owned()
                ),
                ("TRACE_SAMPLING".to_owned(), "100".to_owned()),
            ]
        );
        let default_sampling = Tracing {
            sampling: None,
            ..from_topology()
        };
        assert_eq!(default_sampling.waypoint_env().len(), 1);
    }
}
