//! The stop signal of the servers: SIGTERM (what `meshctl down`, a test
//! harness or Kubernetes sends) or SIGINT (ctrl-c at a terminal).

use std::future::Future;
use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// A future that resolves with the name of the first stop signal received.
///
/// Both handlers are installed before this returns, so a signal that
/// arrives before the future is first polled is not lost (and no longer
/// kills the process). Must be called on a Tokio runtime.
pub fn shutdown_signal() -> io::Result<impl Future<Output = &'static str>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

/// Why a server binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot install the SIGTERM and SIGINT handlers: {0}")]
    Signal(#[source] io::Error),
    #[error("cannot listen on {addr}: {source}: is another process using the port? (set --listen)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What every server binary does after parsing its flags: a runtime, the
/// stop signal, the listener on `listen`, then `serve(listener, stop)`
/// until the signal arrives.
pub fn serve_until_signal<F, Fut>(listen: std::net::SocketAddr, serve: F) -> Result<(), StartError>
where
    F: FnOnce(tokio::net::TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(async {
        let signal = shutdown_signal().map_err(StartError::Signal)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let stop = Box::pin(async {
            let name = signal.await;
            tracing::info!(signal = %name, "shutting down");
        });
        serve(listener, stop).await;
        Ok(())
    })
}
