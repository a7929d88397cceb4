//! Thread-per-core serving: a few threads, each running a single-threaded
//! Tokio runtime, and every accepted connection pinned to one of them for
//! its whole life, as Envoy pins a connection to a worker.
//!
//! Why not one multi-threaded runtime: a connection's tasks (the TLS and
//! HTTP/2 connection, its streams, the upstream connections they open)
//! hand work to each other on every request. On a work-stealing runtime
//! those hand-offs wake another thread (a futex and a context switch per
//! wake-up, ~10 µs on a VM); on one thread they are a queue push. The
//! waypoint bench measured 0.172 CPU s per 1,000 requests with two
//! work-stealing threads against 0.133 with one thread (HTTP/1.1, one
//! connection), and 0.308 against 0.208 over HTTP/2.
//!
//! A new connection goes to the worker with the fewest open connections
//! (ties in turn), so long-lived connections spread over the cores. A
//! caller that keeps its own group of tasks together (ztunnel: one pod's
//! listeners, connections and HBONE pool) takes a [`Placement`] instead and
//! spawns them all on its worker.
//!
//! A pool of upstream connections keys them by [`current_worker`] too, as
//! each Envoy worker has pools of its own: a request then goes out on a
//! connection driven by its own thread, and no hand-off between the
//! downstream and the upstream side crosses threads.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::debug;

/// One worker thread, unique in the process (over every [`Workers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(usize);

static NEXT_WORKER_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static CURRENT_WORKER: Cell<Option<WorkerId>> = const { Cell::new(None) };
}

/// The worker this code runs on; `None` off the workers (the main
/// runtime, a test's runtime).
pub fn current_worker() -> Option<WorkerId> {
    CURRENT_WORKER.with(Cell::get)
}

/// The worker threads of one process's data path.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
    /// Dropping it ends the thread: its runtime is dropped, which cancels
    /// the tasks still on it.
    _stop: oneshot::Sender<()>,
}

/// Counts a connection on its worker until the connection's future ends.
#[derive(Debug)]
struct Open(Arc<AtomicUsize>);

/// One worker, reserved for a long-lived group of tasks: it counts as one
/// open connection on that worker until dropped. Dropping it does not stop
/// the tasks spawned on it.
#[derive(Debug)]
pub struct Placement {
    handle: Handle,
    _open: Open,
}

impl Placement {
    /// The worker's runtime: what is spawned on it, and everything that
    /// spawns with `tokio::spawn`, runs on that one thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Workers ===

impl Workers {
    /// Starts `count` threads named `<name>-<i>`. `count` must be at least 1.
    pub fn start(name: &str, count: usize) -> io::Result<Self> {
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one worker thread is needed",
            ));
        }
        let workers = (0..count)
            .map(|i| Worker::start(&format!("{name}-{i}")))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Open connections per worker, in worker order.
    pub fn open_connections(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Reserves the least busy worker (see [`Placement`]).
    pub fn place(&self) -> Placement {
        let worker = &self.workers[self.pick()];
        worker.open.fetch_add(1, Ordering::Relaxed);
        Placement {
            handle: worker.handle.clone(),
            _open: Open(worker.open.clone()),
        }
    }

    /// Moves `tcp` to the least busy worker and runs `serve(tcp)` there.
    /// Everything `serve` spawns with `tokio::spawn` stays on that worker.
    pub fn serve<F, Fut>(&self, tcp: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Off this runtime's reactor; the worker registers it with its own.
        let tcp = tcp.into_std()?;
        let placement = self.place();
        placement.handle.clone().spawn(async move {
            let _open = placement;
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(error) => debug!(%error, "cannot register an accepted connection"),
            }
        });
        Ok(())
    }

    /// The worker with the fewest open connections; among equals, the
    /// first one from a starting point that moves on every call.
    fn pick(&self) -> usize {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.workers[i].open.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

// === impl Worker ===

impl Worker {
    fn start(name: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let id = WorkerId(NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed));
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                CURRENT_WORKER.with(|current| current.set(Some(id)));
                // Err: the sender is gone, which is the signal too.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        })
    }
}

#[cfg(test)]
mod tests;
