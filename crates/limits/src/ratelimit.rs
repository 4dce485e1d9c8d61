//! The IETF draft `RateLimit-Policy` and `RateLimit` header fields.
//!
//! Allowed responses tell the client its budget (requests, bytes of quota)
//! and when it refills, so well-behaved clients can pace themselves before
//! they are refused (draft-ietf-httpapi-ratelimit-headers-08 and later).

use std::fmt::Write as _;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `RateLimit-Policy` (IETF httpapi draft).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF httpapi draft).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One policy in the `RateLimit-Policy`/`RateLimit` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    /// Policy name (`requests`, `client-bytes`, `site-bytes`).
    pub name: &'static str,
    /// Quota units per window.
    pub quota: u64,
    /// Window in seconds.
    pub window: u64,
    /// Quota unit: `None` for requests, `Some("content-bytes")`.
    pub unit: Option<&'static str>,
    /// Units left now.
    pub remaining: u64,
    /// Seconds until more are available.
    pub reset: u64,
}

/// Adds `RateLimit-Policy` and `RateLimit` for `policies` (nothing if empty).
///
/// Format of draft-ietf-httpapi-ratelimit-headers-08 and later, e.g.
/// `RateLimit-Policy: "client-bytes";q=2000000000;w=86400;qu="content-bytes"`
/// and `RateLimit: "client-bytes";r=1500000;t=1200`. A sliced quota reports
/// its whole period as the window, the room of the current slice as `r` and
/// the time to the next slice as `t`.
pub fn add_ratelimit_headers(headers: &mut HeaderMap, policies: &[PolicyReport]) {
    if policies.is_empty() {
        return;
    }
    let (mut policy, mut state) = (String::new(), String::new());
    for (i, p) in policies.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(policy, "{sep}\"{}\";q={};w={}", p.name, p.quota, p.window);
        if let Some(unit) = p.unit {
            let _ = write!(policy, ";qu=\"{unit}\"");
        }
        let _ = write!(state, "{sep}\"{}\";r={};t={}", p.name, p.remaining, p.reset);
    }
    if let (Ok(p), Ok(s)) = (
        HeaderValue::from_str(&policy),
        HeaderValue::from_str(&state),
    ) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_fields_follow_the_draft() {
        let mut h = HeaderMap::new();
        add_ratelimit_headers(
            &mut h,
            &[
                PolicyReport {
                    name: "requests",
                    quota: 10,
                    window: 60,
                    unit: None,
                    remaining: 9,
                    reset: 6,
                },
                PolicyReport {
                    name: "client-bytes",
                    quota: 1000,
                    window: 86400,
                    unit: Some("content-bytes"),
                    remaining: 40,
                    reset: 3600,
                },
            ],
        );
        assert_eq!(
            h[RATELIMIT_POLICY],
            "\"requests\";q=10;w=60, \"client-bytes\";q=1000;w=86400;qu=\"content-bytes\""
        );
        assert_eq!(
            h[RATELIMIT],
            "\"requests\";r=9;t=6, \"client-bytes\";r=40;t=3600"
        );
    }
}
