//! The request header fields the stages read, picked out in one pass over
//! the header map.
//!
//! The stages ask about nine names (`Host`, `Range`, `Referer`,
//! `User-Agent` and the five preconditions) while a request carries a
//! handful of fields; one walk over what is there replaces nine hashed
//! lookups, most of which find nothing. Each field keeps its first value,
//! as `HeaderMap::get` does; `If-Match` and `If-None-Match` are only noted
//! as present, and their lines read from the map when they are (a list may
//! span several lines).

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// What the stages read from the request's header fields.
#[derive(Debug, Clone, Copy)]
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
    /// First `Authorization` value.
    pub authorization: Option<&'a HeaderValue>,
    /// The precondition fields.
    pub preconditions: Preconditions<'a>,
}

/// The precondition fields of a request (RFC 9110 §13.1).
#[derive(Debug, Clone, Copy)]
pub struct Preconditions<'a> {
    headers: &'a HeaderMap,
    /// Whether `If-Match` is present.
    pub if_match: bool,
    /// Whether `If-None-Match` is present.
    pub if_none_match: bool,
    /// First `If-Modified-Since` value.
    pub if_modified_since: Option<&'a HeaderValue>,
    /// First `If-Unmodified-Since` value.
    pub if_unmodified_since: Option<&'a HeaderValue>,
    /// First `If-Range` value.
    pub if_range: Option<&'a HeaderValue>,
}

impl<'a> Preconditions<'a> {
    /// Every line of the list-valued field `name`.
    pub fn lines(&self, name: HeaderName) -> impl Iterator<Item = &'a HeaderValue> + use<'a> {
        self.headers.get_all(name).into_iter()
    }
}

impl<'a> Fields<'a> {
    /// Reads `headers` once.
    pub fn scan(headers: &'a HeaderMap) -> Self {
        let mut fields = Fields {
            host: None,
            several_hosts: false,
            range: None,
            referer: None,
            user_agent: None,
            authorization: None,
            preconditions: Preconditions {
                headers,
                if_match: false,
                if_none_match: false,
                if_modified_since: None,
                if_unmodified_since: None,
                if_range: None,
            },
        };
        let p = &mut fields.preconditions;
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
            } else if name == header::IF_MODIFIED_SINCE {
                &mut p.if_modified_since
            } else if name == header::IF_UNMODIFIED_SINCE {
                &mut p.if_unmodified_since
            } else if name == header::IF_RANGE {
                &mut p.if_range
            } else if name == header::AUTHORIZATION {
                &mut fields.authorization
            } else {
                p.if_match |= name == header::IF_MATCH;
                p.if_none_match |= name == header::IF_NONE_MATCH;
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
    use proptest::prelude::*;

    const NAMES: [HeaderName; 12] = [
        header::AUTHORIZATION,
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
            prop_assert_eq!(fields.authorization, headers.get(header::AUTHORIZATION));
            let p = fields.preconditions;
            prop_assert_eq!(p.if_match, headers.contains_key(header::IF_MATCH));
            prop_assert_eq!(p.if_none_match, headers.contains_key(header::IF_NONE_MATCH));
            prop_assert_eq!(p.if_modified_since, headers.get(header::IF_MODIFIED_SINCE));
            prop_assert_eq!(p.if_unmodified_since, headers.get(header::IF_UNMODIFIED_SINCE));
            prop_assert_eq!(p.if_range, headers.get(header::IF_RANGE));
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
        let p = fields.preconditions;
        assert!(!p.if_match && !p.if_none_match);
        assert_eq!((p.if_modified_since, p.if_range), (None, None));
        assert_eq!(fields.referer, None);
    }
}
