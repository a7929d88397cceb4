//! `traffic tcp`: `connections` connections to echo-tcp, one after
//! another. Each sends a fresh random payload, half-closes, reads until the
//! server half-closes, and checks that the payload came back exactly, after
//! the server's banner if it has one. The banners are counted per server.
//!
//! Sending and receiving run at once: a payload larger than the socket
//! buffers would otherwise deadlock against a server that echoes as it
//! reads.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{TargetError, io_reason};
use crate::summary::{Outcome, Protocol, Summary};

/// The longest banner accepted before the echo; more than this in front of
/// the payload is not echo-tcp.
pub const MAX_BANNER_BYTES: usize = 4096;

/// `host:port` of an echo server, checked for shape (the host is resolved
/// on each connect, as a service name in the mesh would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTarget(String);

/// One `traffic tcp` run.
#[derive(Debug, Clone)]
pub struct TcpRun {
    pub target: TcpTarget,
    /// How many connections, one after another.
    pub connections: u64,
    /// Bytes each connection sends and expects back.
    pub payload_bytes: usize,
    /// Deadline of one connection, from connect to the server's half-close.
    pub timeout: Duration,
}

// === impl TcpTarget ===

impl TcpTarget {
    /// `host:port` with a numeric port (IPv6 in brackets: `[::1]:9000`).
    pub fn parse(value: &str) -> Result<Self, TargetError> {
        let invalid = || TargetError::HostPort(value.to_owned());
        let (host, port) = value.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
        Ok(TcpTarget(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// === impl TcpRun ===

impl TcpRun {
    /// Makes every connection and summarizes; failures are in the summary.
    pub async fn run(&self) -> Summary {
        let started = Instant::now();
        // One buffer for the run, refilled per connection.
        let mut payload = vec![0; self.payload_bytes];
        let mut outcomes = Vec::with_capacity(usize::try_from(self.connections).unwrap_or(0));
        for _ in 0..self.connections {
            fastrand::fill(&mut payload);
            let attempt_started = Instant::now();
            let outcome =
                match tokio::time::timeout(self.timeout, exchange(self.target.as_str(), &payload))
                    .await
                {
                    Ok(Ok(banner)) => Outcome::Answered {
                        status: None,
                        server: banner,
                        latency: attempt_started.elapsed(),
                    },
                    Ok(Err(reason)) => Outcome::Failed { reason },
                    Err(_) => Outcome::Failed {
                        reason: format!("no echo within {:?}", self.timeout),
                    },
                };
            if let Outcome::Failed { reason } = &outcome {
                debug!(addr = self.target.as_str(), reason, "connection failed");
            }
            outcomes.push(outcome);
        }
        Summary::new(Protocol::Tcp, &outcomes, started.elapsed())
    }
}

/// One connection: the banner in front of the echo, if any.
async fn exchange(addr: &str, payload: &[u8]) -> Result<Option<String>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect: {}", io_reason(&error)))?;
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(payload).await?;
        writer.shutdown().await
    };
    // One byte past what a correct answer can be, so that too much is
    // seen as such rather than read forever.
    let limit = (payload.len() + MAX_BANNER_BYTES + 1) as u64;
    let mut reply = Vec::with_capacity(payload.len() + 64);
    let mut limited = (&mut reader).take(limit);
    let receive = limited.read_to_end(&mut reply);
    let (sent, received) = tokio::join!(send, receive);
    sent.map_err(|error| format!("send: {}", io_reason(&error)))?;
    received.map_err(|error| format!("receive: {}", io_reason(&error)))?;
    split_echo(&reply, payload)
}

/// Checks that `reply` is `payload` after at most [`MAX_BANNER_BYTES`] of
/// banner, and returns the banner without its newline. The reasons are
/// the same for the same fault, so the summary can count them.
pub fn split_echo(reply: &[u8], payload: &[u8]) -> Result<Option<String>, String> {
    let Some(banner_len) = reply.len().checked_sub(payload.len()) else {
        debug!(sent = payload.len(), received = reply.len(), "short echo");
        return Err("short echo: fewer bytes came back than were sent".to_owned());
    };
    let (banner, echo) = reply.split_at(banner_len);
    if echo != payload {
        return Err("wrong echo: the bytes that came back differ from those sent".to_owned());
    }
    if banner.len() > MAX_BANNER_BYTES {
        debug!(sent = payload.len(), received = reply.len(), "long echo");
        return Err(format!(
            "long echo: more than {MAX_BANNER_BYTES} bytes came back in front of the payload"
        ));
    }
    if banner.is_empty() {
        return Ok(None);
    }
    let banner = String::from_utf8_lossy(banner);
    Ok(Some(
        banner.strip_suffix('\n').unwrap_or(&banner).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_echo_has_no_banner() {
        assert_eq!(split_echo(b"hello", b"hello"), Ok(None));
        assert_eq!(split_echo(b"", b""), Ok(None));
    }

    #[test]
    fn the_banner_is_what_comes_before_the_echo() {
        assert_eq!(
            split_echo(b"pod-a\nhello", b"hello"),
            Ok(Some("pod-a".to_owned()))
        );
        assert_eq!(split_echo(b"pod-b\n", b""), Ok(Some("pod-b".to_owned())));
        assert_eq!(
            split_echo(b"no newline", b""),
            Ok(Some("no newline".to_owned()))
        );
    }

    #[test]
    fn a_short_or_wrong_echo_is_an_error() {
        assert!(
            split_echo(b"hell", b"hello")
                .unwrap_err()
                .starts_with("short echo")
        );
        assert!(
            split_echo(b"hellO", b"hello")
                .unwrap_err()
                .starts_with("wrong echo")
        );
        assert!(
            split_echo(b"banner\nhellO", b"hello")
                .unwrap_err()
                .starts_with("wrong echo")
        );
    }

    #[test]
    fn too_much_in_front_is_an_error() {
        let mut reply = vec![b'x'; MAX_BANNER_BYTES + 1];
        reply.extend_from_slice(b"hello");
        assert!(
            split_echo(&reply, b"hello")
                .unwrap_err()
                .starts_with("long echo")
        );
    }

    #[test]
    fn parses_host_port() {
        assert_eq!(
            TcpTarget::parse("10.0.0.5:9000").unwrap().as_str(),
            "10.0.0.5:9000"
        );
        assert!(TcpTarget::parse("backend:9000").is_ok());
        assert!(TcpTarget::parse("[::1]:9000").is_ok());
        for bad in [
            "backend",
            ":9000",
            "backend:",
            "backend:http",
            "backend:70000",
        ] {
            assert_eq!(
                TcpTarget::parse(bad),
                Err(TargetError::HostPort(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
