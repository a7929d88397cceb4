use super::*;

fn ipv4_request(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut request = vec![5, 1, 0, 1];
    request.extend(ip);
    request.extend(port.to_be_bytes());
    request
}

/// Every strict prefix of a valid message asks for more bytes.
fn assert_prefixes_incomplete<T: std::fmt::Debug>(
    message: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, Socks5Error>,
) {
    for end in 0..message.len() {
        match parse(&message[..end]) {
            Ok(None) => {}
            other => panic!("prefix of {end} bytes: expected Ok(None), got {other:?}"),
        }
    }
}

#[test]
fn greeting_with_no_authentication_is_accepted() {
    let greeting = [5, 2, 0x02, 0x00];
    assert_prefixes_incomplete(&greeting, parse_greeting);
    // Pipelined bytes after the greeting are left for the request.
    let mut pipelined = greeting.to_vec();
    pipelined.extend(ipv4_request([10, 0, 0, 1], 80));
    assert_eq!(
        parse_greeting(&pipelined),
        Ok(Some(Parsed {
            value: (),
            consumed: 4
        }))
    );
}

#[test]
fn malformed_greetings_are_refused() {
    assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::Version(4)));
    assert_eq!(
        parse_greeting(b"GET / HTTP/1.1\r\n"),
        Err(Socks5Error::Version(b'G'))
    );
    assert_eq!(
        parse_greeting(&[5, 1, 0x02]),
        Err(Socks5Error::NoAcceptableMethod)
    );
    assert_eq!(
        parse_greeting(&[5, 0]),
        Err(Socks5Error::NoAcceptableMethod)
    );
}

#[test]
fn ipv4_and_ipv6_requests_parse() {
    let request = ipv4_request([10, 0, 0, 1], 8080);
    assert_prefixes_incomplete(&request, parse_request);
    let parsed = parse_request(&request).unwrap().unwrap();
    assert_eq!(parsed.value, "10.0.0.1:8080".parse().unwrap());
    assert_eq!(parsed.consumed, 10);

    let mut request = vec![5, 1, 0, 4];
    request.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
    request.extend(443u16.to_be_bytes());
    request.extend(b"early data");
    let parsed = parse_request(&request).unwrap().unwrap();
    assert_eq!(parsed.value, "[fd00::1]:443".parse().unwrap());
    assert_eq!(parsed.consumed, 22);
    assert_prefixes_incomplete(&request[..22], parse_request);
}

#[test]
fn domain_names_are_accepted_only_as_ip_literals() {
    let domain = |name: &str| {
        let mut request = vec![5, 1, 0, 3, name.len() as u8];
        request.extend(name.as_bytes());
        request.extend(80u16.to_be_bytes());
        request
    };
    let literal = domain("10.0.0.1");
    assert_prefixes_incomplete(&literal, parse_request);
    let parsed = parse_request(&literal).unwrap().unwrap();
    assert_eq!(parsed.value, "10.0.0.1:80".parse().unwrap());
    assert_eq!(parsed.consumed, literal.len());
    let parsed = parse_request(&domain("[fd00::1]")).unwrap().unwrap();
    assert_eq!(parsed.value, "[fd00::1]:80".parse().unwrap());

    let error = parse_request(&domain("example.com")).unwrap_err();
    assert_eq!(error, Socks5Error::DomainName("example.com".into()));
    assert_eq!(error.reply(), Some(Reply::AddressTypeNotSupported));
}

#[test]
fn malformed_requests_are_refused_with_the_right_reply() {
    let mut bind = ipv4_request([10, 0, 0, 1], 80);
    bind[1] = 0x02;
    let mut udp = ipv4_request([10, 0, 0, 1], 80);
    udp[1] = 0x03;
    let mut reserved = ipv4_request([10, 0, 0, 1], 80);
    reserved[2] = 1;
    let mut version = ipv4_request([10, 0, 0, 1], 80);
    version[0] = 4;
    let cases = [
        (
            bind,
            Socks5Error::Command(2),
            Some(Reply::CommandNotSupported),
        ),
        (
            udp,
            Socks5Error::Command(3),
            Some(Reply::CommandNotSupported),
        ),
        (
            reserved,
            Socks5Error::Reserved(1),
            Some(Reply::GeneralFailure),
        ),
        (
            vec![5, 1, 0, 9, 0, 0],
            Socks5Error::AddressType(9),
            Some(Reply::AddressTypeNotSupported),
        ),
        (version, Socks5Error::Version(4), None),
    ];
    for (request, error, reply) in cases {
        assert_eq!(parse_request(&request), Err(error.clone()), "{request:?}");
        assert_eq!(error.reply(), reply, "{error}");
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_parsers() {
    // A cheap fuzz: every 1- and 2-byte message, and a few long ones.
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            let _ = parse_greeting(&[a, b]);
            let _ = parse_request(&[5, 1, 0, a, b]);
        }
        let _ = parse_request(&[5, 1, 0, 3, a]);
        let _ = parse_greeting(&[5, a, 1, 2, 3]);
    }
}

#[test]
fn replies_carry_the_code_and_an_unspecified_address() {
    assert_eq!(
        encode_reply(Reply::Succeeded),
        [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(encode_reply(Reply::NotAllowed)[1], 2);
    assert_eq!(encode_reply(Reply::AddressTypeNotSupported)[1], 8);
}

#[test]
fn outbound_failures_map_to_reply_codes() {
    let addr: SocketAddr = "10.0.0.1:15008".parse().unwrap();
    let denied = ProxyError::Hbone(hbone::Error::Denied {
        addr,
        authority: "10.0.0.1:80".into(),
    });
    assert_eq!(reply_for(&denied), Reply::NotAllowed);
    let refused = ProxyError::Hbone(hbone::Error::Refused {
        addr,
        authority: "10.0.0.1:80".into(),
        status: http::StatusCode::SERVICE_UNAVAILABLE,
    });
    assert_eq!(reply_for(&refused), Reply::ConnectionRefused);
    let no_endpoint = ProxyError::Route(super::super::RouteError::NoHealthyEndpoint {
        service: "b/s".into(),
        port: 80,
    });
    assert_eq!(reply_for(&no_endpoint), Reply::HostUnreachable);
    assert_eq!(
        reply_for(&ProxyError::UnknownLocalWorkload("x".into())),
        Reply::GeneralFailure
    );
}
