//! SPIFFE workload identities as Istio shapes them:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict because an identity is a security decision: anything
//! that is not exactly this shape is rejected with the reason.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

const SCHEME: &str = "spiffe://";

/// A workload identity. Cheap to clone: the parts are shared strings because
/// identities are copied into every connection's state and log line.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

/// Why a string is not a valid SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    MissingScheme(String),
    #[error("identity {0:?} has an empty trust domain")]
    EmptyTrustDomain(String),
    #[error(
        "identity {id:?} has an invalid trust domain {trust_domain:?}: \
         only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    InvalidTrustDomain { id: String, trust_domain: String },
    #[error("identity {0:?} must have the path /ns/<namespace>/sa/<service-account>")]
    InvalidPath(String),
    #[error(
        "identity {id:?} has an invalid path segment {segment:?}: \
         segments must be non-empty and use only letters, digits, '.', '-' and '_'"
    )]
    InvalidSegment { id: String, segment: String },
}

// === impl Identity ===

impl Identity {
    /// Builds an identity from its parts, validating each of them.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let rest = id
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::MissingScheme(id.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if trust_domain.is_empty() {
            return Err(IdentityError::EmptyTrustDomain(id.to_owned()));
        }
        // SPIFFE: trust domains are lowercase letters, digits, '.', '-', '_'.
        let valid_td = trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
        if !valid_td {
            return Err(IdentityError::InvalidTrustDomain {
                id: id.to_owned(),
                trust_domain: trust_domain.to_owned(),
            });
        }
        let segments: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = segments[..] else {
            return Err(IdentityError::InvalidPath(id.to_owned()));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(IdentityError::InvalidPath(id.to_owned()));
        }
        for segment in [namespace, service_account] {
            let valid = !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !valid {
                return Err(IdentityError::InvalidSegment {
                    id: id.to_owned(),
                    segment: segment.to_owned(),
                });
            }
        }
        Ok(Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_a_valid_identity() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            Identity::new("cluster.local", "default", "bookinfo-productpage").unwrap(),
            id
        );
    }

    #[test]
    fn accepts_dots_dashes_and_underscores() {
        let id: Identity = "spiffe://my-corp_td.example/ns/kube-system/sa/svc.acct_1"
            .parse()
            .unwrap();
        assert_eq!(id.service_account(), "svc.acct_1");
    }

    #[test]
    fn rejects_each_kind_of_malformed_identity() {
        type IsExpected = fn(&IdentityError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::MissingScheme(_))
            }),
            ("https://cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::MissingScheme(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, IdentityError::EmptyTrustDomain(_))
            }),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::InvalidTrustDomain { .. })
            }),
            ("spiffe://td:8080/ns/a/sa/b", |e| {
                matches!(e, IdentityError::InvalidTrustDomain { .. })
            }),
            ("spiffe://cluster.local", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://cluster.local/ns/a", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, IdentityError::InvalidPath(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
            ("spiffe://cluster.local/ns/a b/sa/c", |e| {
                matches!(e, IdentityError::InvalidSegment { .. })
            }),
        ];
        for (input, is_expected) in cases {
            let err = input.parse::<Identity>().expect_err(input);
            assert!(is_expected(&err), "{input}: unexpected error {err:?}");
            assert!(
                err.to_string().contains(input),
                "error must quote the input: {err}"
            );
        }
    }
}
