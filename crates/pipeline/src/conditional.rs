//! Stage 5: conditional requests, evaluated in the order of RFC 9110 §13.2.2.
//!
//! freshclam's header check sends `If-Modified-Since` with the build time of
//! the version it holds; because a CVD's `Last-Modified` is that same build
//! time, every client already up to date gets `304` and moves nothing.

use std::time::SystemTime;

use http::Method;
use http::header::{self, HeaderName, HeaderValue};

use super::fields::Preconditions;
use super::file::Validators;

/// What the preconditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the representation; `honor_range` is false when `If-Range` failed.
    Proceed {
        /// Whether a Range header may be applied.
        honor_range: bool,
    },
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    PreconditionFailed,
}

/// Evaluates the request's preconditions against `v`.
pub fn evaluate(method: &Method, p: &Preconditions, v: &Validators) -> Outcome {
    let safe = method == Method::GET || method == Method::HEAD;
    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if p.if_match {
        if !list_matches(p, header::IF_MATCH, &v.etag, Comparison::Strong) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(date) = p.if_unmodified_since.and_then(|d| date(d, v))
        && v.last_modified > date
    {
        return Outcome::PreconditionFailed;
    }
    // Step 3 and 4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if p.if_none_match {
        if list_matches(p, header::IF_NONE_MATCH, &v.etag, Comparison::Weak) {
            return if safe {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if safe
        && let Some(date) = p.if_modified_since.and_then(|d| date(d, v))
        && v.last_modified <= date
    {
        return Outcome::NotModified;
    }
    // Step 5: If-Range.
    // A field that is not text is ignored, like an absent one.
    let honor_range = match p.if_range.map(|field| (field, field.to_str())) {
        None | Some((_, Err(_))) => true,
        Some((_, Ok(value))) if value.trim_start().starts_with("W/") => false,
        Some((_, Ok(value))) if value.trim_start().starts_with('"') => value.trim() == v.etag,
        Some((field, Ok(_))) => date(field, v) == Some(v.last_modified),
    };
    Outcome::Proceed { honor_range }
}

/// The time an HTTP-date field names. A client sending back our own
/// `Last-Modified` (freshclam's check, every browser's revalidation) is
/// recognized by its bytes, without parsing.
fn date(value: &HeaderValue, v: &Validators) -> Option<SystemTime> {
    if value == v.last_modified_header {
        return Some(v.last_modified);
    }
    let text = value.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

/// Whether any line of the list field `name` matches `etag`; a line that
/// is not text matches nothing.
fn list_matches(p: &Preconditions, name: HeaderName, etag: &str, comparison: Comparison) -> bool {
    p.lines(name)
        .filter_map(|line| line.to_str().ok())
        .any(|line| matches_any(line, etag, comparison))
}

#[derive(Clone, Copy)]
enum Comparison {
    Strong,
    Weak,
}

/// Whether `list` (`*` or comma-separated entity tags) matches `etag`.
fn matches_any(list: &str, etag: &str, comparison: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    entity_tags(list).any(|(weak, tag)| match comparison {
        Comparison::Strong => !weak && tag == ours,
        Comparison::Weak => tag == ours,
    })
}

/// Iterates `(is_weak, "quoted-tag")` over a list; stops at malformed input.
fn entity_tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = after.strip_prefix('"')?;
        let end = body.find('"')?;
        let tag = &after[..end + 2];
        rest = &body[end + 1..];
        Some((weak, tag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Fields;
    use http::HeaderMap;
    use std::time::{Duration, UNIX_EPOCH};

    fn validators() -> Validators {
        Validators::new(
            "\"abc\"".into(),
            UNIX_EPOCH + Duration::from_secs(1_440_082_241),
        )
    }

    fn eval(pairs: &[(&'static str, &str)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        evaluate_map(&h)
    }

    fn evaluate_map(h: &HeaderMap) -> Outcome {
        evaluate(&Method::GET, &Fields::scan(h).preconditions, &validators())
    }

    const PROCEED: Outcome = Outcome::Proceed { honor_range: true };
    const SAME: &str = "Thu, 20 Aug 2015 14:50:41 GMT";
    const EARLIER: &str = "Thu, 20 Aug 2015 14:50:40 GMT";

    #[test]
    fn if_modified_since_same_or_later_is_not_modified() {
        assert_eq!(eval(&[("if-modified-since", SAME)]), Outcome::NotModified);
        assert_eq!(eval(&[("if-modified-since", EARLIER)]), PROCEED);
        assert_eq!(eval(&[("if-modified-since", "garbage")]), PROCEED);
        // Our own `Last-Modified` bytes are recognized without parsing;
        // the same time in the obsolete formats is parsed.
        assert_eq!(validators().last_modified_header, SAME);
        for same in [
            "Thursday, 20-Aug-15 14:50:41 GMT",
            "Thu Aug 20 14:50:41 2015",
        ] {
            assert_eq!(eval(&[("if-modified-since", same)]), Outcome::NotModified);
        }
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        assert_eq!(
            eval(&[("if-none-match", "\"x\""), ("if-modified-since", SAME)]),
            PROCEED
        );
        assert_eq!(
            eval(&[("if-none-match", "\"x\", W/\"abc\"")]),
            Outcome::NotModified
        );
        assert_eq!(eval(&[("if-none-match", "*")]), Outcome::NotModified);
    }

    #[test]
    fn if_match_is_strong_and_checked_first() {
        assert_eq!(
            eval(&[("if-match", "W/\"abc\"")]),
            Outcome::PreconditionFailed
        );
        assert_eq!(eval(&[("if-match", "\"abc\"")]), PROCEED);
        assert_eq!(eval(&[("if-match", "*")]), PROCEED);
        assert_eq!(
            eval(&[("if-unmodified-since", EARLIER)]),
            Outcome::PreconditionFailed
        );
        assert_eq!(eval(&[("if-unmodified-since", SAME)]), PROCEED);
        assert_eq!(
            eval(&[("if-match", "\"abc\""), ("if-unmodified-since", EARLIER)]),
            PROCEED
        );
    }

    #[test]
    fn if_range_needs_an_exact_strong_match() {
        assert_eq!(eval(&[("if-range", "\"abc\"")]), PROCEED);
        assert_eq!(
            eval(&[("if-range", "\"x\"")]),
            Outcome::Proceed { honor_range: false }
        );
        assert_eq!(
            eval(&[("if-range", "W/\"abc\"")]),
            Outcome::Proceed { honor_range: false }
        );
        assert_eq!(eval(&[("if-range", SAME)]), PROCEED);
        assert_eq!(
            eval(&[("if-range", EARLIER)]),
            Outcome::Proceed { honor_range: false }
        );
    }

    #[test]
    fn a_tag_list_may_span_several_lines() {
        let mut h = HeaderMap::new();
        h.append(header::IF_NONE_MATCH, "\"x\"".parse().unwrap());
        h.append(header::IF_NONE_MATCH, "W/\"abc\"".parse().unwrap());
        assert_eq!(evaluate_map(&h), Outcome::NotModified);
        let mut h = HeaderMap::new();
        h.append(header::IF_MATCH, "\"x\"".parse().unwrap());
        h.append(header::IF_MATCH, "\"abc\"".parse().unwrap());
        assert_eq!(evaluate_map(&h), PROCEED);
    }

    #[test]
    fn entity_tag_lists_tolerate_commas_inside_tags() {
        let tags: Vec<_> = entity_tags("\"a,b\" , W/\"c\"").collect();
        assert_eq!(tags, vec![(false, "\"a,b\""), (true, "\"c\"")]);
    }
}
