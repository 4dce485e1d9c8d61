//! The client's address behind trusted reverse proxies.
//!
//! Behind a proxy or load balancer every request comes from the proxy, so
//! per-client limits would lump all clients together. Proxies say who they
//! forwarded for in `Forwarded` (RFC 7239) or `X-Forwarded-For`; those
//! headers are believed only when the connection comes from a configured
//! trusted proxy, and only as far as the chain of trusted hops reaches: the
//! list is walked right to left (nearest hop first) past trusted proxies to
//! the first untrusted address. Anything a client wrote further left is
//! ignored, and a malformed value means "we do not know": the peer address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// Which forwarding header the trusted proxies set.
///
/// Naming it explicitly is safer than `auto`: a proxy that only appends to
/// `X-Forwarded-For` passes a client-forged `Forwarded` header through
/// untouched, and `auto` would believe it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `Forwarded` when present, otherwise `X-Forwarded-For`.
    #[default]
    Auto,
    /// Only `Forwarded` (RFC 7239).
    Forwarded,
    /// Only `X-Forwarded-For`.
    XForwardedFor,
}

/// Proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedProxies {
    /// Networks of trusted proxies (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1/32`).
    pub trusted: Vec<IpNet>,
    /// Which header they set.
    pub header: ProxyHeader,
}

impl TrustedProxies {
    /// Trusts `networks`, reading `header`.
    pub fn new(trusted: Vec<IpNet>, header: ProxyHeader) -> Self {
        Self { trusted, header }
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 counts as IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The address of the client that made the request.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = canonical(peer.ip());
        if self.trusted.is_empty() || !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let hops = match self.header {
            ProxyHeader::Forwarded => forwarded_hops(headers),
            ProxyHeader::XForwardedFor => xff_hops(headers),
            ProxyHeader::Auto if headers.contains_key(http::header::FORWARDED) => {
                forwarded_hops(headers)
            }
            ProxyHeader::Auto => xff_hops(headers),
        };
        match hops {
            Some(hops) => self.walk(&hops).unwrap_or(peer_ip),
            None => peer_ip,
        }
    }

    /// The rightmost untrusted hop; the leftmost if all are trusted.
    fn walk(&self, hops: &[IpAddr]) -> Option<IpAddr> {
        hops.iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or_else(|| hops.first())
            .copied()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every `for=` of every `Forwarded` line, in order; `None` if any element is
/// malformed or lacks an address (`unknown`, obfuscated names).
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let value = value.to_str().ok()?;
        for element in split_unquoted(value, ',') {
            if element.trim().is_empty() {
                continue;
            }
            let mut found = None;
            for pair in split_unquoted(element, ';') {
                let (name, v) = pair.split_once('=')?;
                if name.trim().eq_ignore_ascii_case("for") {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(node_ip(unquote(v.trim())?)?);
                }
            }
            hops.push(found?);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// Every address of every `X-Forwarded-For` line, in order.
fn xff_hops(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for item in value.to_str().ok()?.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            hops.push(node_ip(item)?);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A token or a quoted string without escapes (none is valid in a node).
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => Some(v),
    }
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or a
/// bare IPv6 address; anything else (`unknown`, `_hidden`) is `None`.
fn node_ip(node: &str) -> Option<IpAddr> {
    let ip = if let Some(rest) = node.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        IpAddr::V6(addr.parse().ok()?)
    } else if let Ok(ip) = node.parse::<IpAddr>() {
        ip
    } else {
        let (addr, port) = node.rsplit_once(':')?;
        if !valid_port(port) {
            return None;
        }
        IpAddr::V4(addr.parse().ok()?)
    };
    Some(canonical(ip))
}

/// A port number or an RFC 7239 obfuscated port (`_abc`).
fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
        || (port.starts_with('_')
            && port.len() > 1
            && port[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn proxies(nets: &[&str], header: ProxyHeader) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect(), header)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::Auto);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(p.client_ip(peer("198.51.100.1"), &h), ip("198.51.100.1"));
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::Auto);
        // The client forged 1.1.1.1; 203.0.113.9 connected to our edge proxy.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("203.0.113.9"));
        // Split over several header lines, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9,10.0.0.2"),
        ]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("203.0.113.9"));
        // All trusted: the leftmost is the origin.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_with_quoted_ipv6_and_ports() {
        let p = proxies(&["10.0.0.0/8", "::1/128"], ProxyHeader::Auto);
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8::1]:4711";proto=https, For=10.0.0.3;by=10.0.0.1"#,
        )]);
        assert_eq!(p.client_ip(peer("::1"), &h), ip("2001:db8::1"));
        let h = headers(&[("forwarded", r#"for="192.0.2.60:8080""#)]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("192.0.2.60"));
        let h = headers(&[("forwarded", r#"for="[2001:db8::2]";host="a,b""#)]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("2001:db8::2"));
        let h = headers(&[("forwarded", r#"for="[::ffff:192.0.2.5]:_x1""#)]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("192.0.2.5"));
    }

    #[test]
    fn header_choice_is_respected() {
        let h = headers(&[
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let auto = proxies(&["10.0.0.0/8"], ProxyHeader::Auto);
        let xff = proxies(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        let fwd = proxies(&["10.0.0.0/8"], ProxyHeader::Forwarded);
        assert_eq!(auto.client_ip(peer("10.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(xff.client_ip(peer("10.0.0.1"), &h), ip("203.0.113.9"));
        assert_eq!(fwd.client_ip(peer("10.0.0.1"), &h), ip("198.51.100.7"));
        let only_xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(fwd.client_ip(peer("10.0.0.1"), &only_xff), ip("10.0.0.1"));
    }

    #[test]
    fn malformed_values_fall_back_to_the_peer() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::Auto);
        for (name, value) in [
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden"),
            ("forwarded", "for=[2001:db8::1]x"),
            ("forwarded", r#"for="[2001:db8::1"#),
            ("forwarded", "proto=https"),
            ("forwarded", "for=1.2.3.4;for=5.6.7.8"),
            ("forwarded", "garbage"),
            ("forwarded", r#"for="1.2.3.4\"""#),
            ("x-forwarded-for", "1.2.3.4, not-an-ip"),
            ("x-forwarded-for", "1.2.3.4:99999"),
            ("x-forwarded-for", " , "),
            ("x-forwarded-for", "999.1.1.1"),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(
                p.client_ip(peer("10.0.0.1"), &h),
                ip("10.0.0.1"),
                "{name}: {value}"
            );
        }
        // Non-UTF-8 bytes.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn xff_accepts_ports_and_bare_ipv6() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        for (value, want) in [
            ("203.0.113.9:5555", "203.0.113.9"),
            ("2001:db8::9", "2001:db8::9"),
            ("[2001:db8::9]:443", "2001:db8::9"),
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip(want), "{value}");
        }
    }

    #[test]
    fn mapped_peer_is_matched_as_ipv4() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::Auto);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(p.client_ip(peer("::ffff:10.0.0.1"), &h), ip("203.0.113.9"));
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(|b| canonical(IpAddr::from(b))),
        ]
    }

    fn render(ip: IpAddr, port: Option<u16>, forwarded: bool) -> String {
        match (ip, port, forwarded) {
            (IpAddr::V4(v4), None, _) => v4.to_string(),
            (IpAddr::V4(v4), Some(p), true) => format!("\"{v4}:{p}\""),
            (IpAddr::V4(v4), Some(p), false) => format!("{v4}:{p}"),
            (IpAddr::V6(v6), None, true) => format!("\"[{v6}]\""),
            (IpAddr::V6(v6), None, false) => v6.to_string(),
            (IpAddr::V6(v6), Some(p), true) => format!("\"[{v6}]:{p}\""),
            (IpAddr::V6(v6), Some(p), false) => format!("[{v6}]:{p}"),
        }
    }

    proptest! {
        #[test]
        fn chain_resolves_to_rightmost_untrusted(
            chain in proptest::collection::vec((any_ip(), any::<bool>(), proptest::option::of(any::<u16>())), 1..6),
            forwarded in any::<bool>(),
        ) {
            // Trust exactly the hops marked true (as /32 or /128 networks).
            let trusted: Vec<IpNet> = chain.iter().filter(|c| c.1).map(|c| IpNet::from(c.0)).collect();
            let proxy_ip: IpAddr = "10.255.255.254".parse().unwrap();
            let mut nets = trusted.clone();
            nets.push(IpNet::from(proxy_ip));
            let p = TrustedProxies::new(nets, ProxyHeader::Auto);
            let rendered: Vec<String> = chain.iter().map(|(ip, _, port)| render(*ip, *port, forwarded)).collect();
            let h = if forwarded {
                let v = rendered.iter().map(|r| format!("for={r}")).collect::<Vec<_>>().join(", ");
                headers(&[("forwarded", &v)])
            } else {
                headers(&[("x-forwarded-for", &rendered.join(", "))])
            };
            let want = chain.iter().rev().map(|c| c.0).find(|ip| !p.is_trusted(*ip)).unwrap_or(chain[0].0);
            prop_assert_eq!(p.client_ip(SocketAddr::new(proxy_ip, 1), &h), want);
        }

        #[test]
        fn arbitrary_headers_never_panic_and_yield_peer_or_listed(value in "[ -~]{0,80}") {
            let p = proxies(&["0.0.0.0/0", "::/0"], ProxyHeader::Auto);
            for name in ["forwarded", "x-forwarded-for"] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    let mut h = HeaderMap::new();
                    h.insert(name, v);
                    let _ = p.client_ip(peer("10.0.0.1"), &h);
                }
            }
        }
    }
}
