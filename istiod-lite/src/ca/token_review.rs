//! Kubernetes-mode authentication: a caller presents its pod's projected
//! service-account token, and the API server says whose it is
//! (`authentication.k8s.io/v1` TokenReview), as istiod does for ztunnel.
//!
//! The review's answer becomes a [`Caller`] by a pure function
//! (`caller_of`), failing closed at every step:
//!
//! - not authenticated, or an error: refused, with the API server's reason;
//! - none of our audiences confirmed in `status.audiences`: refused (the API
//!   documents that a client setting `spec.audiences` must check this);
//! - not a service account (`system:serviceaccount:<ns>:<sa>` in the
//!   `system:serviceaccounts` group, Istio's test): refused;
//! - a trusted node-proxy account (Istio's `CA_TRUSTED_NODE_ACCOUNTS`,
//!   `istio-system/ztunnel` by default): a node caller, named by the node the
//!   API server bound the token to (`authentication.kubernetes.io/node-name`,
//!   in bound tokens since Kubernetes 1.30); without it, refused;
//! - any other account: a workload caller with its own SPIFFE identity.
//!
//! When the review itself fails, the caller is refused too: an unreachable
//! API server (or a 5xx, 429 or timeout) is [`AuthError::ReviewUnavailable`],
//! which the CA answers with UNAVAILABLE so that proxies retry; anything else
//! (a 403 because RBAC lacks `create` on TokenReviews) is
//! [`AuthError::ReviewRefused`].

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use identity::Identity;
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use kube::api::{Api, PostParams};
use tonic::metadata::MetadataMap;

use super::auth::{self, AuthError, Authenticator, Caller};

/// Istio's default audience for tokens sent to its CA.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";
/// The service account Istio trusts as a node proxy by default.
pub const DEFAULT_NODE_ACCOUNT: &str = "istio-system/ztunnel";
/// How long a review may take before the caller is told to retry.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `user.extra` key under which a bound token names its pod's node.
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// Usernames of service-account tokens: `system:serviceaccount:<ns>:<sa>`.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount";
/// The group every service-account token is in.
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// What a [`TokenReviewer`] asks of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReviewConfig {
    /// Audiences asked for in the review; the API server must confirm at
    /// least one. An empty list refuses every token.
    pub audiences: Vec<String>,
    /// Service accounts whose tokens make a node proxy (a ztunnel) of the
    /// caller, which may then obtain identities of workloads on its node.
    pub trusted_node_accounts: Vec<ServiceAccountName>,
    /// How long to wait for the API server's answer.
    pub timeout: Duration,
}

/// A Kubernetes service account, written `<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAccountName {
    namespace: String,
    name: String,
}

/// Why a string is not a `<namespace>/<name>` service account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a service account written `<namespace>/<name>`: {reason}")]
pub struct ServiceAccountNameError {
    input: String,
    reason: &'static str,
}

/// Authenticates CA callers with TokenReview; see the module docs.
pub struct TokenReviewer {
    /// TokenReviews are cluster-scoped.
    api: Api<TokenReview>,
    config: TokenReviewConfig,
    /// Of the workload identities this reviewer hands out.
    trust_domain: Arc<str>,
}

// === impl TokenReviewConfig ===

impl Default for TokenReviewConfig {
    fn default() -> Self {
        TokenReviewConfig {
            audiences: vec![DEFAULT_AUDIENCE.to_owned()],
            trusted_node_accounts: vec![ServiceAccountName {
                namespace: "istio-system".to_owned(),
                name: "ztunnel".to_owned(),
            }],
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl TokenReviewConfig {
    fn is_trusted_node_account(&self, namespace: &str, name: &str) -> bool {
        self.trusted_node_accounts
            .iter()
            .any(|account| account.namespace == namespace && account.name == name)
    }
}

// === impl ServiceAccountName ===

impl ServiceAccountName {
    /// Validates both parts as Kubernetes does: the namespace is a DNS
    /// label, the name a DNS subdomain.
    pub fn new(namespace: &str, name: &str) -> Result<Self, ServiceAccountNameError> {
        let invalid = |reason| ServiceAccountNameError {
            input: format!("{namespace}/{name}"),
            reason,
        };
        if !is_dns_name(namespace, 63, false) {
            return Err(invalid(
                "the namespace must be 1 to 63 of a-z, 0-9 and '-', starting and ending with a \
                 letter or digit",
            ));
        }
        if !is_dns_name(name, 253, true) {
            return Err(invalid(
                "the name must be 1 to 253 of a-z, 0-9, '-' and '.', starting and ending with a \
                 letter or digit",
            ));
        }
        Ok(ServiceAccountName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for ServiceAccountName {
    type Err = ServiceAccountNameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = input.split_once('/').ok_or(ServiceAccountNameError {
            input: input.to_owned(),
            reason: "it has no '/' between namespace and name",
        })?;
        ServiceAccountName::new(namespace, name)
    }
}

impl fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl TokenReviewer ===

impl TokenReviewer {
    /// A reviewer asking the API server behind `client`; workload callers
    /// get identities in `trust_domain`.
    pub fn new(client: kube::Client, trust_domain: &str, config: TokenReviewConfig) -> Self {
        TokenReviewer {
            api: Api::all(client),
            config,
            trust_domain: trust_domain.into(),
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(self.config.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let params = PostParams::default();
        let create = self.api.create(&params, &request);
        let reviewed = tokio::time::timeout(self.config.timeout, create)
            .await
            .map_err(|_| AuthError::ReviewUnavailable {
                reason: format!("no answer within {:?}", self.config.timeout),
            })?
            .map_err(review_error)?;
        caller_of(
            &reviewed.status.unwrap_or_default(),
            &self.config,
            &self.trust_domain,
        )
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<Caller, AuthError>> + Send {
        // Checked before the future starts: a request without a token never
        // reaches the API server.
        let token = auth::bearer_token(metadata).map(str::to_owned);
        async move { self.review(&token?).await }
    }
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// Who the API server says holds the token; the module docs give the rules.
fn caller_of(
    status: &TokenReviewStatus,
    config: &TokenReviewConfig,
    trust_domain: &str,
) -> Result<Caller, AuthError> {
    let rejected = |reason: String| AuthError::TokenRejected {
        reason,
        audiences: config.audiences.join(", "),
    };
    if let Some(error) = status.error.as_deref().filter(|error| !error.is_empty()) {
        return Err(rejected(error.to_owned()));
    }
    if status.authenticated != Some(true) {
        return Err(rejected("the token is not authenticated".to_owned()));
    }
    let confirmed = status.audiences.as_deref().unwrap_or_default();
    if !confirmed
        .iter()
        .any(|audience| config.audiences.contains(audience))
    {
        return Err(rejected(format!(
            "the API server confirmed none of the audiences asked for (it answered {confirmed:?})"
        )));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.as_deref().unwrap_or_default();
    let in_group = user
        .groups
        .iter()
        .flatten()
        .any(|group| group == SERVICE_ACCOUNTS_GROUP);
    let Some((namespace, name)) = service_account_of(username).filter(|_| in_group) else {
        return Err(AuthError::NotServiceAccount {
            username: username.to_owned(),
        });
    };
    if config.is_trusted_node_account(namespace, name) {
        return node_of(&user)
            .map(|node| Caller::Node(node.into()))
            .ok_or_else(|| AuthError::NoNodeName {
                account: format!("{namespace}/{name}"),
            });
    }
    Identity::new(trust_domain, namespace, name)
        .map(Caller::Workload)
        .map_err(|error| rejected(format!("{username:?} makes no SPIFFE identity: {error}")))
}

/// `(namespace, name)` of a `system:serviceaccount:<ns>:<sa>` username.
fn service_account_of(username: &str) -> Option<(&str, &str)> {
    let rest = username
        .strip_prefix(SERVICE_ACCOUNT_USER)?
        .strip_prefix(':')?;
    let (namespace, name) = rest.split_once(':')?;
    let valid = |part: &str| !part.is_empty() && !part.contains(':');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

/// The one node a bound token names; none if absent, empty or ambiguous.
fn node_of(user: &UserInfo) -> Option<&str> {
    match user.extra.as_ref()?.get(NODE_NAME_EXTRA)?.as_slice() {
        [node] if !node.is_empty() => Some(node),
        _ => None,
    }
}

/// A failed review: retryable when the API server is unreachable,
/// overloaded or failing; otherwise our own setup is wrong.
fn review_error(error: kube::Error) -> AuthError {
    match &error {
        kube::Error::Api(status) => {
            let reason = format!("{} {}: {}", status.code, status.reason, status.message);
            if status.code >= 500 || status.code == 429 {
                AuthError::ReviewUnavailable { reason }
            } else {
                AuthError::ReviewRefused { reason }
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            AuthError::ReviewUnavailable {
                reason: error.to_string(),
            }
        }
        _ => AuthError::ReviewRefused {
            reason: error.to_string(),
        },
    }
}

/// A DNS label (`subdomain` false) or subdomain of at most `max` bytes.
fn is_dns_name(name: &str, max: usize, subdomain: bool) -> bool {
    let allowed = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (subdomain && b == b'.')
    };
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= max
        && name.bytes().all(allowed)
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn status(username: &str, groups: &[&str], node: Option<&str>) -> TokenReviewStatus {
        let extra =
            node.map(|node| BTreeMap::from([(NODE_NAME_EXTRA.to_owned(), vec![node.to_owned()])]));
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![DEFAULT_AUDIENCE.to_owned()]),
            user: Some(UserInfo {
                username: Some(username.to_owned()),
                groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                extra,
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    fn workload(ns: &str, sa: &str) -> TokenReviewStatus {
        status(
            &format!("system:serviceaccount:{ns}:{sa}"),
            &[SERVICE_ACCOUNTS_GROUP],
            None,
        )
    }

    fn caller(status: &TokenReviewStatus) -> Result<Caller, AuthError> {
        caller_of(status, &TokenReviewConfig::default(), "cluster.local")
    }

    #[test]
    fn only_confirmed_audiences_are_accepted() {
        let mut review = workload("a", "sa-a");
        caller(&review).unwrap();
        review.audiences = Some(vec!["https://kubernetes.default.svc".to_owned()]);
        assert!(matches!(
            caller(&review),
            Err(AuthError::TokenRejected { .. })
        ));
        // An API server that is not audience-aware confirms nothing.
        review.audiences = None;
        assert!(matches!(
            caller(&review),
            Err(AuthError::TokenRejected { .. })
        ));
        // No configured audience: nothing can be confirmed.
        let config = TokenReviewConfig {
            audiences: Vec::new(),
            ..TokenReviewConfig::default()
        };
        let review = workload("a", "sa-a");
        assert!(caller_of(&review, &config, "cluster.local").is_err());
    }

    #[test]
    fn a_review_error_refuses_even_when_authenticated() {
        let mut review = workload("a", "sa-a");
        review.error = Some("token has been invalidated".to_owned());
        let error = caller(&review).unwrap_err();
        assert!(
            error.to_string().contains("token has been invalidated"),
            "{error}"
        );
    }

    #[test]
    fn service_accounts_need_the_username_and_the_group() {
        let good = "system:serviceaccount:a:sa-a";
        caller(&status(good, &[SERVICE_ACCOUNTS_GROUP], None)).unwrap();
        // Istio's test: the service-accounts group is required too.
        assert!(matches!(
            caller(&status(good, &["system:authenticated"], None)),
            Err(AuthError::NotServiceAccount { .. })
        ));
        for username in [
            "system:serviceaccount:a",
            "system:serviceaccount:a:b:c",
            "system:serviceaccount::sa",
            "system:serviceaccounts:a:sa",
            "system:node:worker-1",
            "",
        ] {
            assert!(
                matches!(
                    caller(&status(username, &[SERVICE_ACCOUNTS_GROUP], None)),
                    Err(AuthError::NotServiceAccount { .. })
                ),
                "{username:?} accepted"
            );
        }
    }

    #[test]
    fn a_node_proxy_needs_exactly_one_node_name() {
        let ztunnel = "system:serviceaccount:istio-system:ztunnel";
        let mut review = status(ztunnel, &[SERVICE_ACCOUNTS_GROUP], Some("n1"));
        assert_eq!(caller(&review), Ok(Caller::Node("n1".into())));
        for nodes in [vec![], vec![String::new()], vec!["n1".into(), "n2".into()]] {
            review.user.as_mut().unwrap().extra =
                Some(BTreeMap::from([(NODE_NAME_EXTRA.to_owned(), nodes)]));
            assert!(matches!(caller(&review), Err(AuthError::NoNodeName { .. })));
        }
    }

    #[test]
    fn service_account_names_are_validated() {
        let account: ServiceAccountName = "istio-system/ztunnel".parse().unwrap();
        assert_eq!(account.to_string(), DEFAULT_NODE_ACCOUNT);
        assert_eq!(
            TokenReviewConfig::default().trusted_node_accounts,
            [account]
        );
        "ns/sa.with.dots".parse::<ServiceAccountName>().unwrap();
        for input in [
            "ztunnel",
            "/ztunnel",
            "istio-system/",
            "a/b/c",
            "Istio/z",
            "-a/b",
            "a.b/c",
        ] {
            let error = input.parse::<ServiceAccountName>().unwrap_err();
            assert!(error.to_string().contains(input), "{error}");
        }
    }

    #[test]
    fn unreachable_or_failing_api_servers_are_retryable() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("boom", "Reason")
                    .with_code(code)
                    .boxed(),
            )
        };
        for code in [500, 503, 429] {
            assert!(matches!(
                review_error(api(code)),
                AuthError::ReviewUnavailable { .. }
            ));
        }
        for code in [401, 403, 404] {
            assert!(matches!(
                review_error(api(code)),
                AuthError::ReviewRefused { .. }
            ));
        }
        let refused = kube::Error::Service("connection refused".into());
        assert!(matches!(
            review_error(refused),
            AuthError::ReviewUnavailable { .. }
        ));
    }
}
