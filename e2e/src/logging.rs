//! Logs of the sample apps: `tracing` lines on stderr, so that stdout stays
//! the client's output, with the level from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_filter` applies when
/// `RUST_LOG` is unset or invalid. Call once, at startup.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person: tests and log files read the
        // plain `key=value` fields.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
