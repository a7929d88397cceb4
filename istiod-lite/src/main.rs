//! The control plane: config from Kubernetes or a YAML directory, the CA, incremental delta xDS push.
//!
//! Not built yet: it arrives with issue 3 (istiod-lite). This binary says so and exits non-zero rather than
//! pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("istiod-lite is not implemented yet (it arrives with issue 3 (istiod-lite).)");
    ExitCode::FAILURE
}
