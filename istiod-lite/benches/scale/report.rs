//! The figures of a run and the printed table, with the bars.

use std::time::Duration;

use super::mesh;
use super::server::{Debounce, Memory};

/// Bar: one change reaches every client within this, at p99.
const LATENCY_BAR: Duration = Duration::from_millis(100);
/// Bar: istiod-lite's memory stays under this (VmHWM, the peak).
const MEMORY_BAR: u64 = 300 * 1000 * 1000;

/// One run of the binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) label: &'static str,
    pub(crate) debounce: Debounce,
    pub(crate) startup: Startup,
    pub(crate) change: ChangeFigures,
    pub(crate) memory_initial: Memory,
    pub(crate) memory_end: Memory,
}

/// Startup figures, times from spawning the process.
#[derive(Debug)]
pub(crate) struct Startup {
    pub(crate) listening: Duration,
    pub(crate) ready: Duration,
    /// Full translation, from `istiod_lite_translate_seconds_total`.
    pub(crate) translate: Duration,
    pub(crate) first_full: Duration,
    pub(crate) all_full: Duration,
    /// Bytes on the wire (TLS records) received by all clients.
    pub(crate) initial_bytes: u64,
    pub(crate) addresses: usize,
    pub(crate) authorizations: usize,
}

/// One-change figures.
#[derive(Debug)]
pub(crate) struct ChangeFigures {
    pub(crate) samples: usize,
    /// Rename to the last client holding the change.
    pub(crate) last: Percentiles,
    /// Rename to the first client holding the change.
    pub(crate) first: Percentiles,
    /// Debounced batches per change (1 means no coalescing, no extra flush).
    pub(crate) batches_per_change: f64,
    /// Server-side translation per change.
    pub(crate) translate: Duration,
    /// Server-side store publish to response queued, per stream.
    pub(crate) publish_to_queued: Duration,
    /// Bytes received by all clients per change.
    pub(crate) bytes_per_change: u64,
}

/// Nearest-rank percentiles.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

// === impl Percentiles ===

impl Percentiles {
    pub(crate) fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort();
        let rank = |p: f64| {
            let n = samples.len();
            let index = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            samples.get(index).copied().unwrap_or_default()
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// Prints one table with a column per run, then the bars.
pub(crate) fn print(runs: &[Run], clients: usize) {
    println!();
    println!(
        "istiod-lite at scale: {} pods, {} services, {} AuthorizationPolicies, {} namespaces, {} nodes; {clients} delta xDS clients (TLS, one HTTP/2 connection each)",
        mesh::PODS,
        mesh::SERVICES,
        mesh::POLICIES,
        mesh::NAMESPACES,
        mesh::NODES
    );
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cell: &dyn Fn(&Run) -> String| {
        rows.push((name.to_string(), runs.iter().map(cell).collect()));
    };
    row("debounce / max debounce", &|r| {
        format!(
            "{} / {} ms",
            r.debounce.debounce_ms, r.debounce.max_debounce_ms
        )
    });
    row("start -> gRPC listening", &|r| ms(r.startup.listening));
    row("start -> /ready (full push in store)", &|r| {
        ms(r.startup.ready)
    });
    row("  of which full translation", &|r| ms(r.startup.translate));
    row("start -> first client full", &|r| ms(r.startup.first_full));
    row(&format!("start -> all {clients} clients full"), &|r| {
        ms(r.startup.all_full)
    });
    row("resources (addresses / authorizations)", &|r| {
        format!("{} / {}", r.startup.addresses, r.startup.authorizations)
    });
    row("initial bytes received, all clients", &|r| {
        format!(
            "{} ({} each)",
            mib(r.startup.initial_bytes),
            mib(r.startup.initial_bytes / clients as u64)
        )
    });
    row("one change: samples", &|r| r.change.samples.to_string());
    row("one change -> last client p50", &|r| ms(r.change.last.p50));
    row("one change -> last client p99", &|r| ms(r.change.last.p99));
    row("one change -> last client max", &|r| ms(r.change.last.max));
    row("one change -> first client p50", &|r| {
        ms(r.change.first.p50)
    });
    row("one change -> first client p99", &|r| {
        ms(r.change.first.p99)
    });
    row("  server: batches per change", &|r| {
        format!("{:.2}", r.change.batches_per_change)
    });
    row("  server: translation per change", &|r| {
        format!("{:.2} ms", r.change.translate.as_secs_f64() * 1000.0)
    });
    row("  server: publish -> queued, per stream", &|r| {
        format!(
            "{:.2} ms",
            r.change.publish_to_queued.as_secs_f64() * 1000.0
        )
    });
    row("  bytes per change, all clients", &|r| {
        format!("{} B", r.change.bytes_per_change)
    });
    row("VmRSS / VmHWM after initial push", &|r| {
        format!(
            "{} / {}",
            mb(r.memory_initial.rss),
            mb(r.memory_initial.hwm)
        )
    });
    row("VmRSS / VmHWM at end", &|r| {
        format!("{} / {}", mb(r.memory_end.rss), mb(r.memory_end.hwm))
    });

    let name_width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let cell_width = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(String::len))
        .chain(runs.iter().map(|r| r.label.len()))
        .max()
        .unwrap_or(0);
    print!("{:name_width$}", "");
    for run in runs {
        print!(" | {:>cell_width$}", run.label);
    }
    println!();
    for (name, cells) in &rows {
        print!("{name:name_width$}");
        for cell in cells {
            print!(" | {cell:>cell_width$}");
        }
        println!();
    }

    println!();
    for run in runs {
        let p99 = run.change.last.p99;
        let peak = run.memory_initial.hwm.max(run.memory_end.hwm);
        println!(
            "[{}] bar one change -> {clients} clients p99 < {}: {} ({}); bar memory < {}: {} (peak VmHWM {})",
            run.label,
            ms(LATENCY_BAR),
            if p99 < LATENCY_BAR { "MET" } else { "NOT MET" },
            ms(p99),
            mb(MEMORY_BAR),
            if peak < MEMORY_BAR { "MET" } else { "NOT MET" },
            mb(peak),
        );
    }
}
