//! TLS termination for the gRPC port: we accept and handshake ourselves and
//! hand tonic finished TLS streams.
//!
//! Each handshake runs in its own task with a deadline, so a client that
//! opens a socket and says nothing (or a port scanner) never holds up the
//! accept loop or anyone else's handshake.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for tonic to pick them up.
const ACCEPTED_QUEUE: usize = 64;

/// One accepted TLS connection, as tonic's server wants it: the stream and
/// the addresses (`TcpConnectInfo`, so `Request::remote_addr` works as it
/// does on plaintext).
#[derive(Debug)]
pub(super) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

/// Accepts on `listener` until `shutdown` turns true; yields connections
/// whose handshake completed.
pub(super) fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Result<TlsConnection, io::Error>> {
    let (accepted, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        while let Some((tcp, peer)) =
            super::accept_until_stopped(&listener, "gRPC", &mut shutdown).await
        {
            let info = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(peer),
            };
            // xDS pushes are small and latency matters more than packing.
            if let Err(error) = tcp.set_nodelay(true) {
                debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // Only fails when the server is shutting down.
                        let _ = accepted.send(Ok(TlsConnection { stream, info })).await;
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
        debug!("stopped accepting gRPC connections");
    });
    rx
}

/// The acceptor for a server config.
pub(super) fn acceptor(config: rustls::ServerConfig) -> TlsAcceptor {
    TlsAcceptor::from(Arc::new(config))
}

// === impl TlsConnection ===

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
