//! The global `tracing` subscriber: human-readable lines on stderr, with a
//! filter (`RUST_LOG` syntax) that can be changed while the process runs,
//! which is what an admin `/logging` endpoint needs to turn on debug logs
//! for one module without a restart. Lines are written in batches
//! (`buffer`): call [`flush`] before the process exits.

mod buffer;
mod plain;
mod values;

pub use values::socket_addr;

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Why a log filter was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {reason} (examples: `info`, `ztunnel=debug,info`)")]
    Filter { filter: String, reason: String },
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
    #[error("the log subscriber is gone, so its filter cannot change")]
    Gone,
    #[error("cannot start the thread that writes the log out: {0}")]
    Thread(std::io::Error),
}

/// The buffer in front of stderr, once installed.
static STDERR: OnceLock<buffer::BufferedWriter> = OnceLock::new();

/// Writes out the log lines still buffered; a no-op before [`init`].
pub fn flush() {
    if let Some(writer) = STDERR.get() {
        writer.flush();
    }
}

/// Changes the filter of the installed subscriber. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter text in force, since `EnvFilter` does not print back what
    /// it was given verbatim.
    current: Arc<Mutex<String>>,
}

/// Installs the global subscriber: the filter is `RUST_LOG` when set and
/// valid, else `default_filter`.
pub fn init(default_filter: &str) -> Result<LogControl, LoggingError> {
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| parse(f).is_ok())
        .unwrap_or_else(|| default_filter.to_owned());
    install(&text)
}

/// Installs the global subscriber with exactly `text` as its filter.
fn install(text: &str) -> Result<LogControl, LoggingError> {
    let filter = parse(text)?;
    let (filter, handle) = reload::Layer::new(filter);
    let writer = buffer::BufferedWriter::new(Box::new(std::io::stderr()), buffer::FLUSH_EVERY)
        .map_err(LoggingError::Thread)?;
    // Colour only for a person at a terminal: a log file (the local mesh's,
    // a container's) stays greppable, and is rendered the cheaper way
    // (`plain`), as the proxies write a line per request or connection.
    let terminal = std::io::stderr().is_terminal();
    let coloured = terminal.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(true)
    });
    let plain = (!terminal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(false)
            .fmt_fields(plain::PlainFields)
            .with_timer(plain::UtcMicros)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(coloured)
        .with(plain)
        .try_init();
    installed.map_err(|e| LoggingError::Install(e.to_string()))?;
    if STDERR.set(writer.clone()).is_ok() {
        // What was logged just before a panic is written before its message.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            writer.try_flush();
            previous(info);
        }));
    }
    Ok(LogControl {
        handle,
        current: Arc::new(Mutex::new(text.to_owned())),
    })
}

fn parse(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| LoggingError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })
}

// === impl LogControl ===

impl LogControl {
    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the filter; an invalid one leaves the current one in force.
    pub fn set(&self, filter: &str) -> Result<(), LoggingError> {
        let parsed = parse(filter)?;
        self.handle.reload(parsed).map_err(|_| LoggingError::Gone)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = filter.to_owned();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this binary that installs the global subscriber.
    #[test]
    fn the_installed_filter_changes_at_run_time_and_a_bad_one_changes_nothing() {
        let control = install("info").unwrap();
        assert!(tracing::enabled!(tracing::Level::INFO));
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
        control.set("debug").unwrap();
        assert_eq!(control.current(), "debug");
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        assert!(control.set("telemetry=loud").is_err());
        assert_eq!(control.current(), "debug");
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        // A second subscriber cannot be installed over the first.
        assert!(matches!(install("info"), Err(LoggingError::Install(_))));
    }

    #[test]
    fn filters_are_validated_before_they_replace_the_current_one() {
        assert!(parse("info").is_ok());
        assert!(parse("ztunnel=debug,info").is_ok());
        let error = parse("ztunnel=loud").unwrap_err().to_string();
        assert!(error.contains("ztunnel=loud"), "{error}");
        assert!(error.contains("examples"), "{error}");
    }
}
