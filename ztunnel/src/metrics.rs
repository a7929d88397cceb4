//! ztunnel's Prometheus metrics, with Istio's names and labels so that
//! dashboards and alerts written for Istio's ztunnel work unchanged.
//!
//! One label set is built per connection, when it starts being piped, and
//! shared by the open and close updates; recording never blocks (atomic
//! counters behind a read-mostly map).

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::Workload;

/// A label value shared between connections without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Arc<str>);

impl From<&Arc<str>> for Text {
    fn from(value: &Arc<str>) -> Self {
        Text(value.clone())
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Text(value.into())
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.0)
    }
}

/// Istio's labels of the `istio_tcp_*` metrics (the subset we know; an
/// unknown value is `unknown`, as in Istio).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `source` for outbound (the client's ztunnel), `destination` for
    /// inbound.
    pub reporter: Text,
    pub source_workload: Text,
    pub source_workload_namespace: Text,
    pub source_canonical_service: Text,
    pub source_canonical_revision: Text,
    pub source_principal: Text,
    pub source_cluster: Text,
    pub destination_service: Text,
    pub destination_workload: Text,
    pub destination_workload_namespace: Text,
    pub destination_canonical_service: Text,
    pub destination_canonical_revision: Text,
    pub destination_principal: Text,
    pub destination_cluster: Text,
    pub request_protocol: Text,
    pub response_flags: Text,
    /// `mutual_tls` inside HBONE, `unknown` for plaintext.
    pub connection_security_policy: Text,
}

/// Which side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

/// The counters of open and closed connections and their bytes.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_opened: Family<ConnectionLabels, Counter>,
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Bytes from the source towards the destination.
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    /// Bytes from the destination back to the source.
    pub received_bytes: Family<ConnectionLabels, Counter>,
    /// Local pods whose capture is in place.
    pub pods_captured: Gauge,
    /// Local pods whose capture failed (retried).
    pub pods_failed: Gauge,
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric under Istio's names.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "istio_tcp_connections_opened",
            "Connections opened",
            self.connections_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Connections closed",
            self.connections_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent from source to destination, counted when a connection closes",
            self.sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes sent from destination back to source, counted when a connection closes",
            self.received_bytes.clone(),
        );
        registry.register(
            "ztunnel_pods_captured",
            "Local pods served with capture in place",
            self.pods_captured.clone(),
        );
        registry.register(
            "ztunnel_pods_capture_failed",
            "Local pods whose capture failed and is being retried",
            self.pods_failed.clone(),
        );
    }
}

// === impl ConnectionLabels ===

impl ConnectionLabels {
    /// The labels of one connection from what the proxy knows of it.
    pub fn new(
        reporter: Reporter,
        source: Option<&Workload>,
        source_principal: Option<&str>,
        destination: Option<&Workload>,
        destination_service: Option<&str>,
        mutual_tls: bool,
    ) -> Self {
        let unknown = || Text::from("unknown");
        let of = |w: Option<&Workload>, f: fn(&Workload) -> &Arc<str>| {
            w.map(f)
                .filter(|v| !v.is_empty())
                .map_or_else(unknown, Text::from)
        };
        let principal = |w: Option<&Workload>| w.map(|w| Text::from(&*w.identity.to_string()));
        ConnectionLabels {
            reporter: Text::from(match reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            }),
            source_workload: of(source, |w| &w.workload_name),
            source_workload_namespace: of(source, |w| &w.namespace),
            source_canonical_service: of(source, |w| &w.canonical_name),
            source_canonical_revision: of(source, |w| &w.canonical_revision),
            source_principal: source_principal
                .map(Text::from)
                .or_else(|| principal(source).filter(|_| mutual_tls))
                .unwrap_or_else(unknown),
            source_cluster: of(source, |w| &w.cluster_id),
            destination_service: destination_service.map_or_else(unknown, Text::from),
            destination_workload: of(destination, |w| &w.workload_name),
            destination_workload_namespace: of(destination, |w| &w.namespace),
            destination_canonical_service: of(destination, |w| &w.canonical_name),
            destination_canonical_revision: of(destination, |w| &w.canonical_revision),
            destination_principal: principal(destination)
                .filter(|_| mutual_tls)
                .unwrap_or_else(unknown),
            destination_cluster: of(destination, |w| &w.cluster_id),
            request_protocol: Text::from("tcp"),
            response_flags: Text::from("-"),
            connection_security_policy: Text::from(if mutual_tls {
                "mutual_tls"
            } else {
                "unknown"
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, ns: &str) -> Workload {
        Workload::try_from(proto::workload::Workload {
            uid: format!("Kubernetes//Pod/{ns}/{name}"),
            name: name.into(),
            namespace: ns.into(),
            service_account: "sa".into(),
            workload_name: format!("{name}-deploy"),
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            addresses: vec![vec![10, 0, 0, 1]],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn labels_follow_istio_and_encode_under_its_names() {
        let a = workload("a", "ns-a");
        let b = workload("b", "ns-b");
        let labels = ConnectionLabels::new(
            Reporter::Destination,
            Some(&a),
            Some("spiffe://cluster.local/ns/ns-a/sa/sa"),
            Some(&b),
            None,
            true,
        );
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.connections_opened.get_or_create(&labels).inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .unwrap_or_else(|| panic!("no opened counter in:\n{text}"));
        for expected in [
            "reporter=\"destination\"",
            "source_workload=\"a-deploy\"",
            "source_workload_namespace=\"ns-a\"",
            "source_principal=\"spiffe://cluster.local/ns/ns-a/sa/sa\"",
            "destination_workload=\"b-deploy\"",
            "destination_canonical_revision=\"v1\"",
            "destination_principal=\"spiffe://cluster.local/ns/ns-b/sa/sa\"",
            "destination_service=\"unknown\"",
            "connection_security_policy=\"mutual_tls\"",
        ] {
            assert!(line.contains(expected), "{expected} missing in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[test]
    fn plaintext_has_no_principals() {
        let b = workload("b", "ns-b");
        let labels =
            ConnectionLabels::new(Reporter::Destination, None, None, Some(&b), None, false);
        assert_eq!(labels.source_principal, Text::from("unknown"));
        assert_eq!(labels.destination_principal, Text::from("unknown"));
        assert_eq!(labels.source_workload, Text::from("unknown"));
        assert_eq!(labels.connection_security_policy, Text::from("unknown"));
    }
}
