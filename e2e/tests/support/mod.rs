//! Shared by the test binaries: the servers in-process on 127.0.0.1 port 0,
//! a plain HTTP/1.1 client that is not the one under test, and the built
//! binaries as child processes.

// Each test binary uses a part of this module; its helpers are test code,
// where a panic is the failure report.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use e2e::{echo_grpc, echo_http, echo_tcp};
use hyper::body::{Body, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running on a task of the test's runtime.
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and waits until `serve` has returned.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server did not stop within 10s of shutdown")
            .expect("the server task panicked");
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

pub async fn start_echo_http(config: echo_http::Config) -> Running {
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(echo_http::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

pub async fn start_echo_grpc(config: echo_grpc::Config) -> Running {
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(echo_grpc::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

pub async fn start_echo_tcp(config: echo_tcp::Config) -> Running {
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(echo_tcp::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "echo.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(body).unwrap())
        .await
        .unwrap();
    let (head, body) = response.into_parts();
    Answer {
        status: head.status,
        headers: head.headers,
        body: read_body(body).await,
    }
}

pub async fn get(addr: SocketAddr, target: &str) -> Answer {
    request(addr, Method::GET, target, &[], String::new()).await
}

pub async fn read_body(mut body: Incoming) -> String {
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Some(data) = frame.unwrap().data_ref() {
            bytes.extend_from_slice(data);
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// A built binary of this crate, running with its stderr read by the test.
pub struct Process {
    pub child: Child,
    stderr: BufReader<ChildStderr>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Process {
    /// Runs `binary` with `args` and, of the variables it reads, only
    /// those in `env`.
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(binary)
            .args(args)
            .env_remove("POD_NAME")
            .env_remove("VERSION")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Process {
            child,
            stderr,
            log: Vec::new(),
        }
    }

    /// Reads stderr until a line contains `needle`; returns that line.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let read = async {
            loop {
                let mut line = String::new();
                let read = self.stderr.read_line(&mut line).await.unwrap();
                assert!(
                    read > 0,
                    "stderr ended before a line with {needle:?}:\n{}",
                    self.log.join("")
                );
                self.log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 20s"))
    }

    /// The address a server logs with `listening addr=...`.
    pub async fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("listening").await;
        let field = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        field.parse().unwrap()
    }

    /// Sends SIGTERM with the system's `kill`.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the process already exited");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the exit (at most 15s) and reads the rest of stderr.
    pub async fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the process did not exit within 15s")
            .unwrap();
        let mut rest = String::new();
        loop {
            let mut line = String::new();
            if self.stderr.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            rest.push_str(&line);
        }
        (status, self.log.join("") + &rest)
    }
}
