//! Multi-document YAML to [`KubeObject`]s.
//!
//! Each document is parsed on its own so that one bad document costs only
//! itself: the caller gets one `Result` per document, in order, and an error
//! names the document (zero-based index, kind, name) and what is wrong.
//! Empty documents (a trailing `---`, comments only) are skipped: they are
//! ordinary in hand-written files and carry nothing.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::{KubeObject, ObjectKind};

/// Why a document could not become an object.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The document is not YAML.
    #[error("document {index}: not valid YAML: {message}")]
    Yaml { index: usize, message: String },
    /// The document is YAML but not a Kubernetes object.
    #[error("document {index}: not a Kubernetes object: {message}")]
    NotAnObject { index: usize, message: String },
    /// `apiVersion`/`kind` name a kind we do not read.
    #[error(
        "document {index}: {kind} {name:?} ({api_version}) is not a kind istiod-lite reads; \
         expected Namespace, Pod, Service (v1), AuthorizationPolicy or PeerAuthentication \
         (security.istio.io/v1), VirtualService or DestinationRule (networking.istio.io/v1), Gateway or HTTPRoute \
         (gateway.networking.k8s.io/v1)"
    )]
    UnknownKind {
        index: usize,
        api_version: String,
        kind: String,
        name: String,
    },
    /// A known kind whose fields do not fit its schema.
    #[error("document {index}: {kind} {name:?} is invalid: {message}")]
    Invalid {
        index: usize,
        kind: ObjectKind,
        name: String,
        message: String,
    },
}

impl ParseError {
    /// Zero-based index of the document in its file.
    pub fn document_index(&self) -> usize {
        match self {
            Self::Yaml { index, .. }
            | Self::NotAnObject { index, .. }
            | Self::UnknownKind { index, .. }
            | Self::Invalid { index, .. } => *index,
        }
    }
}

/// Parses every document of `yaml`, one result per non-empty document.
///
/// A namespaced object without `metadata.namespace` is placed in `default`,
/// as `kubectl apply` would.
pub fn parse_documents(yaml: &str) -> Vec<Result<KubeObject, ParseError>> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(error) => {
                out.push(Err(ParseError::Yaml {
                    index,
                    message: error.to_string(),
                }));
                // A syntax error leaves the stream unusable after this point.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        out.push(parse_object(index, value));
    }
    out
}

/// The group/version/kind header of a document, read before the body so
/// that errors can say what the document was meant to be.
struct TypeHeader {
    api_version: String,
    kind: String,
    name: String,
}

fn parse_object(index: usize, mut value: Value) -> Result<KubeObject, ParseError> {
    let header = read_header(index, &value)?;
    let (group, _version) = match header.api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", header.api_version.as_str()),
    };
    let kind = match (group, header.kind.as_str()) {
        ("", "Namespace") => ObjectKind::Namespace,
        ("", "Pod") => ObjectKind::Pod,
        ("", "Service") => ObjectKind::Service,
        ("security.istio.io", "AuthorizationPolicy") => ObjectKind::AuthorizationPolicy,
        ("security.istio.io", "PeerAuthentication") => ObjectKind::PeerAuthentication,
        ("gateway.networking.k8s.io", "Gateway") => ObjectKind::Gateway,
        ("gateway.networking.k8s.io", "HTTPRoute") => ObjectKind::HttpRoute,
        ("networking.istio.io", "VirtualService") => ObjectKind::VirtualService,
        ("networking.istio.io", "DestinationRule") => ObjectKind::DestinationRule,
        _ => {
            return Err(ParseError::UnknownKind {
                index,
                api_version: header.api_version,
                kind: header.kind,
                name: header.name,
            });
        }
    };
    if header.name.is_empty() {
        return Err(invalid(
            index,
            kind,
            &header.name,
            "metadata.name is missing",
        ));
    }
    if let Some(map) = value.as_mapping_mut() {
        // Older API versions of these kinds (v1beta1, v1alpha3) share the v1
        // schema; we store everything as v1.
        let canonical = match kind {
            ObjectKind::Namespace | ObjectKind::Pod | ObjectKind::Service => "v1",
            ObjectKind::AuthorizationPolicy | ObjectKind::PeerAuthentication => {
                "security.istio.io/v1"
            }
            ObjectKind::Gateway | ObjectKind::HttpRoute => "gateway.networking.k8s.io/v1",
            ObjectKind::VirtualService | ObjectKind::DestinationRule => "networking.istio.io/v1",
        };
        map.insert("apiVersion".into(), canonical.into());
        if kind.is_namespaced()
            && let Some(meta) = map.get_mut("metadata").and_then(Value::as_mapping_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), "default".into());
        }
    }
    let name = header.name;
    let object = match kind {
        ObjectKind::Namespace => KubeObject::Namespace(decode(index, kind, &name, value)?),
        ObjectKind::Pod => KubeObject::Pod(decode(index, kind, &name, value)?),
        ObjectKind::Service => KubeObject::Service(decode(index, kind, &name, value)?),
        ObjectKind::AuthorizationPolicy => {
            KubeObject::AuthorizationPolicy(decode(index, kind, &name, value)?)
        }
        ObjectKind::PeerAuthentication => {
            KubeObject::PeerAuthentication(decode(index, kind, &name, value)?)
        }
        ObjectKind::Gateway => KubeObject::Gateway(decode(index, kind, &name, value)?),
        ObjectKind::HttpRoute => KubeObject::HttpRoute(decode(index, kind, &name, value)?),
        ObjectKind::VirtualService => {
            KubeObject::VirtualService(decode(index, kind, &name, value)?)
        }
        ObjectKind::DestinationRule => {
            KubeObject::DestinationRule(decode(index, kind, &name, value)?)
        }
    };
    Ok(object)
}

fn read_header(index: usize, value: &Value) -> Result<TypeHeader, ParseError> {
    let Some(map) = value.as_mapping() else {
        return Err(ParseError::NotAnObject {
            index,
            message: "expected a mapping with apiVersion, kind and metadata".to_string(),
        });
    };
    let field = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_string);
    let Some(api_version) = field("apiVersion") else {
        return Err(ParseError::NotAnObject {
            index,
            message: "apiVersion is missing or not a string".to_string(),
        });
    };
    let Some(kind) = field("kind") else {
        return Err(ParseError::NotAnObject {
            index,
            message: "kind is missing or not a string".to_string(),
        });
    };
    let name = map
        .get("metadata")
        .and_then(|meta| meta.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(TypeHeader {
        api_version,
        kind,
        name,
    })
}

fn decode<T: DeserializeOwned>(
    index: usize,
    kind: ObjectKind,
    name: &str,
    value: Value,
) -> Result<Box<T>, ParseError> {
    serde_yaml_ng::from_value::<T>(value)
        .map(Box::new)
        .map_err(|error| invalid(index, kind, name, &error.to_string()))
}

fn invalid(index: usize, kind: ObjectKind, name: &str, message: &str) -> ParseError {
    ParseError::Invalid {
        index,
        kind,
        name: name.to_string(),
        message: message.to_string(),
    }
}
