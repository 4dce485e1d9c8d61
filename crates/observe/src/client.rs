//! Who a client is, for accounting: the same [`ClientKey`] the limits module
//! uses (one IPv4 address, or one IPv6 /64 by default, as configured in
//! `[limits] clients`), so the status page's client tables and the limits'
//! decisions always talk about the same clients. An IPv6 host can pick a
//! new address from its /64 for every request; counting addresses would
//! split one client into thousands and let the tables grow without bound.

use std::net::IpAddr;

pub use cvdmirror_exchange::ClientKey;
use cvdmirror_exchange::ClientPrefixes;

/// How addresses are grouped into clients.
pub type Grouping = ClientPrefixes;

/// The key of `ip` under `grouping`.
pub fn key(grouping: &Grouping, ip: IpAddr) -> ClientKey {
    grouping.key(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_64_and_mapped_v4_is_v4() {
        let g = Grouping::default();
        let a = key(&g, "2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = key(&g, "2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = key(&g, "2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let mapped = key(&g, "::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, key(&g, "192.0.2.7".parse().unwrap()));
    }
}
