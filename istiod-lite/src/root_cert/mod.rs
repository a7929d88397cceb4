//! Root certificate distribution on Kubernetes: istiod-lite publishes the
//! mesh root as the ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in
//! every namespace, as Istio's namespace controller does. Proxies mount it to
//! verify istiod's serving certificate and their peers: the waypoints
//! istiod-lite deploys (`waypoints::desired_objects`) cannot start without
//! it, and sidecar-era tooling reads it under the same name.
//!
//! The split is the crate's usual one:
//!
//! - `desired` (pure): a Namespace and the root to the ConfigMap, or
//!   [`Skipped`] saying why that namespace gets none.
//! - `controller`: the kube-rs `Controller` that watches Namespaces (and the
//!   ConfigMaps of that one name, so an edited or deleted one is put back),
//!   server-side applies the ConfigMap, and retries failures with
//!   per-namespace exponential backoff.
//!
//! The root does not change while istiod-lite runs (`ca::CaStore` opens it
//! once; plug-in CA files are not watched), so the controller takes it at
//! start. A new root reaches every namespace when istiod-lite restarts: the
//! first list of Namespaces reconciles each one, and the apply replaces the
//! old PEM.
//!
//! There is no delete path: the ConfigMap goes with its namespace, and a
//! namespace the controller skips keeps whatever it already has.

mod controller;
mod desired;

pub use self::controller::{RootCertController, RootCertError};
pub use self::desired::{IGNORED_NAMESPACES, Skipped, desired_config_map};

/// The ConfigMap that holds the mesh root in every namespace (Istio's name).
pub const ROOT_CERT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key holding the root(s), PEM (Istio's name; also the file name
/// where pods mount it).
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Label Istio puts on the ConfigMap, so tools can find the mesh's own
/// ConfigMaps.
pub const CONFIG_LABEL: &str = "istio.io/config";
