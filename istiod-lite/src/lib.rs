//! istiod-lite, the control plane: Kubernetes objects (from an API server or
//! a directory of the same YAML) are translated, purely, into Istio's workload
//! and authorization resources and pushed to proxies as delta xDS; the CA
//! signs workload certificates for callers allowed to hold them.
//!
//! Translation must never do I/O: sources feed objects in, the push layer
//! takes resources out, and everything between is a function of its input.
//!
//! # Layout
//!
//! - `model`: the Kubernetes kinds we read, including our own CRD types.
//! - `translate`: objects to `istio.workload.Address` / `istio.security.Authorization`.
//! - `ca`: the `IstioCertificateService` with authentication and node authorization.
//! - `waypoints`: on Kubernetes, each waypoint Gateway's ServiceAccount,
//!   Deployment and Service (pure objects, and the reconcile loop that applies them).
//! - `root_cert`: on Kubernetes, the mesh root as the ConfigMap
//!   `istio-ca-root-cert` in every namespace (pure object, and its reconcile loop).

pub mod ca;

pub mod model;
pub mod pipeline;
pub mod root_cert;
pub mod server;
pub mod sources;
pub mod translate;
pub mod waypoints;
