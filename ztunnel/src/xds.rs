//! The xDS handler that applies pushed resources to the state; it lives in
//! the `workload` crate with the state it writes, shared with the waypoint.

pub use workload::handler::StateHandler;
