//! The control plane binary: config from Kubernetes or a YAML directory, the
//! CA, incremental delta xDS push.
//!
//! Not wired yet: the translation, push and CA pieces are landing in steps
//! (issue 3); until the server runs, this binary says so and exits non-zero
//! rather than pretending to serve.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("istiod-lite: the server is not wired up yet (issue 3 lands it in steps)");
    ExitCode::FAILURE
}
