//! The mesh CA: Istio's `IstioCertificateService/CreateCertificate`, guarded
//! so that a caller obtains only identities it may hold.
//!
//! A request goes through four steps, each its own piece:
//!
//! 1. **Authenticate** ([`Authenticator`]): who is calling. In file mode a
//!    ztunnel presents its node's bootstrap token ([`NodeTokens`]) and is known
//!    as that node. In Kubernetes mode a caller presents its projected
//!    service-account token and the API server reviews it ([`TokenReviewer`]):
//!    a trusted node-proxy account is known by the node its token is bound
//!    to, any other account as a workload with its own identity.
//! 2. **Name the identity asked for**: Istio's impersonation metadata
//!    ([`IMPERSONATED_IDENTITY`]) when a node proxy asks on behalf of a
//!    workload, otherwise the CSR's one URI SAN.
//! 3. **Authorize** ([`authorize`], pure): a node may obtain the identity of a
//!    workload scheduled on it (as [`NodeDirectory`] says), a workload only its
//!    own identity; nothing else.
//! 4. **Sign** ([`identity::Ca::sign_csr`]), which checks the CSR again and
//!    refuses any identity but the authorized one, so a mistake in an earlier
//!    step fails closed.
//!
//! The root lives in the state directory ([`CaStore`]) or comes from Istio's
//! plug-in CA files. Every refusal is logged and counted ([`CaStats`]).
//!
//! # Layout
//!
//! - `store`: the CA's root, generated once and persisted, or plugged in.
//! - `tokens`: per-node bootstrap tokens in the state directory.
//! - `token_review`: Kubernetes TokenReview of service-account tokens.
//! - `auth`: callers, the authenticator and node directory traits, the
//!   authorization rule.
//! - `service`: the gRPC service, TTL policy and counters.

mod auth;
mod files;
mod service;
mod store;
mod token_review;
mod tokens;

pub use auth::{AuthError, Authenticator, Caller, Denied, NodeDirectory, authorize};
pub use service::{CaConfig, CaCounts, CaService, CaStats, IMPERSONATED_IDENTITY};
pub use store::{CaOrigin, CaStore, CaStoreError};
pub use token_review::{
    DEFAULT_AUDIENCE, DEFAULT_NODE_ACCOUNT, ServiceAccountName, ServiceAccountNameError,
    TokenReviewConfig, TokenReviewer,
};
pub use tokens::NodeTokens;
