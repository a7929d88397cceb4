//! Wire compatibility with the upstream definitions, checked without trusting
//! our own `.proto` files: each test writes the protobuf bytes by hand from
//! the upstream field numbers and wire types (cited next to each test), then
//! asserts that (a) decoding them gives the expected values and (b) encoding
//! the expected message gives the very same bytes. prost writes fields in
//! ascending field-number order and our maps are ordered, so the bytes below
//! are written in that canonical order.

use std::collections::BTreeMap;
use std::fmt::Debug;

use prost::{Message, Name};
use prost_types::value::Kind;
use prost_types::{Any, Duration, Struct, Value};
use proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_AUTHORIZATION_TYPE_URL,
    WAYPOINT_ROUTES_TYPE_URL, ca, core, discovery, rpc, security, waypoint, workload,
};

// === Hand-written protobuf encoder ===

/// Wire type of varint fields (int32, int64, uint32, bool, enum).
const VARINT: u64 = 0;
/// Wire type of length-delimited fields (string, bytes, messages, packed).
const LEN: u64 = 2;

/// Builds protobuf bytes field by field, in the order the calls are made.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn new() -> Self {
        Self::default()
    }

    fn varint(mut self, field: u64, value: u64) -> Self {
        push_varint(&mut self.0, field << 3 | VARINT);
        push_varint(&mut self.0, value);
        self
    }

    fn bytes(mut self, field: u64, value: &[u8]) -> Self {
        push_varint(&mut self.0, field << 3 | LEN);
        push_varint(&mut self.0, value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    fn string(self, field: u64, value: &str) -> Self {
        self.bytes(field, value.as_bytes())
    }

    fn message(self, field: u64, inner: Wire) -> Self {
        self.bytes(field, &inner.0)
    }

    /// A packed repeated varint field (the proto3 default for scalars).
    fn packed(self, field: u64, values: &[u64]) -> Self {
        let mut body = Vec::new();
        for value in values {
            push_varint(&mut body, *value);
        }
        self.bytes(field, &body)
    }

    /// One entry of a `map<string, Message>`: a message with key = 1, value = 2.
    fn map_entry(self, field: u64, key: &str, value: Wire) -> Self {
        self.message(field, Wire::new().string(1, key).message(2, value))
    }

    /// One entry of a `map<string, string>`.
    fn string_map_entry(self, field: u64, key: &str, value: &str) -> Self {
        self.message(field, Wire::new().string(1, key).string(2, value))
    }

    fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn push_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// `google.protobuf.Struct` holding string values
/// (google/protobuf/struct.proto: Struct.fields = 1, Value.string_value = 3).
fn struct_wire(entries: &[(&str, &str)]) -> Wire {
    entries.iter().fold(Wire::new(), |wire, (key, value)| {
        wire.map_entry(1, key, Wire::new().string(3, value))
    })
}

fn struct_value(entries: &[(&str, &str)]) -> Struct {
    let fields = entries
        .iter()
        .map(|(key, value)| {
            let value = Value {
                kind: Some(Kind::StringValue((*value).to_owned())),
            };
            ((*key).to_owned(), value)
        })
        .collect();
    Struct { fields }
}

/// Decodes `wire` as `M` and compares with `expected`, then checks that
/// encoding `expected` reproduces `wire` byte for byte.
#[track_caller]
fn assert_wire<M: Message + Default + PartialEq + Debug>(wire: &[u8], expected: &M) {
    let decoded = match M::decode(wire) {
        Ok(decoded) => decoded,
        Err(error) => panic!("upstream bytes must decode: {error}"),
    };
    assert_eq!(&decoded, expected, "decoded value differs");
    assert_eq!(
        expected.encode_to_vec(),
        wire,
        "our encoding differs from the upstream layout"
    );
}

#[test]
fn encoder_matches_the_protobuf_spec_examples() {
    // protobuf.dev/programming-guides/encoding: field 1 = 150 is 08 96 01,
    // field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
    assert_eq!(Wire::new().varint(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
    assert_eq!(
        Wire::new().string(2, "testing").into_bytes(),
        [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]
    );
    // Field numbers above 15 need a two-byte tag: (20 << 3 | 2) = 162.
    assert_eq!(Wire::new().string(20, "").into_bytes(), [0xa2, 0x01, 0x00]);
}

// === istio.workload ===

// Upstream: istio/ztunnel proto/workload.proto.
// GatewayAddress: hostname = 1 (NamespacedHostname), address = 2 (NetworkAddress),
//   hbone_mtls_port = 3. NetworkAddress: network = 1, address = 2.
// NamespacedHostname: namespace = 1, hostname = 2.
fn waypoint_by_address_wire() -> Wire {
    Wire::new()
        .message(2, Wire::new().string(1, "net-a").bytes(2, &[10, 0, 0, 9]))
        .varint(3, 15008)
}

fn waypoint_by_address() -> workload::GatewayAddress {
    workload::GatewayAddress {
        destination: Some(workload::gateway_address::Destination::Address(
            workload::NetworkAddress {
                network: "net-a".into(),
                address: vec![10, 0, 0, 9],
            },
        )),
        hbone_mtls_port: 15008,
    }
}

// Upstream: istio/ztunnel proto/workload.proto, message Workload and friends.
// Workload: name 1, namespace 2, addresses 3 (repeated bytes), network 4,
//   tunnel_protocol 5, trust_domain 6, service_account 7, waypoint 8, node 9,
//   canonical_name 10, canonical_revision 11, workload_type 12, workload_name 13,
//   native_tunnel 14, (15 reserved), authorization_policies 16, status 17,
//   cluster_id 18, network_gateway 19, uid 20, hostname 21,
//   services 22 (map<string, PortList>), application_tunnel 23, locality 24,
//   network_mode 25, extensions 26, capacity 27 (google.protobuf.UInt32Value).
// Enums: TunnelProtocol HBONE = 1; WorkloadType POD = 2; WorkloadStatus
//   UNHEALTHY = 1; NetworkMode HOST_NETWORK = 1; ApplicationTunnel.Protocol PROXY = 1.
// PortList: ports 1. Port: service_port 1, target_port 2.
// ApplicationTunnel: protocol 1, port 2. Locality: region 1, zone 2, subzone 3.
// Extension: name 1, config 2 (Any: type_url 1, value 2).
fn workload_wire() -> Wire {
    let ipv6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07];
    let east_west = Wire::new()
        .string(1, "istio-system")
        .string(2, "eastwest.istio-system.svc");
    let details_ports = Wire::new().message(1, Wire::new().varint(1, 9080));
    let reviews_ports = Wire::new().message(1, Wire::new().varint(1, 9080).varint(2, 8080));
    let locality = Wire::new()
        .string(1, "eu-west")
        .string(2, "eu-west-1a")
        .string(3, "rack-4");
    let any = Wire::new()
        .string(1, "type.googleapis.com/x.Y")
        .bytes(2, &[0x08, 0x01]);
    Wire::new()
        .string(1, "reviews-v1-7d9f") // name
        .string(2, "bookinfo") // namespace
        .bytes(3, &[10, 1, 2, 7]) // addresses[0], IPv4
        .bytes(3, &ipv6) // addresses[1], IPv6
        .string(4, "net-a") // network
        .varint(5, 1) // tunnel_protocol = HBONE
        .string(6, "cluster.local") // trust_domain
        .string(7, "bookinfo-reviews") // service_account
        .message(8, waypoint_by_address_wire()) // waypoint
        .string(9, "node-1") // node
        .string(10, "reviews") // canonical_name
        .string(11, "v1") // canonical_revision
        .varint(12, 2) // workload_type = POD
        .string(13, "reviews-v1") // workload_name
        .varint(14, 1) // native_tunnel = true
        .string(16, "bookinfo/deny-all") // authorization_policies
        .varint(17, 1) // status = UNHEALTHY
        .string(18, "cluster-1") // cluster_id
        .message(19, Wire::new().message(1, east_west)) // network_gateway, by hostname
        .string(20, "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f") // uid
        .string(21, "reviews.example.com") // hostname
        .map_entry(
            22,
            "bookinfo/details.bookinfo.svc.cluster.local",
            details_ports,
        ) // services
        .map_entry(
            22,
            "bookinfo/reviews.bookinfo.svc.cluster.local",
            reviews_ports,
        ) // services
        .message(23, Wire::new().varint(1, 1).varint(2, 15088)) // application_tunnel = PROXY
        .message(24, locality) // locality
        .varint(25, 1) // network_mode = HOST_NETWORK
        .message(26, Wire::new().string(1, "ext").message(2, any)) // extensions
        .message(27, Wire::new().varint(1, 5)) // capacity
}

fn workload_value() -> workload::Workload {
    let port = |service_port, target_port| workload::Port {
        service_port,
        target_port,
    };
    let services = BTreeMap::from([
        (
            "bookinfo/details.bookinfo.svc.cluster.local".to_owned(),
            workload::PortList {
                ports: vec![port(9080, 0)],
            },
        ),
        (
            "bookinfo/reviews.bookinfo.svc.cluster.local".to_owned(),
            workload::PortList {
                ports: vec![port(9080, 8080)],
            },
        ),
    ]);
    workload::Workload {
        name: "reviews-v1-7d9f".into(),
        namespace: "bookinfo".into(),
        addresses: vec![
            vec![10, 1, 2, 7],
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07],
        ],
        network: "net-a".into(),
        tunnel_protocol: workload::TunnelProtocol::Hbone.into(),
        trust_domain: "cluster.local".into(),
        service_account: "bookinfo-reviews".into(),
        waypoint: Some(waypoint_by_address()),
        node: "node-1".into(),
        canonical_name: "reviews".into(),
        canonical_revision: "v1".into(),
        workload_type: workload::WorkloadType::Pod.into(),
        workload_name: "reviews-v1".into(),
        native_tunnel: true,
        authorization_policies: vec!["bookinfo/deny-all".into()],
        status: workload::WorkloadStatus::Unhealthy.into(),
        cluster_id: "cluster-1".into(),
        network_gateway: Some(workload::GatewayAddress {
            destination: Some(workload::gateway_address::Destination::Hostname(
                workload::NamespacedHostname {
                    namespace: "istio-system".into(),
                    hostname: "eastwest.istio-system.svc".into(),
                },
            )),
            hbone_mtls_port: 0,
        }),
        uid: "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f".into(),
        hostname: "reviews.example.com".into(),
        services,
        application_tunnel: Some(workload::ApplicationTunnel {
            protocol: workload::application_tunnel::Protocol::Proxy.into(),
            port: 15088,
        }),
        locality: Some(workload::Locality {
            region: "eu-west".into(),
            zone: "eu-west-1a".into(),
            subzone: "rack-4".into(),
        }),
        network_mode: workload::NetworkMode::HostNetwork.into(),
        extensions: vec![workload::Extension {
            name: "ext".into(),
            config: Some(Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![0x08, 0x01],
            }),
        }],
        capacity: Some(5),
    }
}

#[test]
fn workload_matches_upstream_wire_format() {
    assert_wire(&workload_wire().into_bytes(), &workload_value());
}

// Upstream: istio/ztunnel proto/workload.proto, message Service and LoadBalancing.
// Service: name 1, namespace 2, hostname 3, addresses 4 (NetworkAddress), ports 5,
//   subject_alt_names 6, waypoint 7 (GatewayAddress), load_balancing 8,
//   ip_families 9, extensions 10, canonical 11.
// LoadBalancing: routing_preference 1 (repeated Scope, packed), mode 2,
//   health_policy 3, dns_connect_strategy 4. Scope REGION = 1, ZONE = 2,
//   NETWORK = 6; Mode FAILOVER = 2; HealthPolicy ALLOW_ALL = 1;
//   DnsConnectStrategy FIRST_HEALTHY_RACE = 1. IPFamilies DUAL = 3.
#[test]
fn service_matches_upstream_wire_format() {
    let ipv6_vip = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
    let waypoint_host = Wire::new()
        .string(1, "bookinfo")
        .string(2, "waypoint.bookinfo.svc");
    let load_balancing = Wire::new()
        .packed(1, &[6, 1, 2])
        .varint(2, 2)
        .varint(3, 1)
        .varint(4, 1);
    let wire = Wire::new()
        .string(1, "reviews") // name
        .string(2, "bookinfo") // namespace
        .string(3, "reviews.bookinfo.svc.cluster.local") // hostname
        .message(4, Wire::new().string(1, "net-a").bytes(2, &[10, 96, 0, 20])) // addresses[0]
        .message(4, Wire::new().string(1, "net-a").bytes(2, &ipv6_vip)) // addresses[1]
        .message(5, Wire::new().varint(1, 9080).varint(2, 8080)) // ports[0]
        .message(5, Wire::new().varint(1, 9090)) // ports[1]
        .string(6, "spiffe://cluster.local/ns/bookinfo/sa/reviews") // subject_alt_names
        .message(7, Wire::new().message(1, waypoint_host).varint(3, 15008)) // waypoint
        .message(8, load_balancing) // load_balancing: [NETWORK, REGION, ZONE], FAILOVER, ALLOW_ALL, FIRST_HEALTHY_RACE
        .varint(9, 3) // ip_families = DUAL
        .varint(11, 1) // canonical
        .into_bytes();

    use workload::load_balancing::{DnsConnectStrategy, HealthPolicy, Mode, Scope};
    let expected = workload::Service {
        name: "reviews".into(),
        namespace: "bookinfo".into(),
        hostname: "reviews.bookinfo.svc.cluster.local".into(),
        addresses: vec![
            workload::NetworkAddress {
                network: "net-a".into(),
                address: vec![10, 96, 0, 20],
            },
            workload::NetworkAddress {
                network: "net-a".into(),
                address: ipv6_vip.to_vec(),
            },
        ],
        ports: vec![
            workload::Port {
                service_port: 9080,
                target_port: 8080,
            },
            workload::Port {
                service_port: 9090,
                target_port: 0,
            },
        ],
        subject_alt_names: vec!["spiffe://cluster.local/ns/bookinfo/sa/reviews".into()],
        waypoint: Some(workload::GatewayAddress {
            destination: Some(workload::gateway_address::Destination::Hostname(
                workload::NamespacedHostname {
                    namespace: "bookinfo".into(),
                    hostname: "waypoint.bookinfo.svc".into(),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        load_balancing: Some(workload::LoadBalancing {
            routing_preference: vec![
                Scope::Network.into(),
                Scope::Region.into(),
                Scope::Zone.into(),
            ],
            mode: Mode::Failover.into(),
            health_policy: HealthPolicy::AllowAll.into(),
            dns_connect_strategy: DnsConnectStrategy::FirstHealthyRace.into(),
        }),
        ip_families: workload::IpFamilies::Dual.into(),
        extensions: vec![],
        canonical: true,
    };
    assert_wire(&wire, &expected);
}

// Upstream: istio/ztunnel proto/workload.proto, message Address:
// oneof type { Workload workload = 1; Service service = 2; }.
#[test]
fn address_oneof_matches_upstream_wire_format() {
    let wire = Wire::new().message(1, workload_wire()).into_bytes();
    let expected = workload::Address {
        r#type: Some(workload::address::Type::Workload(workload_value())),
    };
    assert_wire(&wire, &expected);

    let wire = Wire::new()
        .message(2, Wire::new().string(1, "ratings"))
        .into_bytes();
    let expected = workload::Address {
        r#type: Some(workload::address::Type::Service(workload::Service {
            name: "ratings".into(),
            ..Default::default()
        })),
    };
    assert_wire(&wire, &expected);
}

#[test]
fn address_round_trips_through_any_with_the_type_url() {
    assert_eq!(workload::Address::type_url(), ADDRESS_TYPE_URL);
    assert_eq!(security::Authorization::type_url(), AUTHORIZATION_TYPE_URL);

    let address = workload::Address {
        r#type: Some(workload::address::Type::Workload(workload_value())),
    };
    let any = Any::from_msg(&address).unwrap();
    assert_eq!(any.type_url, ADDRESS_TYPE_URL);
    assert_eq!(
        any.value,
        Wire::new().message(1, workload_wire()).into_bytes()
    );

    let over_the_wire = Any::decode(any.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        over_the_wire.to_msg::<workload::Address>().unwrap(),
        address
    );
    // The type URL guards against decoding the wrong message.
    assert!(over_the_wire.to_msg::<security::Authorization>().is_err());
}

// === mesh.waypoint.v1 (ours, no upstream to match) ===

#[test]
fn waypoint_routes_round_trip_through_any_with_the_type_url() {
    assert_eq!(
        waypoint::WaypointRoutes::type_url(),
        WAYPOINT_ROUTES_TYPE_URL
    );
    let routes = waypoint::WaypointRoutes {
        hostname: "reviews.bookinfo.svc.cluster.local".into(),
        port: 9080,
        routes: vec![waypoint::Route {
            namespace: "bookinfo".into(),
            name: "reviews".into(),
            ..Default::default()
        }],
    };
    let any = Any::from_msg(&routes).unwrap();
    assert_eq!(any.type_url, WAYPOINT_ROUTES_TYPE_URL);
    let over_the_wire = Any::decode(any.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        over_the_wire.to_msg::<waypoint::WaypointRoutes>().unwrap(),
        routes
    );
    assert!(over_the_wire.to_msg::<workload::Address>().is_err());
}

#[test]
fn waypoint_authorization_round_trips_through_any_with_the_type_url() {
    assert_eq!(
        waypoint::WaypointAuthorization::type_url(),
        WAYPOINT_AUTHORIZATION_TYPE_URL
    );
    let policies = waypoint::WaypointAuthorization {
        hostname: "reviews.bookinfo.svc.cluster.local".into(),
        policies: vec![waypoint::AuthorizationPolicy {
            namespace: "bookinfo".into(),
            name: "admin-only".into(),
            action: waypoint::authorization_policy::Action::Deny.into(),
            dry_run: true,
            rules: vec![waypoint::authorization_policy::Rule {
                to: vec![waypoint::authorization_policy::Operation {
                    paths: vec!["/admin*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }],
    };
    let any = Any::from_msg(&policies).unwrap();
    assert_eq!(any.type_url, WAYPOINT_AUTHORIZATION_TYPE_URL);
    let over_the_wire = Any::decode(any.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        over_the_wire
            .to_msg::<waypoint::WaypointAuthorization>()
            .unwrap(),
        policies
    );
    assert!(over_the_wire.to_msg::<waypoint::WaypointRoutes>().is_err());
}

// === istio.security ===

// Upstream: istio/ztunnel proto/authorization.proto (Rule/Clause) =
// istio/istio pkg/workloadapi/security/authorization.proto (Group/Rules).
// Authorization: name 1, namespace 2, scope 3, action 4, groups 5, dry_run 6.
// Group: rules 1. Rules: matches 2. Match: namespaces 1, not_namespaces 2,
//   principals 3, not_principals 4, source_ips 5, not_source_ips 6,
//   destination_ips 7, not_destination_ips 8, destination_ports 9 (packed),
//   not_destination_ports 10 (packed), service_accounts 11, not_service_accounts 12.
// Address: address 1, length 2. ServiceAccountMatch: namespace 1, serviceAccount 2.
// StringMatch: oneof exact 1, prefix 2, suffix 3, presence 4 (google.protobuf.Empty).
// Scope WORKLOAD_SELECTOR = 2; Action DENY = 1.
#[test]
fn authorization_matches_upstream_wire_format() {
    let matches = Wire::new()
        .message(1, Wire::new().string(1, "bookinfo")) // namespaces: exact
        .message(2, Wire::new().string(3, "-test")) // not_namespaces: suffix
        .message(3, Wire::new().string(2, "cluster.local/ns/bookinfo/")) // principals: prefix
        .message(4, Wire::new().message(4, Wire::new())) // not_principals: presence
        .message(5, Wire::new().bytes(1, &[10, 1, 0, 0]).varint(2, 16)) // source_ips
        .message(8, Wire::new().bytes(1, &[10, 96, 0, 1]).varint(2, 32)) // not_destination_ips
        .packed(9, &[9080, 15008]) // destination_ports
        .packed(10, &[22]) // not_destination_ports
        .message(
            11,
            Wire::new().string(1, "bookinfo").string(2, "productpage"),
        ); // service_accounts
    let wire = Wire::new()
        .string(1, "deny-ssh") // name
        .string(2, "bookinfo") // namespace
        .varint(3, 2) // scope = WORKLOAD_SELECTOR
        .varint(4, 1) // action = DENY
        .message(5, Wire::new().message(1, Wire::new().message(2, matches))) // groups
        .varint(6, 1) // dry_run
        .into_bytes();

    use security::string_match::MatchType;
    let string_match = |m: MatchType| security::StringMatch {
        match_type: Some(m),
    };
    let cidr = |address: [u8; 4], length| security::Address {
        address: address.to_vec(),
        length,
    };
    let expected_match = security::Match {
        namespaces: vec![string_match(MatchType::Exact("bookinfo".into()))],
        not_namespaces: vec![string_match(MatchType::Suffix("-test".into()))],
        principals: vec![string_match(MatchType::Prefix(
            "cluster.local/ns/bookinfo/".into(),
        ))],
        not_principals: vec![string_match(MatchType::Presence(()))],
        source_ips: vec![cidr([10, 1, 0, 0], 16)],
        not_destination_ips: vec![cidr([10, 96, 0, 1], 32)],
        destination_ports: vec![9080, 15008],
        not_destination_ports: vec![22],
        service_accounts: vec![security::ServiceAccountMatch {
            namespace: "bookinfo".into(),
            service_account: "productpage".into(),
        }],
        ..Default::default()
    };
    let expected = security::Authorization {
        name: "deny-ssh".into(),
        namespace: "bookinfo".into(),
        scope: security::Scope::WorkloadSelector.into(),
        action: security::Action::Deny.into(),
        groups: vec![security::Group {
            rules: vec![security::Rules {
                matches: vec![expected_match],
            }],
        }],
        dry_run: true,
    };
    assert_wire(&wire, &expected);
}

// === istio.v1.auth ===

// Upstream: istio/api security/v1alpha1/ca.proto.
// IstioCertificateRequest: csr 1, (2 was subject_id), validity_duration 3 (int64),
//   metadata 4 (google.protobuf.Struct).
// IstioCertificateResponse: cert_chain 1 (repeated string), root_cert 2 (Roots).
// Roots: ca_cert 1.
#[test]
fn certificate_request_matches_upstream_wire_format() {
    let metadata = [("ClusterID", "cluster-1"), ("WorkloadName", "reviews-v1")];
    let wire = Wire::new()
        .string(1, "-----BEGIN CERTIFICATE REQUEST-----\n...") // csr
        .varint(3, 86_400) // validity_duration
        .message(4, struct_wire(&metadata)) // metadata
        .into_bytes();
    let expected = ca::IstioCertificateRequest {
        csr: "-----BEGIN CERTIFICATE REQUEST-----\n...".into(),
        validity_duration: 86_400,
        metadata: Some(struct_value(&metadata)),
    };
    assert_wire(&wire, &expected);
}

#[test]
fn certificate_response_matches_upstream_wire_format() {
    let wire = Wire::new()
        .string(1, "LEAF PEM") // cert_chain[0]
        .string(1, "INTERMEDIATE PEM") // cert_chain[1]
        .message(2, Wire::new().string(1, "ROOT PEM")) // root_cert
        .into_bytes();
    let expected = ca::IstioCertificateResponse {
        cert_chain: vec!["LEAF PEM".into(), "INTERMEDIATE PEM".into()],
        root_cert: Some(ca::Roots {
            ca_cert: vec!["ROOT PEM".into()],
        }),
    };
    assert_wire(&wire, &expected);
}

// === envoy.service.discovery.v3 ===

// Upstream: envoyproxy/envoy api/envoy/service/discovery/v3/discovery.proto,
// api/envoy/config/core/v3/base.proto and googleapis google/rpc/status.proto.
// DeltaDiscoveryRequest: node 1, type_url 2, resource_names_subscribe 3,
//   resource_names_unsubscribe 4, initial_resource_versions 5 (map<string, string>),
//   response_nonce 6, error_detail 7 (google.rpc.Status).
// Node: id 1, cluster 2, metadata 3 (Struct), locality 4, user_agent_name 6,
//   user_agent_version 7 (oneof), client_features 10.
// Locality: region 1, zone 2, sub_zone 3.
// google.rpc.Status: code 1 (int32), message 2, details 3 (repeated Any).
const NODE_ID: &str = "ztunnel~10.0.0.4~ztunnel-x.istio-system~istio-system.svc.cluster.local";

#[test]
fn delta_discovery_request_matches_upstream_wire_format() {
    let locality = Wire::new()
        .string(1, "eu-west")
        .string(2, "eu-west-1a")
        .string(3, "rack-4");
    let detail = Wire::new()
        .string(1, "type.googleapis.com/x.Y")
        .bytes(2, &[1, 2]);
    let node = Wire::new()
        .string(1, NODE_ID) // id
        .string(2, "ztunnel") // cluster
        .message(3, struct_wire(&[("NAME", "ztunnel-x")])) // metadata
        .message(4, locality) // locality
        .string(6, "ztunnel") // user_agent_name
        .string(7, "1.0.0") // user_agent_version
        .string(10, "envoy.lb.does_not_support_overprovisioning"); // client_features
    let status = Wire::new()
        .varint(1, 3) // code = INVALID_ARGUMENT
        .string(2, "bad address") // message
        .message(3, detail); // details
    let wire = Wire::new()
        .message(1, node) // node
        .string(2, ADDRESS_TYPE_URL) // type_url
        .string(3, "*") // resource_names_subscribe
        .string(3, "net-a/10.1.2.7") // resource_names_subscribe
        .string(4, "old") // resource_names_unsubscribe
        .string_map_entry(5, "bookinfo/reviews.bookinfo.svc.cluster.local", "v7") // initial_resource_versions
        .string_map_entry(5, "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f", "v3") // initial_resource_versions
        .string(6, "nonce-41") // response_nonce
        .message(7, status) // error_detail
        .into_bytes();

    let expected = discovery::DeltaDiscoveryRequest {
        node: Some(core::Node {
            id: NODE_ID.into(),
            cluster: "ztunnel".into(),
            metadata: Some(struct_value(&[("NAME", "ztunnel-x")])),
            locality: Some(core::Locality {
                region: "eu-west".into(),
                zone: "eu-west-1a".into(),
                sub_zone: "rack-4".into(),
            }),
            user_agent_name: "ztunnel".into(),
            user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
                "1.0.0".into(),
            )),
            client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
        }),
        type_url: ADDRESS_TYPE_URL.into(),
        resource_names_subscribe: vec!["*".into(), "net-a/10.1.2.7".into()],
        resource_names_unsubscribe: vec!["old".into()],
        initial_resource_versions: BTreeMap::from([
            (
                "bookinfo/reviews.bookinfo.svc.cluster.local".into(),
                "v7".into(),
            ),
            (
                "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f".into(),
                "v3".into(),
            ),
        ]),
        response_nonce: "nonce-41".into(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "bad address".into(),
            details: vec![Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![1, 2],
            }],
        }),
    };
    assert_wire(&wire, &expected);
}

// Upstream: envoyproxy/envoy api/envoy/service/discovery/v3/discovery.proto.
// DeltaDiscoveryResponse: system_version_info 1, resources 2 (Resource), type_url 4,
//   nonce 5, removed_resources 6.
// Resource: version 1, resource 2 (Any), name 3, aliases 4, ttl 6 (Duration).
// google/protobuf/duration.proto: seconds 1, nanos 2.
#[test]
fn delta_discovery_response_matches_upstream_wire_format() {
    let address_bytes = Wire::new().message(1, workload_wire());
    let resource = Wire::new()
        .string(1, "v8") // version
        .message(
            2,
            Wire::new()
                .string(1, ADDRESS_TYPE_URL)
                .message(2, address_bytes),
        ) // resource
        .string(3, "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f") // name
        .string(4, "net-a/10.1.2.7") // aliases
        .message(6, Wire::new().varint(1, 30).varint(2, 500)); // ttl
    let wire = Wire::new()
        .string(1, "2024-06-01T00:00:00Z/12") // system_version_info
        .message(2, resource) // resources
        .string(4, ADDRESS_TYPE_URL) // type_url
        .string(5, "nonce-42") // nonce
        .string(6, "cluster-1//v1/Pod/bookinfo/ratings-v1-aaaa") // removed_resources
        .into_bytes();

    let address = workload::Address {
        r#type: Some(workload::address::Type::Workload(workload_value())),
    };
    let expected = discovery::DeltaDiscoveryResponse {
        system_version_info: "2024-06-01T00:00:00Z/12".into(),
        resources: vec![discovery::Resource {
            version: "v8".into(),
            resource: Some(Any::from_msg(&address).unwrap()),
            name: "cluster-1//v1/Pod/bookinfo/reviews-v1-7d9f".into(),
            aliases: vec!["net-a/10.1.2.7".into()],
            ttl: Some(Duration {
                seconds: 30,
                nanos: 500,
            }),
        }],
        type_url: ADDRESS_TYPE_URL.into(),
        nonce: "nonce-42".into(),
        removed_resources: vec!["cluster-1//v1/Pod/bookinfo/ratings-v1-aaaa".into()],
    };
    assert_wire(&wire, &expected);

    let decoded = discovery::DeltaDiscoveryResponse::decode(wire.as_slice()).unwrap();
    let resource = decoded.resources[0].resource.as_ref().unwrap();
    assert_eq!(resource.to_msg::<workload::Address>().unwrap(), address);
}

/// Upstream peers may send fields we do not carry (their numbers are reserved
/// in our files); decoding must skip them rather than fail.
#[test]
fn upstream_fields_we_do_not_carry_are_skipped() {
    // Node.extensions = 9 and Node.dynamic_parameters = 12 (map), then
    // DeltaDiscoveryResponse.control_plane = 7 and removed_resource_names = 8.
    let node = Wire::new()
        .string(1, "id")
        .message(9, Wire::new().string(1, "envoy.filters.http.router"))
        .map_entry(12, "type", Wire::new());
    let request = Wire::new()
        .message(1, node)
        .string(2, ADDRESS_TYPE_URL)
        .into_bytes();
    let decoded = discovery::DeltaDiscoveryRequest::decode(request.as_slice()).unwrap();
    assert_eq!(decoded.node.unwrap().id, "id");
    assert_eq!(decoded.type_url, ADDRESS_TYPE_URL);

    let response = Wire::new()
        .string(5, "nonce-1")
        .message(7, Wire::new().string(1, "istiod-0"))
        .message(8, Wire::new().string(1, "gone"))
        .into_bytes();
    let decoded = discovery::DeltaDiscoveryResponse::decode(response.as_slice()).unwrap();
    assert_eq!(decoded.nonce, "nonce-1");
}
