//! The node proxy: captures enrolled pods' TCP traffic, tunnels it over HBONE and enforces L4 authorization.
//!
//! Not built yet: it arrives with issue 4 (ztunnel). This binary says so and exits non-zero rather than
//! pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("ztunnel is not implemented yet (it arrives with issue 4 (ztunnel).)");
    ExitCode::FAILURE
}
