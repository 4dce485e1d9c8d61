//! Stage 3: turns the request path into a safe relative path, decoding
//! percent-escapes exactly once.
//!
//! Each `/`-separated segment is decoded on its own, so `%2F` is part of a
//! name, never a separator. Dot segments (raw or encoded) are refused
//! outright rather than normalized: no legitimate client sends them, and
//! refusing cannot be got wrong. Names starting with `.` are never served
//! (they answer `404`, exactly like a missing file, so their existence is
//! not revealed). Containment within the root is enforced again by the
//! kernel when the file is opened (see `file`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use http::StatusCode;
use thiserror::Error;

/// Why a path was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadEncoding,
    /// `.` or `..` as a segment.
    #[error("dot segment in path")]
    DotSegment,
    /// An encoded NUL byte.
    #[error("NUL byte in path")]
    Nul,
    /// A name starting with `.`, or one containing an encoded `/`.
    #[error("not a servable name")]
    Hidden,
    /// Not an origin-form path.
    #[error("path does not start with /")]
    NotAbsolute,
}

impl PathError {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            PathError::Hidden => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes `path` (without query) to a path relative to the site root.
/// The empty path means the root itself.
pub fn decode(path: &str) -> Result<PathBuf, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out: Vec<u8> = Vec::with_capacity(rest.len());
    for raw in rest.as_bytes().split(|&b| b == b'/') {
        if raw.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        let start = out.len();
        decode_segment_into(raw, &mut out)?;
        let segment = &out[start..];
        match segment {
            b"." | b".." => return Err(PathError::DotSegment),
            _ if segment.contains(&0) => return Err(PathError::Nul),
            [b'.', ..] => return Err(PathError::Hidden),
            _ if segment.contains(&b'/') => return Err(PathError::Hidden),
            _ => {}
        }
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

/// Appends `raw` to `out` with its percent-escapes decoded, copying the
/// runs between escapes whole.
fn decode_segment_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        out.extend_from_slice(&rest[..at]);
        let hi = rest.get(at + 1).copied().and_then(hex);
        let lo = rest.get(at + 2).copied().and_then(hex);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => return Err(PathError::BadEncoding),
        }
        rest = &rest[at + 3..];
    }
    out.extend_from_slice(rest);
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(decode("/daily.cvd").unwrap(), PathBuf::from("daily.cvd"));
        assert_eq!(decode("/a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(decode("/").unwrap(), PathBuf::from(""));
    }

    #[test]
    fn decoding_happens_once() {
        assert_eq!(decode("/%252e%252e").unwrap(), PathBuf::from("%2e%2e"));
        assert_eq!(decode("/a%20b").unwrap(), PathBuf::from("a b"));
    }

    #[test]
    fn traversal_is_refused_raw_and_encoded() {
        for p in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E",
            "/.",
            "/a/./b",
        ] {
            assert_eq!(decode(p), Err(PathError::DotSegment), "{p}");
        }
        assert_eq!(decode("/..%2fetc"), Err(PathError::Hidden));
        assert_eq!(decode("/a%2Fb"), Err(PathError::Hidden));
    }

    #[test]
    fn hidden_nul_and_bad_escapes_are_refused() {
        assert_eq!(decode("/.git/config"), Err(PathError::Hidden));
        assert_eq!(decode("/%2egit"), Err(PathError::Hidden));
        assert_eq!(decode("/a%00b"), Err(PathError::Nul));
        assert_eq!(decode("/%zz"), Err(PathError::BadEncoding));
        assert_eq!(decode("/%4"), Err(PathError::BadEncoding));
        assert_eq!(decode("x"), Err(PathError::NotAbsolute));
    }

    /// The decoder as first written, a vector per segment: the in-place
    /// decoder must agree with it.
    fn reference(path: &str) -> Result<PathBuf, PathError> {
        let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        let mut out: Vec<u8> = Vec::new();
        for raw in rest.split('/').filter(|s| !s.is_empty()) {
            let bytes = raw.as_bytes();
            let mut segment = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let digit = |j: usize| {
                        bytes
                            .get(j)
                            .and_then(|b| (*b as char).to_digit(16))
                            .map(|d| d as u8)
                    };
                    match (digit(i + 1), digit(i + 2)) {
                        (Some(hi), Some(lo)) => segment.push(hi << 4 | lo),
                        _ => return Err(PathError::BadEncoding),
                    }
                    i += 3;
                } else {
                    segment.push(bytes[i]);
                    i += 1;
                }
            }
            match segment.as_slice() {
                b"." | b".." => return Err(PathError::DotSegment),
                _ if segment.contains(&0) => return Err(PathError::Nul),
                [b'.', ..] => return Err(PathError::Hidden),
                _ if segment.contains(&b'/') => return Err(PathError::Hidden),
                _ => {}
            }
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(&segment);
        }
        Ok(PathBuf::from(OsString::from_vec(out)))
    }

    proptest! {
        #[test]
        fn agrees_with_the_segment_vector_decoder(path in "/?[a-f0-9%./gG_-]{0,40}") {
            prop_assert_eq!(decode(&path), reference(&path));
        }

        #[test]
        fn decoded_paths_are_always_plain_relative(path in "/[a-zA-Z0-9%./_-]{0,40}") {
            if let Ok(p) = decode(&path) {
                prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(p.components().all(|c| !c.as_os_str().as_encoded_bytes().starts_with(b".")));
            }
        }
    }
}
