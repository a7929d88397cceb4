//! YAML documents to objects: errors name the document and what is wrong,
//! unknown kinds are reported, and the Istio / Gateway API kinds read from
//! ordinary manifests.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use istiod_lite::model::{
    KubeObject, MtlsMode, ObjectKind, ParseError, PathMatchType, PolicyAction, parse_documents,
};

#[test]
fn errors_name_document_kind_and_name() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/translate_bad.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let results = parse_documents(&yaml);
    assert_eq!(
        results.len(),
        6,
        "the trailing empty document is skipped: {results:?}"
    );

    assert!(matches!(&results[0], Ok(KubeObject::Namespace(_))));
    match &results[1] {
        Err(ParseError::UnknownKind {
            index,
            api_version,
            kind,
            name,
        }) => {
            assert_eq!(
                (*index, api_version.as_str(), kind.as_str(), name.as_str()),
                (1, "v1", "ConfigMap", "settings")
            );
        }
        other => panic!("expected an unknown kind: {other:?}"),
    }
    let message = results[1].as_ref().unwrap_err().to_string();
    assert!(
        message.contains("document 1") && message.contains("not a kind istiod-lite reads"),
        "{message}"
    );

    match &results[2] {
        Err(ParseError::Invalid {
            index: 2,
            kind: ObjectKind::Service,
            name,
            message,
        }) => {
            assert_eq!(name, "broken-svc");
            assert!(message.contains("sequence"), "{message}");
        }
        other => panic!("expected an invalid Service: {other:?}"),
    }
    let message = results[3].as_ref().unwrap_err().to_string();
    assert!(
        message.starts_with("document 3: AuthorizationPolicy \"odd-action\" is invalid")
            && message.contains("MAYBE"),
        "{message}"
    );
    let message = results[4].as_ref().unwrap_err().to_string();
    assert!(
        message.contains("document 4: Pod") && message.contains("metadata.name is missing"),
        "{message}"
    );
    assert!(matches!(
        &results[5],
        Err(ParseError::NotAnObject { index: 5, .. })
    ));
}

#[test]
fn syntax_error_is_reported_with_its_document() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: [unclosed\n";
    let results = parse_documents(yaml);
    assert!(matches!(&results[0], Ok(KubeObject::Namespace(_))));
    match results.last() {
        Some(Err(ParseError::Yaml { index: 1, .. })) => {}
        other => panic!("expected a YAML error in document 1: {other:?}"),
    }
}

#[test]
fn custom_kinds_parse_from_ordinary_manifests() {
    let yaml = r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny
  namespace: apps
spec:
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
spec:
  selector:
    matchLabels:
      app: db
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: PERMISSIVE
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: apps
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  hostnames: ["reviews.apps.svc.cluster.local"]
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /api
      headers:
      - name: x-user
        value: jason
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-route
          value: v2
    backendRefs:
    - name: reviews-v2
      port: 9080
      weight: 90
    - name: reviews-v1
      port: 9080
      weight: 10
    timeouts:
      request: 10s
      backendRequest: 2s
    retry:
      attempts: 3
      codes: [503]
      backoff: 100ms
"#;
    let objects: Vec<KubeObject> = parse_documents(yaml)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let KubeObject::AuthorizationPolicy(policy) = &objects[0] else {
        panic!("{:?}", objects[0]);
    };
    assert_eq!(policy.spec.action, PolicyAction::Deny);
    assert_eq!(
        policy.spec.rules[0].from[0].source.not_principals,
        vec!["*"]
    );

    let KubeObject::PeerAuthentication(pa) = &objects[1] else {
        panic!("{:?}", objects[1]);
    };
    assert_eq!(
        objects[1].key().namespace,
        "default",
        "kubectl's default namespace"
    );
    assert_eq!(
        pa.spec.mtls.as_ref().map(|m| m.mode),
        Some(MtlsMode::Strict)
    );
    assert_eq!(pa.spec.port_level_mtls[&8080].mode, MtlsMode::Permissive);

    let KubeObject::HttpRoute(route) = &objects[2] else {
        panic!("{:?}", objects[2]);
    };
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        (parent.kind.as_deref(), parent.name.as_str(), parent.port),
        (Some("Service"), "reviews", Some(9080))
    );
    let rule = &route.spec.rules[0];
    let path = rule.matches[0].path.as_ref().unwrap();
    assert_eq!(
        (path.match_type, path.value.as_str()),
        (PathMatchType::PathPrefix, "/api")
    );
    assert_eq!(rule.matches[0].headers[0].name, "x-user");
    assert_eq!(
        rule.filters[0]
            .request_header_modifier
            .as_ref()
            .unwrap()
            .set[0]
            .value,
        "v2"
    );
    assert_eq!(rule.backend_refs[0].backend.name, "reviews-v2");
    assert_eq!(rule.backend_refs[0].weight, Some(90));
    assert_eq!(
        rule.timeouts.as_ref().unwrap().backend_request.as_deref(),
        Some("2s")
    );
    assert_eq!(rule.retry.as_ref().unwrap().codes, vec![503]);
}
