//! The per-namespace L7 proxy: HTTP routing, retries, timeouts, L7 authorization and traces.
//!
//! Not built yet: it arrives with issue 6 (waypoint). This binary says so and exits non-zero rather than
//! pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("waypoint is not implemented yet (it arrives with issue 6 (waypoint).)");
    ExitCode::FAILURE
}
