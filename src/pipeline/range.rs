//! Stage 6: byte ranges (RFC 9110 §14).
//!
//! One range is served as `206`. A header that does not parse is ignored, as
//! the RFC allows, and the whole file is sent. Several ranges are answered
//! with the whole file too: that is always correct, no mirror client asks for
//! them, and multipart bodies are a classic amplification vector.

use http::HeaderValue;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The whole representation (`200`).
    Full,
    /// Bytes `start..=end` (`206`).
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// No requested range overlaps the representation (`416`).
    Unsatisfiable,
}

/// Chooses what to send for a `Range` header and a representation of `len` bytes.
pub fn evaluate(header: Option<&HeaderValue>, len: u64) -> Selection {
    let Some(spec) = header.and_then(|h| h.to_str().ok()) else {
        return Selection::Full;
    };
    let Some(set) = strip_unit(spec) else {
        return Selection::Full;
    };
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let Some(first) = specs.next() else {
        return Selection::Full;
    };
    if specs.next().is_some() {
        return Selection::Full;
    }
    match parse_spec(first) {
        Some(spec) => spec.resolve(len),
        None => Selection::Full,
    }
}

fn strip_unit(spec: &str) -> Option<&str> {
    let (unit, set) = spec.trim().split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(set)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-`.
    From { start: u64, end: Option<u64> },
    /// `-n`.
    Suffix(u64),
}

fn parse_spec(s: &str) -> Option<Spec> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        return digits(b)
            .then(|| b.parse().ok().map(Spec::Suffix))
            .flatten();
    }
    if !digits(a) {
        return None;
    }
    let start = a.parse().ok()?;
    if b.is_empty() {
        return Some(Spec::From { start, end: None });
    }
    if !digits(b) {
        return None;
    }
    // Digits too long for u64 mean "to the end" for the last position.
    let end = b.parse().unwrap_or(u64::MAX);
    (end >= start).then_some(Spec::From {
        start,
        end: Some(end),
    })
}

impl Spec {
    fn resolve(self, len: u64) -> Selection {
        match self {
            Spec::From { start, .. } if start >= len => Selection::Unsatisfiable,
            Spec::From { start, end } => Selection::Partial {
                start,
                end: end.map_or(len - 1, |e| e.min(len - 1)),
            },
            Spec::Suffix(0) => Selection::Unsatisfiable,
            Spec::Suffix(_) if len == 0 => Selection::Unsatisfiable,
            Spec::Suffix(n) => Selection::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eval(h: &str, len: u64) -> Selection {
        evaluate(Some(&HeaderValue::from_str(h).unwrap()), len)
    }

    #[test]
    fn single_ranges_of_each_form() {
        assert_eq!(
            eval("bytes=0-511", 1000),
            Selection::Partial { start: 0, end: 511 }
        );
        assert_eq!(
            eval("bytes=900-", 1000),
            Selection::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            eval("bytes=-100", 1000),
            Selection::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            eval("bytes=-5000", 1000),
            Selection::Partial { start: 0, end: 999 }
        );
        assert_eq!(
            eval("bytes=10-99999", 1000),
            Selection::Partial {
                start: 10,
                end: 999
            }
        );
        assert_eq!(
            eval("Bytes = 1-2", 1000),
            Selection::Partial { start: 1, end: 2 }
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(eval("bytes=1000-", 1000), Selection::Unsatisfiable);
        assert_eq!(eval("bytes=-0", 1000), Selection::Unsatisfiable);
        assert_eq!(eval("bytes=0-", 0), Selection::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_send_everything() {
        for h in [
            "bytes=5-2",
            "items=0-1",
            "bytes=",
            "bytes=a-b",
            "bytes=0-1,5-9",
            "bytes=--1",
            "0-1",
            "bytes=1-2-3",
        ] {
            assert_eq!(eval(h, 1000), Selection::Full, "{h}");
        }
        assert_eq!(evaluate(None, 10), Selection::Full);
    }

    proptest! {
        #[test]
        fn partial_selections_lie_inside_the_file(h in "bytes=[0-9]{0,3}-[0-9]{0,3}", len in 0u64..2000) {
            if let Selection::Partial { start, end } = eval(&h, len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
