//! IPv4 address ranges as the topology file writes them (`10.244.1.0/24`),
//! and the addresses `up` hands out of them. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

// === impl Cidr ===

impl Cidr {
    /// The network holding `addr` (host bits cleared).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Cidr {
        let prefix_len = prefix_len.min(32);
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        Cidr {
            network,
            prefix_len,
        }
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The `n`th address of the network (0 is the network itself), if the
    /// network has it and it is not the broadcast address.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        if u64::from(n) + 1 >= size {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let invalid = || format!("`{text}` is not an IPv4 network such as 10.244.1.0/24");
        let (addr, len) = text.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = len.parse().map_err(|_| invalid())?;
        if prefix_len > 32 {
            return Err(invalid());
        }
        let cidr = Cidr::new(addr, prefix_len);
        if cidr.network != addr {
            return Err(format!("`{text}` has host bits set: did you mean {cidr}?"));
        }
        Ok(cidr)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cidr: Cidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        assert_eq!(cidr.prefix_len(), 24);
        for bad in ["10.244.1.0", "10.244.1.0/33", "10.244.1/24", "x/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let host_bits = "10.244.1.7/24".parse::<Cidr>().unwrap_err();
        assert!(host_bits.contains("10.244.1.0/24"), "{host_bits}");
    }

    #[test]
    fn hosts_stay_inside_and_skip_broadcast() {
        let cidr: Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(cidr.host(1), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(cidr.host(2), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(cidr.host(3), None, "broadcast");
        assert_eq!(cidr.host(4), None);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn overlap_either_way() {
        let big: Cidr = "10.0.0.0/8".parse().unwrap();
        let small: Cidr = "10.2.0.0/16".parse().unwrap();
        let other: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(big.overlaps(&small) && small.overlaps(&big));
        assert!(!big.overlaps(&other));
    }
}
