//! echo-tcp: a TCP server that sends back every byte it receives until the
//! client half-closes, then half-closes too. With a banner it first sends
//! `<banner>\n` on each connection, so that a client can tell which pod it
//! reached (`traffic tcp` counts them).
//!
//! [`serve`] runs on a bound listener. On shutdown it stops accepting and
//! half-closes every open connection after echoing what it has already read,
//! so clients see a clean end of stream rather than a reset; connections
//! still open after [`Config::drain_timeout`] are dropped.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// How long clients get to read the last echoes once shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One read's worth; reused for the life of the connection.
const BUFFER_BYTES: usize = 16 * 1024;

/// Pause after a failed accept, so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What echo-tcp sends besides the echo, and how it stops.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sent first on each connection, newline included; `None` sends
    /// nothing but the echo.
    banner: Option<Arc<[u8]>>,
    /// How long connections may stay open once shutdown begins.
    pub drain_timeout: Duration,
}

// === impl Config ===

impl Config {
    /// `banner` is sent as `<banner>\n`.
    pub fn new(banner: Option<&str>) -> Self {
        Config {
            banner: banner.map(|text| format!("{text}\n").into_bytes().into()),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Serves echo-tcp on `listener` until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    match listener.local_addr() {
        Ok(addr) => info!(%addr, banner = config.banner.is_some(), "echo-tcp listening"),
        Err(error) => warn!(%error, "echo-tcp listening on an unknown address"),
    }
    // `true` once shutdown begins; each connection holds a receiver.
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let task = echo_connection(stream, config.banner.clone(), stop.clone());
                    connections.spawn(task.instrument(info_span!("conn", %peer)));
                }
                Err(error) => {
                    warn!(%error, "accepting a connection failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(joined) = connections.join_next() => {
                if let Err(error) = joined && error.is_panic() {
                    error!(%error, "a connection task panicked");
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    info!(
        open = connections.len(),
        "echo-tcp stopped accepting; closing connections"
    );
    // Sending fails only when no connection is left to tell.
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            after = ?config.drain_timeout,
            open = connections.len(),
            "connections still open after the drain timeout; dropping them"
        );
    }
    connections.shutdown().await;
    info!("echo-tcp stopped");
}

async fn echo_connection(
    stream: TcpStream,
    banner: Option<Arc<[u8]>>,
    stop: watch::Receiver<bool>,
) {
    match echo(stream, banner.as_deref(), stop).await {
        Ok(bytes) => debug!(bytes, "connection echoed and closed"),
        Err(error) => debug!(%error, "connection ended with an error"),
    }
}

/// Echoes until the client half-closes or shutdown begins, then
/// half-closes; returns the bytes echoed.
async fn echo(
    mut stream: TcpStream,
    banner: Option<&[u8]>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<u64> {
    let (mut reader, mut writer) = stream.split();
    if let Some(banner) = banner {
        writer.write_all(banner).await?;
    }
    let mut buffer = vec![0; BUFFER_BYTES];
    let mut echoed = 0u64;
    loop {
        let read = tokio::select! {
            biased;
            // An error means the server is gone: stop just the same.
            _ = stop.wait_for(|&stopping| stopping) => break,
            read = reader.read(&mut buffer) => read?,
        };
        if read == 0 {
            break;
        }
        writer.write_all(&buffer[..read]).await?;
        echoed += read as u64;
    }
    writer.shutdown().await?;
    Ok(echoed)
}
