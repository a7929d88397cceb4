//! The OTLP exporter against a real OTLP/gRPC receiver
//! (`otlp::receiver`: tonic's server with the generated `TraceService`) on
//! loopback, recording every `Export` it is sent. Waiting is for arrival (with a generous bound),
//! never an assertion on how long something took.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use proto::otlp::collector::ExportTraceServiceRequest;
use proto::otlp::common::any_value;
use telemetry::otlp::receiver::serve;
use telemetry::otlp::{
    Attribute, CollectorState, ExporterConfig, ExporterStats, FLAG_SAMPLED, Origin, SpanData,
    SpanExporter, SpanKind, SpanQueue, SpanStatus,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Long enough for any export on a loaded CI machine; only a failure waits it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn config(addr: SocketAddr) -> ExporterConfig {
    let mut config = ExporterConfig::new(format!("http://{addr}"));
    config.flush_interval = Duration::from_millis(20);
    config.backoff_base = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config
}

fn origin() -> Origin {
    Origin {
        resource: vec![Attribute::new("service.name", "waypoint.test")],
        scope_name: "test".into(),
        scope_version: "1".into(),
    }
}

fn span(n: u8) -> SpanData {
    let now = SystemTime::now();
    SpanData {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: None,
        parent_is_remote: false,
        trace_state: String::new(),
        flags: FLAG_SAMPLED,
        name: format!("span {n}"),
        kind: SpanKind::Server,
        start: now,
        end: now,
        attributes: vec![Attribute::new("n", u32::from(n))],
        status: SpanStatus::Unset,
    }
}

/// Receives exports until `count` spans came; returns the batches' sizes
/// and the span names in arrival order.
async fn receive(
    exports: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    count: usize,
) -> (Vec<usize>, Vec<String>) {
    let (mut sizes, mut names) = (Vec::new(), Vec::new());
    while names.len() < count {
        let export = tokio::time::timeout(PATIENCE, exports.recv())
            .await
            .expect("the receiver got no export in time")
            .unwrap();
        let resource = &export.resource_spans[0];
        let service = &resource.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        assert_eq!(
            service.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("waypoint.test".into()))
        );
        let spans = &resource.scope_spans[0].spans;
        sizes.push(spans.len());
        names.extend(spans.iter().map(|s| s.name.clone()));
    }
    (sizes, names)
}

async fn wait_for_state(
    state: &mut watch::Receiver<CollectorState>,
    wanted: impl Fn(&CollectorState) -> bool,
) {
    tokio::time::timeout(PATIENCE, state.wait_for(|s| wanted(s)))
        .await
        .expect("the collector state did not change in time")
        .unwrap();
}

async fn wait_for_count(counter: &prometheus_client::metrics::counter::Counter, wanted: u64) {
    tokio::time::timeout(PATIENCE, async {
        while counter.get() < wanted {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the counter did not reach its value in time");
}

#[tokio::test]
async fn spans_go_out_in_batches_of_at_most_max_batch_in_order() {
    let (listener, addr) = loopback().await;
    let mut exports = serve(listener, None);
    let mut config = config(addr);
    config.max_batch = 4;
    // Long, so that batches are cut by size, not time.
    config.flush_interval = Duration::from_secs(3);
    let stats = ExporterStats::default();
    let exporter = SpanExporter::start(config, origin(), stats.clone()).unwrap();
    for n in 0..12 {
        assert!(exporter.queue().push(span(n)));
    }
    let (sizes, names) = receive(&mut exports, 12).await;
    assert!(sizes.iter().all(|s| *s <= 4), "{sizes:?}");
    assert!(sizes.len() >= 3, "{sizes:?}");
    let expected: Vec<String> = (0..12).map(|n| format!("span {n}")).collect();
    assert_eq!(names, expected);
    wait_for_count(&stats.exported, 12).await;
    assert_eq!(*exporter.state().borrow(), CollectorState::Accepting);
    assert_eq!((stats.dropped.get(), stats.failed.get()), (0, 0));
}

#[tokio::test]
async fn a_batch_smaller_than_max_goes_out_at_the_flush_interval() {
    let (listener, addr) = loopback().await;
    let mut exports = serve(listener, None);
    let exporter = SpanExporter::start(config(addr), origin(), ExporterStats::default()).unwrap();
    exporter.queue().push(span(1));
    let (sizes, _) = receive(&mut exports, 1).await;
    assert_eq!(sizes, [1]);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let stats = ExporterStats::default();
    let (queue, mut spans) = SpanQueue::bounded(3, stats.clone());
    let pushed: Vec<bool> = (0..5).map(|n| queue.push(span(n))).collect();
    assert_eq!(pushed, [true, true, true, false, false]);
    assert_eq!(stats.dropped.get(), 2);
    // Room again once the exporter takes one.
    spans.recv().await.unwrap();
    assert!(queue.push(span(9)));
    assert_eq!(stats.dropped.get(), 2);
}

#[tokio::test]
async fn with_the_collector_down_the_overflow_is_dropped_and_counted() {
    // A port with nothing behind it.
    let (listener, addr) = loopback().await;
    drop(listener);
    let mut config = config(addr);
    config.queue_capacity = 8;
    config.max_batch = 2;
    let stats = ExporterStats::default();
    let exporter = SpanExporter::start(config, origin(), stats.clone()).unwrap();
    let mut state = exporter.state();
    let queued = (0..50).filter(|n| exporter.queue().push(span(*n))).count();
    // The queue holds 8; the task holds at most one batch of 2 besides.
    assert!(queued <= 8 + 2, "{queued} queued");
    assert_eq!(stats.dropped.get(), 50 - queued as u64);
    wait_for_state(&mut state, |s| matches!(s, CollectorState::Unreachable(_))).await;
    assert_eq!(stats.exported.get(), 0);
}

#[tokio::test]
async fn a_collector_that_comes_up_later_gets_what_was_queued_meanwhile() {
    let (listener, addr) = loopback().await;
    drop(listener);
    let stats = ExporterStats::default();
    let exporter = SpanExporter::start(config(addr), origin(), stats.clone()).unwrap();
    let mut state = exporter.state();
    for n in 0..5 {
        exporter.queue().push(span(n));
    }
    wait_for_state(&mut state, |s| matches!(s, CollectorState::Unreachable(_))).await;

    // The collector starts on the address the exporter keeps retrying.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut exports = serve(listener, None);
    let (_, names) = receive(&mut exports, 5).await;
    assert_eq!(names.len(), 5);
    wait_for_state(&mut state, |s| *s == CollectorState::Accepting).await;
    wait_for_count(&stats.exported, 5).await;
    assert_eq!((stats.dropped.get(), stats.failed.get()), (0, 0));
}

#[tokio::test]
async fn a_refused_batch_is_dropped_and_counted_not_retried() {
    let (listener, addr) = loopback().await;
    let mut exports = serve(listener, Some(tonic::Code::InvalidArgument));
    let stats = ExporterStats::default();
    let exporter = SpanExporter::start(config(addr), origin(), stats.clone()).unwrap();
    let mut state = exporter.state();
    for n in 0..3 {
        exporter.queue().push(span(n));
    }
    wait_for_state(&mut state, |s| matches!(s, CollectorState::Refusing(_))).await;
    wait_for_count(&stats.failed, 3).await;
    assert_eq!(stats.exported.get(), 0);
    assert!(exports.try_recv().is_err());
}

#[tokio::test]
async fn shutdown_sends_what_is_queued() {
    let (listener, addr) = loopback().await;
    let mut exports = serve(listener, None);
    let mut config = config(addr);
    // Never reached: only shutdown sends.
    config.flush_interval = Duration::from_secs(3600);
    let exporter = SpanExporter::start(config, origin(), ExporterStats::default()).unwrap();
    for n in 0..3 {
        exporter.queue().push(span(n));
    }
    exporter.shutdown(PATIENCE).await;
    let (_, names) = receive(&mut exports, 3).await;
    assert_eq!(names, ["span 0", "span 1", "span 2"]);
}
