//! `Cache-Control` that fits ClamAV's file names, for the HTTP caches
//! (corporate proxies, CDNs) that may sit between a mirror and its clients:
//! - names that change in place (`daily.cvd`, `daily.cld`, anything that is
//!   not versioned) must be revalidated before a cache reuses them, or it
//!   would hand out yesterday's `daily.cvd`; revalidation is a cheap `304`;
//! - versioned names (`daily-27654.cdiff`, `*.sign`) never change, so a
//!   cache may keep them as long as it likes and never ask again;
//! - a `404` (a cdiff not published yet) must not be reused without asking,
//!   or clients behind the cache would keep falling back to whole downloads
//!   after the file appears.
//!
//! Each value is configurable (`[cache_control]`), and an empty one sends
//! no header.

use http::HeaderValue;

use super::file::FileKind;

/// Revalidate before every reuse.
pub const DEFAULT_CHANGING: &str = "no-cache";
/// Keep for a year, never revalidate.
pub const DEFAULT_VERSIONED: &str = "public, max-age=31536000, immutable";
/// Revalidate before every reuse.
pub const DEFAULT_MISSING: &str = "no-cache";

/// The `Cache-Control` values sent, per kind of answer (`None`: no header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// For files whose name stays while their content changes.
    pub changing: Option<HeaderValue>,
    /// For versioned names: cdiffs and `.sign` files.
    pub versioned: Option<HeaderValue>,
    /// For `404 Not Found`.
    pub missing: Option<HeaderValue>,
}

impl Default for CacheControl {
    fn default() -> Self {
        Self {
            changing: Some(HeaderValue::from_static(DEFAULT_CHANGING)),
            versioned: Some(HeaderValue::from_static(DEFAULT_VERSIONED)),
            missing: Some(HeaderValue::from_static(DEFAULT_MISSING)),
        }
    }
}

impl CacheControl {
    /// The value for a file of `kind`.
    pub fn for_kind(&self, kind: FileKind) -> Option<&HeaderValue> {
        match kind {
            FileKind::Cdiff | FileKind::Sign => self.versioned.as_ref(),
            FileKind::Cvd | FileKind::Cld | FileKind::Other => self.changing.as_ref(),
        }
    }

    /// A configured value: empty means no header; anything else must be a
    /// valid header value.
    pub fn value(text: &str) -> Result<Option<HeaderValue>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        HeaderValue::from_str(text)
            .map(Some)
            .map_err(|_| format!("`{text}` is not a valid Cache-Control value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_are_immutable_and_the_rest_revalidate() {
        let policy = CacheControl::default();
        let get = |kind| {
            policy
                .for_kind(kind)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get(FileKind::Cvd).as_deref(), Some("no-cache"));
        assert_eq!(get(FileKind::Cld).as_deref(), Some("no-cache"));
        assert_eq!(get(FileKind::Other).as_deref(), Some("no-cache"));
        for kind in [FileKind::Cdiff, FileKind::Sign] {
            let value = get(kind).unwrap();
            assert!(value.contains("immutable") && value.contains("max-age=31536000"));
        }
    }

    #[test]
    fn configured_values_are_checked() {
        assert_eq!(CacheControl::value(""), Ok(None));
        assert_eq!(CacheControl::value("  "), Ok(None));
        assert_eq!(
            CacheControl::value("max-age=60"),
            Ok(Some(HeaderValue::from_static("max-age=60")))
        );
        assert!(CacheControl::value("bad\nvalue").is_err());
    }
}
