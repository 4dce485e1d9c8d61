//! Who a client is, for every per-client limit.
//!
//! Counting by raw address is wrong in both directions: one IPv6 host owns a
//! whole /64 and can hop through it at will, and an IPv4-mapped IPv6 address
//! is the same host as its IPv4 form. A [`ClientKey`] is the address masked
//! to a configured prefix (IPv4 /32 and IPv6 /64 by default), so each real
//! client has exactly one key and the key fits in a few bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;

/// Prefix lengths used to group addresses into clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientPrefixes {
    /// IPv4 prefix length, 0–32 (default 32: one key per address).
    pub ipv4: u8,
    /// IPv6 prefix length, 0–128 (default 64: one key per subnet, the
    /// smallest unit an ISP hands out).
    pub ipv6: u8,
}

impl Default for ClientPrefixes {
    fn default() -> Self {
        Self { ipv4: 32, ipv6: 64 }
    }
}

impl ClientPrefixes {
    /// The key of `ip`. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) counts as IPv4.
    /// Prefix lengths beyond the address width are clamped.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::v4(v4, self.ipv4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::v4(v4, self.ipv4),
                None => ClientKey::v6(v6, self.ipv6),
            },
        }
    }
}

/// A client: a masked address and its prefix length. Displays and parses as
/// CIDR (`192.0.2.7/32`, `2001:db8:1:2::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// An IPv4 network.
    V4 {
        /// Address bits, host part zeroed.
        addr: u32,
        /// Prefix length.
        prefix: u8,
    },
    /// An IPv6 network.
    V6 {
        /// Address bits, host part zeroed.
        addr: u128,
        /// Prefix length.
        prefix: u8,
    },
}

impl ClientKey {
    fn v4(ip: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        ClientKey::V4 {
            addr: u32::from(ip) & mask,
            prefix,
        }
    }

    fn v6(ip: Ipv6Addr, prefix: u8) -> Self {
        let prefix = prefix.min(128);
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        ClientKey::V6 {
            addr: u128::from(ip) & mask,
            prefix,
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        match *self {
            ClientKey::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr)),
            ClientKey::V6 { addr, .. } => IpAddr::V6(Ipv6Addr::from(addr)),
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        match *self {
            ClientKey::V4 { prefix, .. } | ClientKey::V6 { prefix, .. } => prefix,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix())
    }
}

/// Why a string is not a client key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a client key (expected address/prefix): {0:?}")]
pub struct ParseClientKeyError(String);

impl FromStr for ClientKey {
    type Err = ParseClientKeyError;

    /// Parses `address/prefix`; the host part is masked off.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseClientKeyError(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        match addr.parse::<IpAddr>().map_err(|_| err())? {
            IpAddr::V4(v4) if prefix <= 32 => Ok(ClientKey::v4(v4, prefix)),
            IpAddr::V6(v6) if prefix <= 128 => Ok(ClientKey::v6(v6, prefix)),
            _ => Err(err()),
        }
    }
}

impl serde::Serialize for ClientKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> ClientKey {
        ClientPrefixes::default().key(s.parse().unwrap())
    }

    #[test]
    fn ipv6_groups_by_64_and_displays_as_cidr() {
        let a = key("2001:db8:1:2:aaaa::1");
        let b = key("2001:db8:1:2:ffff:1:2:3");
        let c = key("2001:db8:1:3::1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_is_per_address_by_default_and_mapped_ipv6_is_ipv4() {
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1/32");
    }

    #[test]
    fn prefixes_are_configurable_and_clamped() {
        let p = ClientPrefixes {
            ipv4: 24,
            ipv6: 200,
        };
        let k = p.key("192.0.2.77".parse().unwrap());
        assert_eq!(k.to_string(), "192.0.2.0/24");
        let k6 = p.key("2001:db8::1".parse().unwrap());
        assert_eq!(k6.to_string(), "2001:db8::1/128");
        let all = ClientPrefixes { ipv4: 0, ipv6: 0 };
        assert_eq!(
            all.key("10.1.2.3".parse().unwrap()).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(all.key("2001:db8::1".parse().unwrap()).to_string(), "::/0");
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in ["", "1.2.3.4", "1.2.3.4/33", "::/129", "x/3", "1.2.3.4/-1"] {
            assert!(bad.parse::<ClientKey>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v6 in any::<u128>(), v4 in any::<u32>(), p4 in 0u8..=32, p6 in 0u8..=128) {
            let prefixes = ClientPrefixes { ipv4: p4, ipv6: p6 };
            for ip in [IpAddr::V6(Ipv6Addr::from(v6)), IpAddr::V4(Ipv4Addr::from(v4))] {
                let k = prefixes.key(ip);
                prop_assert_eq!(k.to_string().parse::<ClientKey>().unwrap(), k);
                // Keying is idempotent: the network address has the same key.
                prop_assert_eq!(prefixes.key(k.network()), k);
            }
        }
    }
}
