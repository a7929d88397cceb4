//! Workload identity for the mesh: SPIFFE ids, keys and certificates, the CA
//! primitives istiod-lite signs with, the rustls configurations every mTLS hop
//! uses, and the cert manager that keeps each workload's certificate fresh.
//!
//! This crate must never do network I/O of its own: fetching certificates goes
//! through the [`manager::CaClient`] trait that the binaries implement.
//!
//! # Layout
//!
//! - [`spiffe`]: `Identity`, parsed and formatted strictly.
//! - [`cert`]: ECDSA P-256 keys, CSRs, certificate inspection, `WorkloadCert`.
//! - [`ca`]: self-signed or plug-in CA; signs leaf certificates from CSRs.
//! - [`tls`]: TLS 1.3 / ALPN `h2` / mTLS configs with SPIFFE-aware verifiers.
//! - [`manager`]: per-identity certificate cache with rotation and coalescing.

pub mod ca;
pub mod cert;
pub mod manager;
pub mod spiffe;
pub mod tls;

pub use ca::{Ca, CaError};
pub use cert::WorkloadCert;
pub use cert::{CertError, CertInfo};
pub use manager::{CaClient, CertManager, CertManagerConfig, CertManagerError};
pub use spiffe::{Identity, IdentityError};
