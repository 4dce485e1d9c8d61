//! Request classes: what a request *was* to the mirror, from the operator's
//! point of view, rather than which file it named.
//!
//! freshclam's traffic has a shape: most requests are cheap header checks
//! (`Range: bytes=0-511` of a `.cvd`, or a conditional GET answered `304`),
//! a few are cdiffs, and the expensive ones are whole CVDs. A herd shows up
//! as a sudden swing from checks and cdiffs to whole CVDs (or to `404`s for
//! cdiffs the mirror does not have yet), so these classes are the unit of
//! every counter, rate, chart and alert.

use http::{Method, StatusCode};
use serde::Serialize;

use cvdmirror_exchange::{Exchange, FileKind};

/// Largest body of a `.cvd`/`.cld` answer that still counts as a header
/// check: freshclam asks for the 512-byte header.
pub const CHECK_MAX_BYTES: u64 = 512;

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestClass {
    /// A freshness check: `304`, or a `.cvd`/`.cld` answer of at most 512 bytes.
    Check,
    /// A whole CVD, or a large part of one.
    Cvd,
    /// An incremental patch.
    Cdiff,
    /// A detached signature.
    Sign,
    /// A `.cld` body.
    Cld,
    /// Anything else that succeeded (listings, other files).
    Other,
    /// `404`: usually a cdiff the mirror does not have (yet).
    NotFound,
    /// `429`/`503`: refused by admission control or the connection limit.
    Refused,
    /// Any other `4xx`/`5xx`.
    Error,
}

impl RequestClass {
    /// Number of classes.
    pub const COUNT: usize = 9;

    /// Every class, in display order.
    pub const ALL: [RequestClass; Self::COUNT] = [
        RequestClass::Check,
        RequestClass::Cvd,
        RequestClass::Cdiff,
        RequestClass::Sign,
        RequestClass::Cld,
        RequestClass::Other,
        RequestClass::NotFound,
        RequestClass::Refused,
        RequestClass::Error,
    ];

    /// Position in [`RequestClass::ALL`] (index of per-class arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Check => "check",
            RequestClass::Cvd => "cvd",
            RequestClass::Cdiff => "cdiff",
            RequestClass::Sign => "sign",
            RequestClass::Cld => "cld",
            RequestClass::Other => "other",
            RequestClass::NotFound => "not_found",
            RequestClass::Refused => "refused",
            RequestClass::Error => "error",
        }
    }

    /// The class of a finished exchange.
    pub fn classify(exchange: &Exchange, status: StatusCode, body_bytes: u64) -> Self {
        match status.as_u16() {
            304 => return RequestClass::Check,
            404 => return RequestClass::NotFound,
            429 | 503 => return RequestClass::Refused,
            400.. => return RequestClass::Error,
            _ => {}
        }
        let Some(file) = &exchange.file else {
            return RequestClass::Other;
        };
        // HEAD of a CVD asks the same question as a ranged header read.
        let small = body_bytes <= CHECK_MAX_BYTES || exchange.method == Method::HEAD;
        match file.kind {
            FileKind::Cvd | FileKind::Cld if small => RequestClass::Check,
            kind => Self::of_kind(kind),
        }
    }

    /// The class bytes of a still-running transfer are counted under, known
    /// before its status when the body is large enough to be file content
    /// (bodies over [`CHECK_MAX_BYTES`] of a served file). `None`: wait for
    /// the completion (small bodies end in one chunk anyway).
    pub fn provisional(exchange: &Exchange, body_len: Option<u64>) -> Option<Self> {
        let file = exchange.file.as_ref()?;
        (body_len? > CHECK_MAX_BYTES && exchange.method == Method::GET)
            .then(|| Self::of_kind(file.kind))
    }

    /// Whether a `404` for this target is a cdiff (a herd symptom). A
    /// `.cdiff.sign` is not: a missing signature sends no client to the
    /// whole CVD.
    pub fn is_cdiff_target(exchange: &Exchange) -> bool {
        exchange.target.path().ends_with(".cdiff")
    }

    /// Whether a `404` for this target is a ClamAV 1.5 detached signature
    /// (`.cvd.sign`, `.cdiff.sign`): harmless to most clients, but a
    /// FIPS-mode client cannot update a CVD without one.
    pub fn is_sign_target(exchange: &Exchange) -> bool {
        exchange.target.path().ends_with(".sign")
    }

    fn of_kind(kind: FileKind) -> Self {
        match kind {
            FileKind::Cvd => RequestClass::Cvd,
            FileKind::Cld => RequestClass::Cld,
            FileKind::Cdiff => RequestClass::Cdiff,
            FileKind::Sign => RequestClass::Sign,
            FileKind::Other => RequestClass::Other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cvdmirror_exchange::ServedFileInfo;

    /// An exchange for `path` from `peer`, serving a file of `kind` if any.
    pub(crate) fn exchange(peer: &str, path: &str, kind: Option<FileKind>) -> Exchange {
        let mut exchange = Exchange::get(peer.parse().unwrap(), path);
        exchange.file = kind.map(|kind| ServedFileInfo {
            kind,
            size: 1_000_000,
        });
        exchange
    }

    #[test]
    fn freshclam_traffic_classifies() {
        let cvd = exchange("192.0.2.1:1", "/daily.cvd", Some(FileKind::Cvd));
        let c = |s: u16, n: u64| RequestClass::classify(&cvd, StatusCode::from_u16(s).unwrap(), n);
        assert_eq!(c(206, 512), RequestClass::Check);
        assert_eq!(c(304, 0), RequestClass::Check);
        assert_eq!(c(200, 1_000_000), RequestClass::Cvd);
        assert_eq!(c(206, 4096), RequestClass::Cvd);
        assert_eq!(c(429, 20), RequestClass::Refused);
        assert_eq!(c(503, 20), RequestClass::Refused);
        assert_eq!(c(416, 20), RequestClass::Error);
        let missing = exchange("192.0.2.1:1", "/daily-9.cdiff", None);
        assert_eq!(
            RequestClass::classify(&missing, StatusCode::NOT_FOUND, 14),
            RequestClass::NotFound
        );
        assert!(RequestClass::is_cdiff_target(&missing));
        let cdiff = exchange("192.0.2.1:1", "/daily-9.cdiff", Some(FileKind::Cdiff));
        assert_eq!(
            RequestClass::classify(&cdiff, StatusCode::OK, 100),
            RequestClass::Cdiff
        );
    }

    #[test]
    fn signatures_classify_apart_from_patches() {
        let sign = exchange("192.0.2.1:1", "/daily-9.cdiff.sign", Some(FileKind::Sign));
        assert_eq!(
            RequestClass::classify(&sign, StatusCode::OK, 8870),
            RequestClass::Sign
        );
        let missing = exchange("192.0.2.1:1", "/daily-9.cdiff.sign", None);
        assert_eq!(
            RequestClass::classify(&missing, StatusCode::NOT_FOUND, 14),
            RequestClass::NotFound
        );
        assert!(!RequestClass::is_cdiff_target(&missing), "no herd symptom");
        assert!(RequestClass::is_sign_target(&missing));
        let cvd_sign = exchange("192.0.2.1:1", "/daily-27780.cvd.sign", None);
        assert!(RequestClass::is_sign_target(&cvd_sign));
        let cdiff = exchange("192.0.2.1:1", "/daily-9.cdiff", None);
        assert!(!RequestClass::is_sign_target(&cdiff));
    }

    #[test]
    fn only_large_file_bodies_have_a_provisional_class() {
        let cvd = exchange("192.0.2.1:1", "/daily.cvd", Some(FileKind::Cvd));
        assert_eq!(RequestClass::provisional(&cvd, Some(512)), None);
        assert_eq!(
            RequestClass::provisional(&cvd, Some(60_000_000)),
            Some(RequestClass::Cvd)
        );
        let missing = exchange("192.0.2.1:1", "/x", None);
        assert_eq!(RequestClass::provisional(&missing, Some(60_000)), None);
    }

    #[test]
    fn indices_match_the_display_order() {
        for (i, class) in RequestClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
