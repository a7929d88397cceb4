//! Who is calling, and which identities they may obtain.
//!
//! Authentication is a trait because its source differs by mode: bootstrap
//! tokens in file mode, Kubernetes TokenReview in Kubernetes mode. Authorization is one
//! pure rule over data, Kubernetes' node authorization as Istio applies it to
//! ztunnel: a node proxy may obtain the identity of a workload scheduled on
//! its own node, and a workload only its own identity. Which identities run
//! where comes from the [`NodeDirectory`] the translation layer maintains.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use identity::Identity;
use tonic::metadata::MetadataMap;

/// An authenticated caller of the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node proxy (ztunnel), known by its node name.
    Node(Arc<str>),
    /// A workload, known by its own identity.
    Workload(Identity),
}

/// Why a caller could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the request carries no bearer token: send `authorization: Bearer <token>` with the \
         node's token (tokens/<node>.token in istiod-lite's state directory), or in Kubernetes \
         mode the pod's projected service-account token"
    )]
    MissingToken,
    #[error("the authorization metadata is not of the form `Bearer <token>`")]
    NotBearer,
    #[error(
        "the bearer token is not one istiod-lite knows: use the node's current token \
         (tokens/<node>.token in istiod-lite's state directory)"
    )]
    UnknownToken,
    #[error(
        "the Kubernetes API server rejected the bearer token ({reason}): send the pod's current \
         projected service-account token with audience {audiences}"
    )]
    TokenRejected { reason: String, audiences: String },
    #[error(
        "the bearer token belongs to {username:?}, not to a service account: only \
         service-account tokens (system:serviceaccount:<namespace>:<name>) obtain certificates"
    )]
    NotServiceAccount { username: String },
    #[error(
        "the token of node proxy account {account} names no node (user.extra \
         \"authentication.kubernetes.io/node-name\"): the node proxy must send a bound projected \
         service-account token from Kubernetes 1.30 or later, which carries its node's name"
    )]
    NoNodeName { account: String },
    #[error(
        "cannot review the bearer token, the Kubernetes API server is unreachable or failing \
         ({reason}): retry; check that istiod-lite reaches the API server"
    )]
    ReviewUnavailable { reason: String },
    #[error(
        "the Kubernetes API server refused istiod-lite's TokenReview ({reason}): check that \
         istiod-lite's service account may `create` `tokenreviews.authentication.k8s.io` (RBAC) \
         and that its own credentials are valid"
    )]
    ReviewRefused { reason: String },
}

/// Finds out who sent a request, from its gRPC metadata.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<Caller, AuthError>> + Send;
}

/// Which workload identities are scheduled on which node.
pub trait NodeDirectory: Send + Sync + 'static {
    /// Whether at least one workload with `identity` is scheduled on `node`.
    fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool;
}

/// Why an authenticated caller may not obtain an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "node {node:?} may not obtain {identity}: no workload with that identity is scheduled \
         on node {node:?}"
    )]
    NotOnNode { node: Arc<str>, identity: Identity },
    #[error("workload {caller} may obtain only its own identity, not {identity}")]
    NotOwnIdentity {
        caller: Identity,
        identity: Identity,
    },
}

/// Whether `caller` may obtain a certificate for `identity`.
pub fn authorize(
    caller: &Caller,
    identity: &Identity,
    directory: &impl NodeDirectory,
) -> Result<(), Denied> {
    match caller {
        Caller::Node(node) if directory.has_identity_on_node(node, identity) => Ok(()),
        Caller::Node(node) => Err(Denied::NotOnNode {
            node: node.clone(),
            identity: identity.clone(),
        }),
        Caller::Workload(own) if own == identity => Ok(()),
        Caller::Workload(own) => Err(Denied::NotOwnIdentity {
            caller: own.clone(),
            identity: identity.clone(),
        }),
    }
}

/// The token of an `authorization: Bearer <token>` metadata entry. The
/// scheme is case-insensitive (RFC 7235).
pub(super) fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::NotBearer)?;
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(AuthError::MissingToken)
            } else {
                Ok(token)
            }
        }
        _ => Err(AuthError::NotBearer),
    }
}

// === impl AuthError ===

impl AuthError {
    /// Whether the same request may succeed later without the caller
    /// changing anything: our dependency failed, not the caller's credential.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::ReviewUnavailable { .. })
    }
}

// === impl Caller ===

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Node(node) => write!(f, "node/{node}"),
            Caller::Workload(identity) => write!(f, "workload/{identity}"),
        }
    }
}

// === impl NodeDirectory ===

impl<T: NodeDirectory + ?Sized> NodeDirectory for Arc<T> {
    fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool {
        (**self).has_identity_on_node(node, identity)
    }
}

// === impl Authenticator ===

impl<T: Authenticator> Authenticator for Arc<T> {
    fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<Caller, AuthError>> + Send {
        (**self).authenticate(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node "n1" runs `a/sa-a`; nothing else runs anywhere.
    struct OneWorkload;

    impl NodeDirectory for OneWorkload {
        fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool {
            node == "n1" && *identity == id("a", "sa-a")
        }
    }

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::new("cluster.local", ns, sa).unwrap()
    }

    #[test]
    fn a_node_may_obtain_identities_scheduled_on_it_only() {
        let n1 = Caller::Node("n1".into());
        let n2 = Caller::Node("n2".into());
        authorize(&n1, &id("a", "sa-a"), &OneWorkload).unwrap();
        let denied = authorize(&n2, &id("a", "sa-a"), &OneWorkload).unwrap_err();
        assert!(matches!(denied, Denied::NotOnNode { .. }));
        let message = denied.to_string();
        assert!(
            message.contains("\"n2\"") && message.contains("ns/a/sa/sa-a"),
            "{message}"
        );
        authorize(&n1, &id("b", "sa-b"), &OneWorkload).unwrap_err();
    }

    #[test]
    fn a_workload_may_obtain_its_own_identity_only() {
        let caller = Caller::Workload(id("b", "sa-b"));
        authorize(&caller, &id("b", "sa-b"), &OneWorkload).unwrap();
        // Running on a node gives a workload no claim to its neighbours.
        let denied = authorize(&caller, &id("a", "sa-a"), &OneWorkload).unwrap_err();
        assert!(matches!(denied, Denied::NotOwnIdentity { .. }));
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut metadata = MetadataMap::new();
        assert_eq!(bearer_token(&metadata), Err(AuthError::MissingToken));
        metadata.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Ok("abc"));
        metadata.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Ok("abc"));
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Err(AuthError::NotBearer));
        metadata.insert("authorization", "abc".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Err(AuthError::NotBearer));
        metadata.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&metadata), Err(AuthError::NotBearer));
    }
}
