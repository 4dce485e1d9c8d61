//! What the published set's signatures look like, for status pages,
//! metrics and alerts: per database, which signatures the published CVD
//! carries (the legacy one in its header, a ClamAV 1.5 `.sign`, or both)
//! and who signed the `.sign`; and the recent rejections with their
//! reasons.
//!
//! The engine fills these in as it verifies; nothing here talks to the
//! network or the disk.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::cvd::sign::SignedBy;

/// How many rejections [`Rejections`] keeps.
pub const KEPT_REJECTIONS: usize = 20;

/// Which signatures a published CVD carries, as verified when it was
/// published (or, for a CVD published by an older cvdmirror, when the
/// engine started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSignatures {
    /// Version of the published CVD these describe.
    pub version: u32,
    /// The legacy MD5 + RSA header signature verified.
    pub legacy: bool,
    /// The `.sign` file verified and is published; who signed it.
    pub sign: Option<Signer>,
    /// Unix time since which upstream has had no usable `.sign` for the
    /// versions we publish (absent, or one we could not use), if it has not.
    pub sign_missing_since: Option<u64>,
}

impl DbSignatures {
    /// `"both"`, `"sign"`, `"legacy"` or `"none"`.
    pub fn kinds(&self) -> &'static str {
        match (self.legacy, self.sign.is_some()) {
            (true, true) => "both",
            (false, true) => "sign",
            (true, false) => "legacy",
            (false, false) => "none",
        }
    }
}

/// Who signed a `.sign` (see [`SignedBy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// Signer certificate common name(s).
    pub signer: String,
    /// Its issuer's common name.
    pub issuer: String,
    /// SHA-256 of the signer certificate.
    pub fingerprint: String,
}

impl From<&SignedBy> for Signer {
    fn from(by: &SignedBy) -> Self {
        Self {
            signer: by.signer.clone(),
            issuer: by.issuer.clone(),
            fingerprint: by.fingerprint.clone(),
        }
    }
}

/// One upstream file the engine refused to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Unix time of the rejection.
    pub at: u64,
    /// The file (`daily.cvd`, `daily-27781.cdiff.sign`).
    pub file: String,
    /// Why, in one line.
    pub reason: String,
}

/// The most recent rejections, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rejections(VecDeque<Rejection>);

impl Rejections {
    /// Records one, dropping the oldest beyond [`KEPT_REJECTIONS`].
    pub fn push(&mut self, rejection: Rejection) {
        if self.0.len() == KEPT_REJECTIONS {
            self.0.pop_front();
        }
        self.0.push_back(rejection);
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Rejection> {
        self.0.iter()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_what_verified() {
        let mut s = DbSignatures::default();
        assert_eq!(s.kinds(), "none");
        s.legacy = true;
        assert_eq!(s.kinds(), "legacy");
        s.sign = Some(Signer {
            signer: "ClamAV_datafiles_release".into(),
            issuer: "x".into(),
            fingerprint: "00".into(),
        });
        assert_eq!(s.kinds(), "both");
        s.legacy = false;
        assert_eq!(s.kinds(), "sign");
    }

    #[test]
    fn rejections_keep_the_newest() {
        let mut r = Rejections::default();
        for i in 0..KEPT_REJECTIONS as u64 + 5 {
            r.push(Rejection {
                at: i,
                file: "daily.cvd".into(),
                reason: "bad".into(),
            });
        }
        assert_eq!(r.len(), KEPT_REJECTIONS);
        assert_eq!(r.iter().next().map(|r| r.at), Some(5));
    }
}
