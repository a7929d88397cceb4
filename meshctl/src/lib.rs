//! meshctl, the mesh's command line. It brings a local mesh up and down
//! (`meshctl up -f examples/demo.yaml`, `down`), enrolls namespaces live
//! (`namespace enable|disable`), runs commands inside pods (`exec`), and
//! shows what a node's ztunnel holds and does (`meshctl ztunnel ...`, from
//! its admin API on `127.0.0.1:15000`; the JSON contract is
//! docs/ztunnel-admin.md). Waypoints arrive with a later issue.
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
//! - [`mesh`]: the local mesh: [`mesh::up`], [`mesh::down`],
//!   [`mesh::set_enrollment`], [`mesh::exec_command`].
//! - [`table`]: a tiny kubectl-style column aligner.

pub mod mesh;
pub mod table;
pub mod ztunnel;
