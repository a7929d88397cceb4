//! A minimal HTTP/1.1 server for status endpoints.
//!
//! Status pages are pure functions of the process's state: the handler gets
//! the request head (method, path, query; bodies are not read) and returns
//! the whole response. Each connection runs on its own task, so a slow
//! client holds up nobody, and the accept loop backs off on errors such as
//! running out of file descriptors instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

pub use ::http::{Method, Request, Response, StatusCode, header};

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until `shutdown` resolves. Connections in
/// progress finish on their own tasks.
pub async fn serve<H>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(&Request<()>) -> Response<String> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(serve_connection(tcp, peer, handler.clone()));
            }
            Err(error) => {
                warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<H>(tcp: tokio::net::TcpStream, peer: SocketAddr, handler: Arc<H>)
where
    H: Fn(&Request<()>) -> Response<String> + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (parts, _body) = request.into_parts();
        let head = Request::from_parts(parts, ());
        let response = handler(&head);
        async move { Ok::<_, Infallible>(response) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    if let Err(error) = result {
        debug!(%error, %peer, "HTTP connection ended with an error");
    }
}

/// A response with `body` as JSON.
pub fn json(body: String) -> Response<String> {
    with_type(StatusCode::OK, "application/json", body)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<String> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// A response with an explicit content type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// The value of `name` in the request's query string, percent-decoding
/// only `%2C` (`,`) and `+`, which is all a log filter needs.
pub fn query_param<'a>(request: &'a Request<()>, name: &str) -> Option<String> {
    let query: &'a str = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            value
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%3D", "=")
                .replace("%3d", "=")
                .replace('+', " ")
        })
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_handler_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            |request: &Request<()>| match request.uri().path() {
                "/hello" => text(
                    StatusCode::OK,
                    format!("hello {}", query_param(request, "who").unwrap_or_default()),
                ),
                _ => text(StatusCode::NOT_FOUND, "no such page"),
            },
            async {
                let _ = stopped.await;
            },
        ));
        let ok = get(addr, "/hello?x=1&who=a%2Cb").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("hello a,b"), "{ok}");
        let missing = get(addr, "/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
