//! The conversion of a pushed `WaypointAuthorization`: every field set,
//! carried through protobuf bytes and converted, gives exactly the domain
//! values; each invalid value is rejected with an error that names the
//! policy, the rule and the field.

use http::HeaderName;
use prost::Message;
use proto::waypoint as pb;
use proto::waypoint::authorization_policy as pb_policy;

use super::*;

// === builders ===

fn resource(policies: Vec<pb::AuthorizationPolicy>) -> pb::WaypointAuthorization {
    pb::WaypointAuthorization {
        hostname: "catalog.shop.svc.cluster.local".into(),
        policies,
    }
}

fn pb_policy(
    name: &str,
    action: pb_policy::Action,
    rules: Vec<pb_policy::Rule>,
) -> pb::AuthorizationPolicy {
    pb::AuthorizationPolicy {
        namespace: "shop".into(),
        name: name.into(),
        action: action.into(),
        dry_run: false,
        rules,
    }
}

fn owned(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn with_source(source: pb_policy::Source) -> pb::WaypointAuthorization {
    with_rule(pb_policy::Rule {
        from: vec![source],
        ..Default::default()
    })
}

fn with_operation(operation: pb_policy::Operation) -> pb::WaypointAuthorization {
    with_rule(pb_policy::Rule {
        to: vec![operation],
        ..Default::default()
    })
}

fn with_condition(condition: pb_policy::Condition) -> pb::WaypointAuthorization {
    with_rule(pb_policy::Rule {
        when: vec![condition],
        ..Default::default()
    })
}

/// Policy `shop/p` whose rule 1 is `rule` (rule 0 is the empty rule, so
/// that locations show the index).
fn with_rule(rule: pb_policy::Rule) -> pb::WaypointAuthorization {
    resource(vec![pb_policy(
        "p",
        pb_policy::Action::Allow,
        vec![pb_policy::Rule::default(), rule],
    )])
}

fn convert(resource: pb::WaypointAuthorization) -> Result<ServicePolicies, ConvertError> {
    ServicePolicies::try_from(resource)
}

fn rejection(resource: pb::WaypointAuthorization) -> String {
    convert(resource).unwrap_err().to_string()
}

// === round trip ===

#[test]
fn every_field_survives_the_wire_and_converts() {
    let full = resource(vec![
        pb::AuthorizationPolicy {
            namespace: "shop".into(),
            name: "admin".into(),
            action: pb_policy::Action::Deny.into(),
            dry_run: true,
            rules: vec![pb_policy::Rule {
                from: vec![pb_policy::Source {
                    principals: owned(&["cluster.local/ns/shop/sa/web"]),
                    not_principals: owned(&["*/sa/cron"]),
                    namespaces: owned(&["shop*"]),
                    not_namespaces: owned(&["*-test"]),
                    ip_blocks: owned(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]),
                    not_ip_blocks: owned(&["10.9.1.1/16"]),
                }],
                to: vec![pb_policy::Operation {
                    hosts: owned(&["*.shop.svc.cluster.local"]),
                    not_hosts: owned(&["admin.*"]),
                    ports: vec![8080],
                    not_ports: vec![9090],
                    methods: owned(&["POST"]),
                    not_methods: owned(&["GET"]),
                    paths: owned(&["/admin*", "*.php", "*"]),
                    not_paths: owned(&["/admin/health"]),
                }],
                when: vec![
                    pb_policy::Condition {
                        key: "request.headers[X-Env]".into(),
                        values: owned(&["prod"]),
                        not_values: owned(&["*"]),
                    },
                    pb_policy::Condition {
                        key: "source.namespace".into(),
                        values: owned(&["shop"]),
                        not_values: Vec::new(),
                    },
                    pb_policy::Condition {
                        key: "source.principal".into(),
                        values: Vec::new(),
                        not_values: owned(&["*/sa/cron"]),
                    },
                ],
            }],
        },
        pb_policy("audit", pb_policy::Action::Audit, Vec::new()),
        pb_policy(
            "allow",
            pb_policy::Action::Allow,
            vec![pb_policy::Rule::default()],
        ),
    ]);
    let bytes = full.encode_to_vec();
    let decoded = pb::WaypointAuthorization::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, full);

    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let m = StringMatch::parse;
    let expected = ServicePolicies {
        hostname: "catalog.shop.svc.cluster.local".into(),
        policies: vec![
            Policy {
                name: PolicyName {
                    namespace: "shop".into(),
                    name: "admin".into(),
                },
                action: Action::Deny,
                dry_run: true,
                rules: vec![Rule {
                    from: vec![Source {
                        principals: vec![StringMatch::Exact("cluster.local/ns/shop/sa/web".into())],
                        not_principals: vec![StringMatch::Suffix("/sa/cron".into())],
                        namespaces: vec![StringMatch::Prefix("shop".into())],
                        not_namespaces: vec![StringMatch::Suffix("-test".into())],
                        ip_blocks: vec![net("10.0.0.0/8"), net("192.168.1.7/32"), net("fd00::/8")],
                        // Host bits are cleared, as Envoy's CIDR ranges do.
                        not_ip_blocks: vec![net("10.9.0.0/16")],
                    }],
                    to: vec![Operation {
                        hosts: vec![StringMatch::Suffix(".shop.svc.cluster.local".into())],
                        not_hosts: vec![StringMatch::Prefix("admin.".into())],
                        ports: vec![8080],
                        not_ports: vec![9090],
                        methods: vec![m("POST")],
                        not_methods: vec![m("GET")],
                        paths: vec![
                            StringMatch::Prefix("/admin".into()),
                            StringMatch::Suffix(".php".into()),
                            StringMatch::Presence,
                        ],
                        not_paths: vec![StringMatch::Exact("/admin/health".into())],
                    }],
                    when: vec![
                        Condition {
                            key: ConditionKey::RequestHeader(HeaderName::from_static("x-env")),
                            values: vec![m("prod")],
                            not_values: vec![StringMatch::Presence],
                        },
                        Condition {
                            key: ConditionKey::SourceNamespace,
                            values: vec![m("shop")],
                            not_values: Vec::new(),
                        },
                        Condition {
                            key: ConditionKey::SourcePrincipal,
                            values: Vec::new(),
                            not_values: vec![m("*/sa/cron")],
                        },
                    ],
                }],
            },
            Policy {
                name: PolicyName {
                    namespace: "shop".into(),
                    name: "audit".into(),
                },
                action: Action::Audit,
                dry_run: false,
                rules: Vec::new(),
            },
            Policy {
                name: PolicyName {
                    namespace: "shop".into(),
                    name: "allow".into(),
                },
                action: Action::Allow,
                dry_run: false,
                rules: vec![Rule::default()],
            },
        ],
    };
    assert_eq!(convert(decoded).unwrap(), expected);
}

#[test]
fn an_empty_resource_has_no_policies() {
    let converted = convert(resource(Vec::new())).unwrap();
    assert!(converted.policies.is_empty());
    // The default action on the wire is ALLOW, as in Istio.
    let policy = pb::AuthorizationPolicy {
        namespace: "shop".into(),
        name: "p".into(),
        ..Default::default()
    };
    let converted = convert(resource(vec![policy])).unwrap();
    assert_eq!(converted.policies[0].action, Action::Allow);
}

// === rejections ===

#[test]
fn the_hostname_must_be_a_service_hostname() {
    let mut r = resource(Vec::new());
    r.hostname = String::new();
    assert_eq!(rejection(r.clone()), "the service hostname is not set");
    r.hostname = "Catalog:8080".into();
    assert!(rejection(r).starts_with("hostname `Catalog:8080` is not a valid host name"));
}

#[test]
fn a_policy_needs_a_namespace_and_a_name() {
    let mut p = pb_policy("p", pb_policy::Action::Allow, Vec::new());
    p.namespace = String::new();
    assert_eq!(
        rejection(resource(vec![p])),
        "AuthorizationPolicy /p: the policy namespace is not set"
    );
    let p = pb_policy("", pb_policy::Action::Allow, Vec::new());
    assert_eq!(
        rejection(resource(vec![p])),
        "AuthorizationPolicy shop/: the policy name is not set"
    );
}

#[test]
fn custom_and_unknown_actions_are_refused() {
    let p = pb_policy(
        "ext",
        pb_policy::Action::Custom,
        vec![pb_policy::Rule::default()],
    );
    assert_eq!(
        rejection(resource(vec![p])),
        "AuthorizationPolicy shop/ext: action CUSTOM (external authorization) is not supported \
         by the waypoint: use ALLOW, DENY or AUDIT"
    );
    let mut p = pb_policy("odd", pb_policy::Action::Allow, Vec::new());
    p.action = 7;
    assert_eq!(
        rejection(resource(vec![p])),
        "AuthorizationPolicy shop/odd: action 7 is not one of ALLOW (0), DENY (1), AUDIT (2)"
    );
}

#[test]
fn empty_items_are_refused() {
    assert_eq!(
        rejection(with_source(pb_policy::Source::default())),
        "AuthorizationPolicy shop/p rule 1 from 0: `source` sets no field: set at least one, or \
         remove the entry"
    );
    assert_eq!(
        rejection(with_operation(pb_policy::Operation::default())),
        "AuthorizationPolicy shop/p rule 1 to 0: `operation` sets no field: set at least one, or \
         remove the entry"
    );
    let condition = pb_policy::Condition {
        key: "source.namespace".into(),
        ..Default::default()
    };
    assert_eq!(
        rejection(with_condition(condition)),
        "AuthorizationPolicy shop/p rule 1 when 0: condition `source.namespace` sets neither \
         values nor not_values"
    );
}

#[test]
fn empty_values_are_refused_wherever_they_are() {
    let source = pb_policy::Source {
        principals: owned(&["cluster.local/ns/shop/sa/web", ""]),
        ..Default::default()
    };
    assert_eq!(
        rejection(with_source(source)),
        "AuthorizationPolicy shop/p rule 1 from 0 source.principals 1: the value is empty, which \
         matches nothing: remove it, or write `*` for any value"
    );
    let operation = pb_policy::Operation {
        not_methods: owned(&[""]),
        ..Default::default()
    };
    assert!(rejection(with_operation(operation)).starts_with(
        "AuthorizationPolicy shop/p rule 1 to 0 operation.not_methods 0: the value is empty"
    ));
    let condition = pb_policy::Condition {
        key: "source.principal".into(),
        values: Vec::new(),
        not_values: owned(&["a", ""]),
    };
    assert!(
        rejection(with_condition(condition)).starts_with(
            "AuthorizationPolicy shop/p rule 1 when 0 not_values 1: the value is empty"
        )
    );
}

#[test]
fn unknown_keys_and_bad_header_names_are_refused() {
    let condition = |key: &str| pb_policy::Condition {
        key: key.into(),
        values: owned(&["x"]),
        not_values: Vec::new(),
    };
    assert_eq!(
        rejection(with_condition(condition("request.auth.claims[iss]"))),
        "AuthorizationPolicy shop/p rule 1 when 0 key: key `request.auth.claims[iss]` is not one \
         of `request.headers[<name>]`, `source.namespace`, `source.principal`"
    );
    assert!(
        rejection(with_condition(condition("request.headers[x-env")))
            .contains("key `request.headers[x-env` is not one of")
    );
    assert_eq!(
        rejection(with_condition(condition("request.headers[bad name]"))),
        "AuthorizationPolicy shop/p rule 1 when 0 key: header name `bad name` is not a valid \
         HTTP header name"
    );
}

#[test]
fn bad_ip_blocks_are_refused() {
    for block in ["10.0.0/8", "10.0.0.0/33", "host.example", "10.0.0.1 "] {
        let source = pb_policy::Source {
            not_ip_blocks: owned(&[block]),
            ..Default::default()
        };
        assert_eq!(
            rejection(with_source(source)),
            format!(
                "AuthorizationPolicy shop/p rule 1 from 0 source.not_ip_blocks 0: ip block \
                 `{block}` is neither an address (`10.0.0.1`) nor a CIDR block (`10.0.0.0/8`)"
            )
        );
    }
}

#[test]
fn bad_ports_are_refused() {
    for port in [0, 65536] {
        let operation = pb_policy::Operation {
            ports: vec![8080, port],
            ..Default::default()
        };
        assert_eq!(
            rejection(with_operation(operation)),
            format!(
                "AuthorizationPolicy shop/p rule 1 to 0 operation.ports 1: port {port} is not \
                 from 1 to 65535"
            )
        );
    }
}

#[test]
fn paths_that_could_never_match_are_refused() {
    let with_path = |path: &str| {
        with_operation(pb_policy::Operation {
            not_paths: owned(&[path]),
            ..Default::default()
        })
    };
    assert_eq!(
        rejection(with_path("admin")),
        "AuthorizationPolicy shop/p rule 1 to 0 operation.not_paths 0: path `admin` starts with \
         neither `/` nor `*`, so it would never match a request's path"
    );
    assert!(rejection(with_path("admin*")).contains("path `admin*` starts with neither"));
    assert_eq!(
        rejection(with_path("/api/{*}/items")),
        "AuthorizationPolicy shop/p rule 1 to 0 operation.not_paths 0: path `/api/{*}/items` is \
         a path template (`{*}`, `{**}`), which is not supported"
    );
    for path in ["/admin", "/admin*", "*.php", "*"] {
        assert!(convert(with_path(path)).is_ok(), "{path}");
    }
}

#[test]
fn the_first_problem_names_its_policy() {
    let good = pb_policy(
        "good",
        pb_policy::Action::Allow,
        vec![pb_policy::Rule::default()],
    );
    let bad = pb_policy("bad", pb_policy::Action::Custom, Vec::new());
    let error = convert(resource(vec![good, bad])).unwrap_err();
    assert_eq!(error.location, "AuthorizationPolicy shop/bad");
    assert_eq!(error.problem, Problem::CustomAction);
}
