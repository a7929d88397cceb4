//! The gRPC method paths are part of the wire contract: a peer calls
//! `/<package>.<Service>/<Method>`. These tests drive the generated clients
//! against a fake channel that records the request path, and check the
//! service names the generated servers route on.
//!
//! Upstream: istio/api security/v1alpha1/ca.proto (`package istio.v1.auth;`,
//! `service IstioCertificateService { rpc CreateCertificate }`) and
//! envoyproxy/envoy api/envoy/service/discovery/v3/ads.proto
//! (`package envoy.service.discovery.v3;`,
//! `service AggregatedDiscoveryService { rpc DeltaAggregatedResources }`),
//! open-telemetry/opentelemetry-proto
//! opentelemetry/proto/collector/trace/v1/trace_service.proto
//! (`package opentelemetry.proto.collector.trace.v1;`,
//! `service TraceService { rpc Export }`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use proto::{ca, discovery, otlp};
use tonic::body::Body;
use tonic::codegen::{Service, http, tokio_stream};

/// A channel that records each request path and answers UNIMPLEMENTED.
#[derive(Clone, Default)]
struct RecordingChannel {
    paths: Arc<Mutex<Vec<String>>>,
}

impl Service<http::Request<Body>> for RecordingChannel {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.paths
            .lock()
            // A poisoned lock only means another test thread panicked; the
            // recorded paths are still valid.
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.uri().path().to_owned());
        ready(Ok(
            tonic::Status::unimplemented("recording channel").into_http()
        ))
    }
}

#[tokio::test]
async fn ca_client_calls_the_upstream_method_path() {
    let channel = RecordingChannel::default();
    let mut client =
        ca::istio_certificate_service_client::IstioCertificateServiceClient::new(channel.clone());

    let status = client
        .create_certificate(ca::IstioCertificateRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        *channel.paths.lock().unwrap(),
        ["/istio.v1.auth.IstioCertificateService/CreateCertificate"]
    );
}

#[tokio::test]
async fn ads_client_calls_the_upstream_delta_method_path() {
    let channel = RecordingChannel::default();
    let mut client =
        discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(
            channel.clone(),
        );

    let requests = tokio_stream::iter(Vec::<discovery::DeltaDiscoveryRequest>::new());
    let status = client
        .delta_aggregated_resources(requests)
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        *channel.paths.lock().unwrap(),
        ["/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"]
    );
}

#[tokio::test]
async fn otlp_trace_client_calls_the_collector_method_path() {
    let channel = RecordingChannel::default();
    let mut client =
        otlp::collector::trace_service_client::TraceServiceClient::new(channel.clone());

    let status = client
        .export(otlp::collector::ExportTraceServiceRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        *channel.paths.lock().unwrap(),
        ["/opentelemetry.proto.collector.trace.v1.TraceService/Export"]
    );
}

#[test]
fn servers_route_on_the_upstream_service_names() {
    assert_eq!(
        ca::istio_certificate_service_server::SERVICE_NAME,
        "istio.v1.auth.IstioCertificateService"
    );
    assert_eq!(
        discovery::aggregated_discovery_service_server::SERVICE_NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    assert_eq!(
        otlp::collector::trace_service_server::SERVICE_NAME,
        "opentelemetry.proto.collector.trace.v1.TraceService"
    );
}
