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
///
/// Parsed as bytes: a header value is ASCII by construction (obs-text
/// fails the digit checks), and its optional whitespace is only space and
/// tab, which is all `trim_ascii` can meet in one.
pub fn evaluate(header: Option<&HeaderValue>, len: u64) -> Selection {
    let Some(set) = header.and_then(|h| strip_unit(h.as_bytes())) else {
        return Selection::Full;
    };
    let mut specs = set
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty());
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

fn strip_unit(spec: &[u8]) -> Option<&[u8]> {
    let (unit, set) = split_once(spec, b'=')?;
    unit.trim_ascii()
        .eq_ignore_ascii_case(b"bytes")
        .then_some(set)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-`.
    From { start: u64, end: Option<u64> },
    /// `-n`.
    Suffix(u64),
}

fn parse_spec(s: &[u8]) -> Option<Spec> {
    let (a, b) = split_once(s, b'-')?;
    let (a, b) = (a.trim_ascii(), b.trim_ascii());
    if a.is_empty() {
        return number(b).map(Spec::Suffix);
    }
    let start = number(a)?;
    if b.is_empty() {
        return Some(Spec::From { start, end: None });
    }
    if !digits(b) {
        return None;
    }
    // Digits too long for u64 mean "to the end" for the last position.
    let end = number(b).unwrap_or(u64::MAX);
    (end >= start).then_some(Spec::From {
        start,
        end: Some(end),
    })
}

fn split_once(s: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == at)?;
    Some((&s[..i], &s[i + 1..]))
}

fn digits(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(u8::is_ascii_digit)
}

/// A non-empty run of decimal digits; `None` for anything else or a value
/// past `u64::MAX`.
fn number(t: &[u8]) -> Option<u64> {
    if !digits(t) {
        return None;
    }
    t.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
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

    #[test]
    fn numbers_past_u64_are_the_end_only_as_a_last_position() {
        let huge = "99999999999999999999999";
        assert_eq!(
            eval(&format!("bytes=10-{huge}"), 1000),
            Selection::Partial {
                start: 10,
                end: 999
            }
        );
        assert_eq!(eval(&format!("bytes={huge}-"), 1000), Selection::Full);
        assert_eq!(eval(&format!("bytes=-{huge}"), 1000), Selection::Full);
    }

    /// The parser as first written, over `str`: the byte parser must agree.
    fn reference(spec: &str, len: u64) -> Selection {
        let Some((unit, set)) = spec.trim().split_once('=') else {
            return Selection::Full;
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return Selection::Full;
        }
        let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
        let (Some(first), None) = (specs.next(), specs.next()) else {
            return Selection::Full;
        };
        let Some((a, b)) = first.split_once('-') else {
            return Selection::Full;
        };
        let (a, b) = (a.trim(), b.trim());
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        let spec = if a.is_empty() {
            digits(b)
                .then(|| b.parse().ok().map(Spec::Suffix))
                .flatten()
        } else if !digits(a) {
            None
        } else if let Ok(start) = a.parse() {
            if b.is_empty() {
                Some(Spec::From { start, end: None })
            } else if digits(b) {
                let end = b.parse().unwrap_or(u64::MAX);
                (end >= start).then_some(Spec::From {
                    start,
                    end: Some(end),
                })
            } else {
                None
            }
        } else {
            None
        };
        spec.map_or(Selection::Full, |s| s.resolve(len))
    }

    proptest! {
        #[test]
        fn agrees_with_the_str_parser(h in "[bBytesx =\t,0-9-]{0,24}|bytes=[0-9]{0,22}-[0-9]{0,22}", len in 0u64..2000) {
            prop_assert_eq!(eval(&h, len), reference(&h, len));
        }

        #[test]
        fn partial_selections_lie_inside_the_file(h in "bytes=[0-9]{0,3}-[0-9]{0,3}", len in 0u64..2000) {
            if let Selection::Partial { start, end } = eval(&h, len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
