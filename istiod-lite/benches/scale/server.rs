//! The istiod-lite child process: start it, reach its HTTP port, read its
//! metrics and its memory, and kill it on every exit path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an HTTP request to the child may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running binary. Dropping it kills the process and reaps it.
#[derive(Debug)]
pub(crate) struct Istiod {
    child: Child,
    /// When `spawn` was called: the origin of startup figures.
    pub(crate) started: Instant,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) state_dir: PathBuf,
    pub(crate) log: PathBuf,
}

/// Debounce flags of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Debounce {
    pub(crate) debounce_ms: u64,
    pub(crate) max_debounce_ms: u64,
}

// === impl Istiod ===

impl Istiod {
    /// Starts the binary on free loopback ports with its logs in `log`.
    pub(crate) fn spawn(
        config_dir: &Path,
        state_dir: &Path,
        log: &Path,
        debounce: Debounce,
    ) -> anyhow::Result<Istiod> {
        let grpc = free_port()?;
        let http = free_port()?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create the server log {}", log.display()))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_istiod-lite"));
        // Profiling hook: `SCALE_SERVER_ENV_<NAME>=<value>` sets <NAME> for
        // the child only (e.g. `MALLOC_ARENA_MAX`, or heaptrack's preload).
        for (name, value) in std::env::vars() {
            if let Some(name) = name.strip_prefix("SCALE_SERVER_ENV_") {
                command.env(name, value);
            }
        }
        let started = Instant::now();
        let child = command
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--debounce-ms")
            .arg(debounce.debounce_ms.to_string())
            .arg("--max-debounce-ms")
            .arg(debounce.max_debounce_ms.to_string())
            .env(
                "RUST_LOG",
                std::env::var("SCALE_SERVER_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("cannot share the log file")?)
            .stderr(log_file)
            .spawn()
            .context("cannot start the istiod-lite binary")?;
        Ok(Istiod {
            child,
            started,
            grpc,
            http,
            state_dir: state_dir.to_owned(),
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited, with the tail of its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll the child")? {
            bail!(
                "istiod-lite exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the server's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the gRPC port accepts TCP connections.
    pub(crate) async fn wait_listening(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if TcpStream::connect(self.grpc).await.is_ok() {
                return Ok(self.started.elapsed());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "istiod-lite did not listen on {} within {within:?}",
                    self.grpc
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls `/ready` every 10 ms until it answers 200.
    pub(crate) async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, _)) = http_get(self.http, "/ready").await {
                return Ok(self.started.elapsed());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                let last = http_get(self.http, "/ready").await.map(|(_, body)| body);
                bail!(
                    "istiod-lite was not ready within {within:?} ({}); last lines of its log:\n{}",
                    last.unwrap_or_else(|e| e.to_string()).trim(),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The body of `GET path` on the HTTP port, whatever the status.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<String> {
        Ok(http_get(self.http, path).await?.1)
    }

    /// The current `/metrics` text.
    pub(crate) async fn metrics(&self) -> anyhow::Result<Metrics> {
        let (status, body) = http_get(self.http, "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics answered {status}: {body}");
        }
        Ok(Metrics(body))
    }

    /// VmRSS and VmHWM of the process, in bytes.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kib: u64 = line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("cannot read {line:?}"))?;
            Ok(kib * 1024)
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

impl Drop for Istiod {
    fn drop(&mut self) {
        // Already gone is fine: both calls only fail then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident and peak resident memory, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) hwm: u64,
}

/// A `/metrics` scrape, read by metric name.
#[derive(Debug, Clone)]
pub(crate) struct Metrics(String);

// === impl Metrics ===

impl Metrics {
    /// The value of the first sample named `name` whose labels contain
    /// `label` (pass "" for any).
    pub(crate) fn value(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, labels) = match series.split_once('{') {
                Some((metric, labels)) => (metric, labels),
                None => (series, ""),
            };
            if metric == name && labels.contains(label) {
                return value
                    .parse()
                    .with_context(|| format!("metric {name} has a non-numeric value {value:?}"));
            }
        }
        bail!("/metrics has no {name}{{{label}}}: did the metric names change?")
    }
}

/// A loopback address with a port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?)
}

/// `GET path` over HTTP/1.1; the status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: istiod\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} took over {HTTP_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path}: no status code in {head:?}"))?;
    Ok((status, body.to_owned()))
}
