//! A real OTLP/gRPC trace receiver for tests (feature `testing`): tonic's
//! server with the generated `TraceService`, handing each `Export` it is
//! sent to the test, or refusing them all with a chosen code. Used by the
//! exporter's own tests, the waypoint's in-process tests and the e2e
//! `otlp-sink`.

use proto::otlp::collector::trace_service_server::{TraceService, TraceServiceServer};
use proto::otlp::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

/// Records each export, or refuses it with `refuse`.
#[derive(Debug)]
struct Receiver {
    exports: mpsc::UnboundedSender<ExportTraceServiceRequest>,
    refuse: Option<tonic::Code>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(code) = self.refuse {
            return Err(tonic::Status::new(code, "refused by the test receiver"));
        }
        // The test may have stopped listening; the export still succeeded.
        let _ = self.exports.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves a receiver on `listener` on a task of its own; what it is sent
/// comes out of the returned channel. `refuse` makes it answer every
/// export with that status instead.
pub fn serve(
    listener: TcpListener,
    refuse: Option<tonic::Code>,
) -> mpsc::UnboundedReceiver<ExportTraceServiceRequest> {
    let (exports, received) = mpsc::unbounded_channel();
    let service = TraceServiceServer::new(Receiver { exports, refuse });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    received
}
