//! SOCKS5 (RFC 1928) on 15080: the explicit outbound path, for hosts where
//! nothing captures traffic. Only `CONNECT`, only "no authentication",
//! IPv4 and IPv6 destinations (a domain name is accepted only when it is an
//! IP literal; names are refused with "address type not supported").
//!
//! The handshake is parsed by pure functions over the bytes received so far
//! ([`parse_greeting`], [`parse_request`]), which say "need more", "done,
//! with this many bytes used", or what is wrong. After the request, the
//! destination takes the outbound path exactly as a captured connection's
//! original destination would, and the client is answered only once the
//! upstream is connected, with a reply code saying why when it is not. A
//! malformed handshake closes that one connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug_span};

use super::access_log::{AccessLog, Direction};
use super::{Inner, ProxyError};

const VERSION: u8 = 5;
const NO_AUTHENTICATION: u8 = 0x00;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
/// The longest greeting (2 + 255 methods) plus the longest request
/// (4 + 1 + 255 name bytes + 2): a handshake never needs more.
const HANDSHAKE_BUFFER: usize = 257 + 262;

/// A handshake step, once enough bytes arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<T> {
    pub value: T,
    /// Bytes of the input the step used; the rest belongs to the next one.
    pub consumed: usize,
}

/// Reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// What is wrong with a handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    #[error("version {0} is not SOCKS5")]
    Version(u8),
    #[error("the client offers no authentication method this proxy accepts (only \"none\")")]
    NoAcceptableMethod,
    #[error("command {0:#04x} is not supported (only CONNECT)")]
    Command(u8),
    #[error("reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    #[error("address type {0:#04x} is not supported")]
    AddressType(u8),
    #[error("domain name {0:?} is not supported: ask for an IP address")]
    DomainName(String),
    #[error("the client closed the connection during the handshake")]
    Closed,
}

// === impl Socks5Error ===

impl Socks5Error {
    /// The reply to send before closing, if the protocol has one.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Socks5Error::Version(_) | Socks5Error::NoAcceptableMethod | Socks5Error::Closed => None,
            Socks5Error::Command(_) => Some(Reply::CommandNotSupported),
            Socks5Error::Reserved(_) => Some(Reply::GeneralFailure),
            Socks5Error::AddressType(_) | Socks5Error::DomainName(_) => {
                Some(Reply::AddressTypeNotSupported)
            }
        }
    }
}

/// The method selection message: `VER NMETHODS METHODS...`. Succeeds only
/// if "no authentication" is offered.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<Parsed<()>>, Socks5Error> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(Socks5Error::Version(version));
    }
    let Some(&count) = buf.get(1) else {
        return Ok(None);
    };
    let consumed = 2 + usize::from(count);
    let Some(methods) = buf.get(2..consumed) else {
        return Ok(None);
    };
    if !methods.contains(&NO_AUTHENTICATION) {
        return Err(Socks5Error::NoAcceptableMethod);
    }
    Ok(Some(Parsed {
        value: (),
        consumed,
    }))
}

/// The request: `VER CMD RSV ATYP DST.ADDR DST.PORT`, to a destination.
pub fn parse_request(buf: &[u8]) -> Result<Option<Parsed<SocketAddr>>, Socks5Error> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let &[version, command, reserved, address_type] = header else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(Socks5Error::Version(version));
    }
    if command != CONNECT {
        return Err(Socks5Error::Command(command));
    }
    if reserved != 0 {
        return Err(Socks5Error::Reserved(reserved));
    }
    let (ip, port_at) = match address_type {
        ATYP_IPV4 => match buf.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(octets) => (IpAddr::V4(Ipv4Addr::from(octets)), 8),
            None => return Ok(None),
        },
        ATYP_IPV6 => match buf.get(4..20).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(octets) => (IpAddr::V6(Ipv6Addr::from(octets)), 20),
            None => return Ok(None),
        },
        ATYP_DOMAIN => {
            let Some(&length) = buf.get(4) else {
                return Ok(None);
            };
            let end = 5 + usize::from(length);
            let Some(name) = buf.get(5..end) else {
                return Ok(None);
            };
            let name = String::from_utf8_lossy(name);
            match name.trim_start_matches('[').trim_end_matches(']').parse() {
                Ok(ip) => (ip, end),
                Err(_) => return Err(Socks5Error::DomainName(name.into_owned())),
            }
        }
        other => return Err(Socks5Error::AddressType(other)),
    };
    let Some(&[high, low]) = buf.get(port_at..port_at + 2) else {
        return Ok(None);
    };
    Ok(Some(Parsed {
        value: SocketAddr::new(ip, u16::from_be_bytes([high, low])),
        consumed: port_at + 2,
    }))
}

/// A reply with the unspecified bind address: the proxy's side of the
/// connection is not the client's business.
pub fn encode_reply(reply: Reply) -> [u8; 10] {
    [VERSION, reply as u8, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

/// The reply that best explains why the outbound connection failed.
fn reply_for(error: &ProxyError) -> Reply {
    use hbone::Error as H;
    match error {
        ProxyError::Hbone(H::Denied { .. }) | ProxyError::Denied(_) => Reply::NotAllowed,
        ProxyError::Hbone(H::Refused { .. } | H::Connect { .. })
        | ProxyError::Connect { .. }
        | ProxyError::Route(super::RouteError::PortNotExposed { .. }) => Reply::ConnectionRefused,
        ProxyError::Hbone(H::ConnectTimeout { .. }) | ProxyError::ConnectTimeout { .. } => {
            Reply::TtlExpired
        }
        ProxyError::Route(super::RouteError::NoHealthyEndpoint { .. }) => Reply::HostUnreachable,
        _ => Reply::GeneralFailure,
    }
}

// === impl Inner ===

impl Inner {
    pub(super) async fn socks5(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let span = debug_span!("socks5", src.addr = %peer);
        async move {
            let mut log = AccessLog::new(Direction::Outbound, peer);
            let mut buf = [0u8; HANDSHAKE_BUFFER];
            let timeout = self.config.socks5_handshake_timeout;
            let handshake = tokio::time::timeout(timeout, handshake(&mut tcp, &mut buf)).await;
            let (dst, early) = match handshake {
                Ok(Ok(parsed)) => parsed,
                Ok(Err(error)) => {
                    if let ProxyError::Socks5(socks) = &error
                        && let Some(reply) = socks.reply()
                    {
                        let _ = tcp.write_all(&encode_reply(reply)).await;
                    }
                    return log.finish(Err(&error));
                }
                Err(_) => return log.finish(Err(&ProxyError::Socks5Timeout(timeout))),
            };
            let early = Bytes::copy_from_slice(&buf[early.0..early.1]);
            let early_sent = early.len() as u64;
            match self.connect_outbound(peer, dst, early, &mut log).await {
                Ok(upstream) => {
                    if let Err(error) = tcp.write_all(&encode_reply(Reply::Succeeded)).await {
                        return log.finish(Err(&ProxyError::Io(error)));
                    }
                    self.pipe_outbound(tcp, upstream, early_sent, log).await;
                }
                Err(error) => {
                    let _ = tcp.write_all(&encode_reply(reply_for(&error))).await;
                    log.finish(Err(&error));
                }
            }
        }
        .instrument(span)
        .await;
    }
}

/// Reads and answers the greeting, then reads the request. Returns the
/// destination and the range of `buf` the client sent beyond the request.
async fn handshake(
    tcp: &mut TcpStream,
    buf: &mut [u8; HANDSHAKE_BUFFER],
) -> Result<(SocketAddr, (usize, usize)), ProxyError> {
    let mut filled = 0;
    let greeting = loop {
        match parse_greeting(&buf[..filled]) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => filled += read_more(tcp, &mut buf[filled..]).await?,
            Err(Socks5Error::NoAcceptableMethod) => {
                let _ = tcp.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await;
                return Err(Socks5Error::NoAcceptableMethod.into());
            }
            Err(error) => return Err(error.into()),
        }
    };
    tcp.write_all(&[VERSION, NO_AUTHENTICATION]).await?;
    let start = greeting.consumed;
    loop {
        if let Some(request) = parse_request(&buf[start..filled])? {
            return Ok((request.value, (start + request.consumed, filled)));
        }
        filled += read_more(tcp, &mut buf[filled..]).await?;
    }
}

/// Reads at least one byte; EOF in the middle of a handshake is an error.
/// The buffer holds the longest handshake, so it is never full here.
async fn read_more(tcp: &mut TcpStream, free: &mut [u8]) -> Result<usize, ProxyError> {
    match tcp.read(free).await? {
        0 => Err(Socks5Error::Closed.into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests;
