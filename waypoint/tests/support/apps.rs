//! The apps behind the mesh's services: an HTTP echo (HTTP/1.1 and HTTP/2,
//! with gRPC-style trailers), a TCP echo and a TCP app that speaks first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// How long the apps take to answer `/slow`.
pub const SLOW: Duration = Duration::from_millis(500);

/// An HTTP app (HTTP/1.1 and HTTP/2 prior knowledge) answering every
/// request (`/slow` after [`SLOW`]) with `<name> <method> <path> <version>` and the value of the
/// request header `x-echo` as response header `x-echo`; over HTTP/2 it
/// ends with the trailer `grpc-status: 0`.
/// Returns the count of connections it has accepted.
pub async fn http_app(addr: SocketAddr, name: &'static str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| async move {
                    if request.uri().path() == "/slow" {
                        tokio::time::sleep(SLOW).await;
                    }
                    let version = request.version();
                    let text = format!(
                        "{name} {} {} {version:?}",
                        request.method(),
                        request.uri().path()
                    );
                    let echoed = request.headers().get("x-echo").cloned();
                    let trailers = (version == http::Version::HTTP_2).then(|| {
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", HeaderValue::from_static("0"));
                        t
                    });
                    let mut response = Response::new(WithTrailers {
                        data: Some(Bytes::from(text)),
                        trailers,
                    });
                    if let Some(value) = echoed {
                        response.headers_mut().insert("x-echo", value);
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    accepted
}

/// A body of one data frame, then trailers if any.
pub struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// Echoes every byte back.
pub async fn tcp_echo_app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = tcp.split();
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
}

/// Speaks first: greets every connection, then echoes.
pub async fn greeter_app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if tcp.write_all(b"220 hello\r\n").await.is_err() {
                    return;
                }
                let (mut reader, mut writer) = tcp.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
}
