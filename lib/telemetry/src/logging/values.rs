//! Field values that render cheaply. A log line is formatted on the data
//! path for every request, and `core::fmt` goes through a `Formatter` for
//! every piece of a value: std's `Display` of an IPv4 socket address makes
//! five such passes (four octets and the port), about a thousand
//! instructions, a tenth of the waypoint's access-log line.

use std::fmt;
use std::net::SocketAddr;

/// `addr` as its `Display` writes it, in one `write_str` for IPv4 (IPv6
/// goes to std's, as does any width or precision). For `%` fields:
/// `tracing::info!(peer = %socket_addr(addr))`.
pub fn socket_addr(addr: SocketAddr) -> impl fmt::Display {
    SocketAddrText(addr)
}

struct SocketAddrText(SocketAddr);

/// "255.255.255.255:65535".
const LONGEST_V4: usize = 21;

impl fmt::Display for SocketAddrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        if f.width().is_some() || f.precision().is_some() {
            return self.0.fmt(f);
        }
        let mut text = [0u8; LONGEST_V4];
        let mut len = 0;
        let mut numbers = itoa::Buffer::new();
        let mut push = |bytes: &[u8]| {
            text[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                push(b".");
            }
            push(numbers.format(octet).as_bytes());
        }
        push(b":");
        push(numbers.format(v4.port()).as_bytes());
        // Digits, dots and a colon: ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_reads_as_std_writes_it() {
        for addr in [
            "0.0.0.0:0",
            "10.0.1.5:8080",
            "255.255.255.255:65535",
            "172.31.0.12:15008",
            "1.22.100.9:80",
            "[::1]:443",
            "[fd00::12:5]:15008",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(socket_addr(addr).to_string(), addr.to_string());
        }
        // Padding is std's.
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(format!("{:>16}", socket_addr(addr)), format!("{addr:>16}"));
    }
}
