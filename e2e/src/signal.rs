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
