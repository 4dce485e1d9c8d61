//! Who a client is, for accounting: one IPv4 address, or one IPv6 /64.
//!
//! An IPv6 host usually owns a whole /64 and can pick a new address from it
//! for every request, so counting addresses would both split one client into
//! thousands and let the per-client tables grow without bound. The limits
//! module is building the shared `limits::ClientKey` with the same rule;
//! until it lands this small local function stands in for it (replace it
//! then, so accounting and limits agree on who a client is).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The accounting identity of a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `ip`: IPv4 (also when IPv4-mapped) as is, IPv6 masked to /64.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let masked = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(Ipv6Addr::from(masked)))
                }
            },
        }
    }

    /// The (masked) address.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_64_and_mapped_v4_is_v4() {
        let a = ClientKey::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let mapped = ClientKey::of("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped.to_string(), "192.0.2.7");
        assert_eq!(mapped, ClientKey::of("192.0.2.7".parse().unwrap()));
    }
}
