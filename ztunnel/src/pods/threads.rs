//! Which thread each pod's data path runs on.
//!
//! Why a pod is pinned to one thread: its connections hand work to each
//! other all the time (an accepted socket's task and the HBONE
//! connection's task, both ways, on every read). On a work-stealing
//! runtime each hand-off may wake a second thread to steal the task (a
//! `futex` or an `eventfd` write, and a context switch). Measured in the
//! mesh bench's pods, one connection after another: 2 `futex` calls per
//! connection on the client side and an `eventfd` write on the server
//! side, and 254 and 290 µs of CPU per connection against 204-215 and
//! 225-237 µs with a single thread (docs/performance.md). A pod's
//! listeners, its connections and its HBONE pool therefore share one
//! thread, and pods spread over the threads, the one with the fewest
//! pods first, as Envoy pins a connection to a worker.

use std::sync::Arc;

use tokio::runtime::Handle;

/// The data path's threads.
#[derive(Debug, Clone)]
pub enum DataThreads {
    /// Thread per core (the binary's): each pod on one worker.
    Workers(Arc<hbone::Workers>),
    /// One runtime for every pod: a test's own, so that its pods run
    /// beside it.
    Runtime(Handle),
}

/// The thread one pod runs on; while held, the pod counts on its worker.
#[derive(Debug)]
pub struct PodThread {
    handle: Handle,
    _placement: Option<hbone::Placement>,
}

// === impl DataThreads ===

impl DataThreads {
    /// The thread for a new pod: the worker with the fewest pods.
    pub fn place(&self) -> PodThread {
        match self {
            DataThreads::Workers(workers) => {
                let placement = workers.place();
                PodThread {
                    handle: placement.handle().clone(),
                    _placement: Some(placement),
                }
            }
            DataThreads::Runtime(handle) => PodThread {
                handle: handle.clone(),
                _placement: None,
            },
        }
    }
}

// === impl PodThread ===

impl PodThread {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests;
