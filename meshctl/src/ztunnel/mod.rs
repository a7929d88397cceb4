//! `meshctl ztunnel ...`: what the ztunnel of this node holds and does,
//! read from its admin API (docs/ztunnel-admin.md).
//!
//! [`show`] is the only function with I/O: it fetches one endpoint through
//! [`admin::AdminClient`] and hands the decoded [`model`] to the pure
//! renderers in [`render`] and [`status`], together with the clock.

pub mod admin;
pub mod age;
mod error;
pub mod model;
pub mod render;
pub mod status;

use std::time::SystemTime;

pub use self::admin::AdminClient;
pub use self::error::Error;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum View {
    /// The node at a glance: control plane, local pods, mesh config,
    /// certificates, connections.
    Status,
    /// Every workload of the mesh, as pushed to this ztunnel.
    Workloads,
    /// Every service of the mesh.
    Services,
    /// Every L4 authorization policy of the mesh.
    Policies,
    /// The certificates of this node's workload identities.
    Certs,
    /// The connections this ztunnel is piping now.
    Connections,
}

/// How to print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, the essentials.
    #[default]
    Table,
    /// Aligned columns, everything that fits on a line.
    Wide,
    /// The objects as ztunnel sent them (for `status`: a summary object).
    Json,
    /// Like json, as YAML.
    Yaml,
}

/// Fetches what `view` needs from the admin API and renders it, ready to
/// print.
pub async fn show(view: View, output: Output, client: &AdminClient) -> Result<String, Error> {
    let now = SystemTime::now();
    match view {
        View::Status => status::render(&client.config_dump().await?, output, now),
        View::Workloads => render::workloads(&client.config_dump().await?.workloads, output),
        View::Services => render::services(&client.config_dump().await?.services, output),
        View::Policies => render::policies(&client.config_dump().await?.policies, output),
        View::Certs => render::certs(&client.certs().await?, output, now),
        View::Connections => render::connections(&client.connections().await?, output, now),
    }
}
