//! The request header fields the stages read, picked out in one pass over
//! the header map.
//!
//! The stages ask about nine names (`Host`, `Range`, `Referer`,
//! `User-Agent` and the five preconditions) while a request carries a
//! handful of fields; one walk over what is there replaces nine hashed
//! lookups, most of which find nothing. Each field keeps its first value, as `HeaderMap::get`
//! does; the preconditions are only noted as present, and evaluated from
//! the map when they are (the list-valued ones may span several lines).

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// What the stages read from the request's header fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// First `Host` value.
    pub host: Option<&'a HeaderValue>,
    /// Whether `Host` came more than once.
    pub several_hosts: bool,
    /// First `Range` value.
    pub range: Option<&'a HeaderValue>,
    /// First `Referer` value.
    pub referer: Option<&'a HeaderValue>,
    /// First `User-Agent` value.
    pub user_agent: Option<&'a HeaderValue>,
    /// Whether any of `If-Match`, `If-None-Match`, `If-Modified-Since`,
    /// `If-Unmodified-Since` or `If-Range` is present.
    pub preconditions: bool,
}

impl<'a> Fields<'a> {
    /// Reads `headers` once.
    pub fn scan(headers: &'a HeaderMap) -> Self {
        let mut fields = Fields::default();
        for (name, value) in headers {
            let slot = if name == header::HOST {
                fields.several_hosts = fields.host.is_some();
                &mut fields.host
            } else if name == header::RANGE {
                &mut fields.range
            } else if name == header::USER_AGENT {
                &mut fields.user_agent
            } else if name == header::REFERER {
                &mut fields.referer
            } else {
                fields.preconditions |= name == header::IF_MATCH
                    || name == header::IF_NONE_MATCH
                    || name == header::IF_MODIFIED_SINCE
                    || name == header::IF_UNMODIFIED_SINCE
                    || name == header::IF_RANGE;
                continue;
            };
            slot.get_or_insert(value);
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use proptest::prelude::*;

    const NAMES: [HeaderName; 11] = [
        header::RANGE,
        header::REFERER,
        header::USER_AGENT,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::HOST,
        header::CONNECTION,
        header::ACCEPT,
    ];

    proptest! {
        #[test]
        fn agrees_with_lookups_by_name(
            lines in proptest::collection::vec((0..NAMES.len(), "[a-z0-9 =-]{0,8}"), 0..12)
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &lines {
                headers.append(NAMES[*name].clone(), HeaderValue::from_str(value).unwrap());
            }
            let fields = Fields::scan(&headers);
            prop_assert_eq!(fields.host, headers.get(header::HOST));
            prop_assert_eq!(fields.several_hosts, headers.get_all(header::HOST).iter().count() > 1);
            prop_assert_eq!(fields.range, headers.get(header::RANGE));
            prop_assert_eq!(fields.referer, headers.get(header::REFERER));
            prop_assert_eq!(fields.user_agent, headers.get(header::USER_AGENT));
            let preconditions = NAMES[3..8].iter().any(|n| headers.contains_key(n));
            prop_assert_eq!(fields.preconditions, preconditions);
        }
    }

    #[test]
    fn a_header_check_has_a_range_and_no_preconditions() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("mirror"));
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-511"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static("ClamAV/1.4.3"));
        let fields = Fields::scan(&headers);
        assert_eq!(fields.range, Some(&HeaderValue::from_static("bytes=0-511")));
        assert!(!fields.preconditions);
        assert_eq!(fields.referer, None);
    }
}
