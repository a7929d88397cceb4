//! The waypoint binary. Only its routing core exists so far (the `waypoint`
//! library: route tables, matching, filters); the listener, upstream and
//! xDS client arrive with the rest of issue 6 (waypoint). Until then this
//! binary says so and exits non-zero rather than pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "waypoint cannot serve traffic yet: only its route table exists (issue 6, waypoint, is \
         still open)"
    );
    ExitCode::FAILURE
}
