//! The shaper as a pipeline [`Hook`]: classify, key, wrap.
//!
//! This is the default wiring; a server with other ideas of who a client is
//! passes its own key function. IPv6 clients are grouped by /64 by default,
//! because one host usually owns a whole /64 and would otherwise get as many
//! fair shares as it cares to use addresses.

use std::net::IpAddr;
use std::sync::Arc;

use http_body::Body;

use super::{ClientKey, FlowSpec, Shaper};
use crate::body::ResponseBody;
use crate::hooks::Hook;
use crate::pipeline::{Exchange, FileKind};

/// How a client key is derived from an exchange.
pub type KeyFn = dyn Fn(&Exchange) -> ClientKey + Send + Sync;

/// Wraps every response body in a [`ShapedBody`](super::ShapedBody).
pub struct ShapeHook {
    shaper: Shaper,
    key: Box<KeyFn>,
}

impl ShapeHook {
    /// A hook keyed by [`default_client_key`].
    pub fn new(shaper: Shaper) -> Self {
        Self::with_key(
            shaper,
            Box::new(|e: &Exchange| default_client_key(e.peer.ip())),
        )
    }

    /// A hook with its own idea of who a client is.
    pub fn with_key(shaper: Shaper, key: Box<KeyFn>) -> Self {
        Self { shaper, key }
    }
}

/// IPv4 address, or the IPv6 /64 (IPv4-mapped addresses count as IPv4).
pub fn default_client_key(ip: IpAddr) -> ClientKey {
    match ip {
        IpAddr::V4(v4) => ClientKey::new(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ClientKey::new(v4),
            None => {
                let s = v6.segments();
                ClientKey::new(format_args!(
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    s[0], s[1], s[2], s[3]
                ))
            }
        },
    }
}

impl Hook for ShapeHook {
    fn wrap_body(&self, exchange: &Arc<Exchange>, body: ResponseBody) -> ResponseBody {
        let kind = exchange.file.as_ref().map_or(FileKind::Other, |f| f.kind);
        let size = body
            .size_hint()
            .exact()
            .or_else(|| exchange.file.as_ref().map(|f| f.size))
            .unwrap_or(u64::MAX);
        let class = self.shaper.classify(exchange.target.path(), kind, size);
        let spec = FlowSpec::new(exchange.site.clone(), class, (self.key)(exchange));
        ResponseBody::boxed(self.shaper.wrap(body, &spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a = default_client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = default_client_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = default_client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_str(), "2001:db8:1:2::/64");
        assert_eq!(
            default_client_key("::ffff:192.0.2.7".parse().unwrap()).as_str(),
            "192.0.2.7"
        );
        assert_eq!(
            default_client_key("192.0.2.7".parse().unwrap()).as_str(),
            "192.0.2.7"
        );
    }
}
