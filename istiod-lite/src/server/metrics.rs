//! `/metrics`: every counter the control plane keeps, read at scrape time.
//!
//! The xDS server, the CA and the pipeline count in plain atomics of their
//! own; one [`Collector`] reads them when Prometheus scrapes, so nothing on a
//! push or CSR path touches the metrics library. Where istiod has a metric
//! for the same thing, we use its name (`pilot_xds`, `pilot_xds_pushes`,
//! `pilot_total_xds_rejects`, `pilot_proxy_convergence_time`), so existing
//! dashboards keep working; the rest are `istiod_lite_*`.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_AUTHORIZATION_TYPE_URL,
    WAYPOINT_BACKEND_POLICY_TYPE_URL, WAYPOINT_FAULTS_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL,
};
use xds::{PUSH_LATENCY_BUCKETS, ResourceStore, ServerStats};

use crate::ca::CaStats;
use crate::pipeline::PipelineHandle;

/// Reads the counters of every part at scrape time.
pub(super) struct Counters {
    pub(super) xds: Arc<ServerStats>,
    pub(super) ca: Arc<CaStats>,
    pub(super) pipeline: PipelineHandle,
    pub(super) store: Arc<ResourceStore>,
}

/// A registry holding only [`Counters`].
pub(super) fn registry(counters: Counters) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(counters));
    registry
}

/// The text exposition of `registry`.
pub(super) fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

// === impl Counters ===

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let xds = self.xds.snapshot();
        gauge(
            &mut encoder,
            "pilot_xds",
            "Connected xDS clients (open discovery streams).",
            xds.connected_clients,
        )?;
        counter(
            &mut encoder,
            "pilot_xds_pushes",
            "Discovery responses sent.",
            xds.pushes,
        )?;
        counter(
            &mut encoder,
            "pilot_total_xds_rejects",
            "Discovery requests that NACKed a response.",
            xds.nacks,
        )?;
        counter(
            &mut encoder,
            "istiod_lite_xds_streams",
            "Discovery streams opened.",
            xds.streams_total,
        )?;
        counter(
            &mut encoder,
            "istiod_lite_xds_acks",
            "Discovery requests that ACKed the latest response.",
            xds.acks,
        )?;

        // The xDS crate keeps per-bucket counts; Prometheus wants them
        // cumulative.
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(PUSH_LATENCY_BUCKETS.len() + 1);
        for (bound, count) in PUSH_LATENCY_BUCKETS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(xds.push_latency_buckets)
        {
            cumulative += count;
            buckets.push((*bound, cumulative));
        }
        let mut metric = encoder.encode_descriptor(
            "pilot_proxy_convergence_time",
            "Time from a config change to its push being queued on a stream.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            xds.push_latency_sum_seconds,
            cumulative,
            &buckets,
            None,
        )?;

        let mut metric = encoder.encode_descriptor(
            "istiod_lite_xds_resources",
            "Resources in the push store, by type URL.",
            None,
            MetricType::Gauge,
        )?;
        for type_url in [
            ADDRESS_TYPE_URL,
            AUTHORIZATION_TYPE_URL,
            WAYPOINT_ROUTES_TYPE_URL,
            WAYPOINT_AUTHORIZATION_TYPE_URL,
            WAYPOINT_FAULTS_TYPE_URL,
            WAYPOINT_BACKEND_POLICY_TYPE_URL,
        ] {
            let count = self.store.versions(type_url).len();
            let labels = [("type", type_url)];
            let family = metric.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX)).encode(family)?;
        }

        let ca = self.ca.counts();
        let mut metric = encoder.encode_descriptor(
            "istiod_lite_csr_requests",
            "Certificate signing requests, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("issued", ca.issued),
            ("unauthenticated", ca.unauthenticated),
            ("denied", ca.denied),
            ("bad_csr", ca.bad_csr),
            ("failed", ca.failed),
        ] {
            let labels = [("result", result)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }

        let pipeline = self.pipeline.counts();
        counter(
            &mut encoder,
            "istiod_lite_debounce_batches",
            "Debounced batches of source changes flushed.",
            pipeline.batches,
        )?;
        counter(
            &mut encoder,
            "istiod_lite_config_pushes",
            "Batches that changed the pushed config.",
            pipeline.config_pushes,
        )?;
        counter(
            &mut encoder,
            "istiod_lite_source_object_changes",
            "Object upserts and removals received from the config source.",
            pipeline.object_changes,
        )?;
        let metric = encoder.encode_descriptor(
            "istiod_lite_translate",
            "Time spent translating config.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(pipeline.translate_micros as f64 / 1e6).encode(metric)?;

        let status = self.pipeline.status();
        gauge(
            &mut encoder,
            "istiod_lite_ready",
            "1 once the source synced and the first full config is pushed.",
            u64::from(status.synced && status.pushed),
        )?;
        gauge(
            &mut encoder,
            "istiod_lite_source_problems",
            "Origins (files, watches) whose latest content could not be used.",
            status.problems.len() as u64,
        )?;
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}
