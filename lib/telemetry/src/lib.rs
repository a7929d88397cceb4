//! Logging, access logs, the Prometheus registry, OTLP export and the
//! admin/readiness server helpers shared by every binary.
//!
//! Empty until the ztunnel issue lands. This crate must never sit on the data
//! path's critical section: recording a metric or a log line never blocks.
