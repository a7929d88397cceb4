//! meshctl, the mesh's command line. Today it has one command group,
//! `meshctl ztunnel ...`, which shows what the ztunnel of this node holds
//! and does by reading its admin API on `127.0.0.1:15000` (the JSON contract
//! is docs/ztunnel-admin.md). Bringing a local mesh up and down, exec and
//! waypoints arrive with later issues.
//!
//! The binary (`src/main.rs`) parses flags and prints; everything else is a
//! library so that it is tested without a terminal.
//!
//! # Layout
//!
//! - [`ztunnel`]: the `ztunnel` commands: [`ztunnel::show`] fetches and
//!   renders one view.
//!   - [`ztunnel::admin`]: the HTTP/1.1 client of the admin API, the only
//!     I/O.
//!   - [`ztunnel::model`]: the admin API's JSON as serde types, lenient
//!     about fields added later.
//!   - [`ztunnel::render`]: pure: the lists as tables, JSON or YAML.
//!   - [`ztunnel::status`]: pure: the `status` summary and its wording.
//!   - [`ztunnel::age`]: RFC 3339 timestamps as ages ("5m ago").
//!   - [`ztunnel::Error`]: everything that can fail, worded for the
//!     terminal.
//! - [`table`]: a tiny kubectl-style column aligner.

pub mod table;
pub mod ztunnel;
