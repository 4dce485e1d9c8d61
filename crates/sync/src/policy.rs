//! Which signatures an upstream file must carry before it is published:
//! the legacy one (MD5 + RSA in a CVD header, RSA in a cdiff footer), the
//! ClamAV 1.5 `.sign` beside it, or both, decided per mirror.
//!
//! The rules follow what clients do with a file, so the mirror never
//! publishes something its clients would refuse:
//! - a `.sign` that is present but *invalid* rejects the file whatever the
//!   policy: freshclam 1.5 refuses such a file even when its legacy
//!   signature is fine, and falls back to downloading the whole database;
//! - a `.sign` that is absent or unusable (ClamAV's "cannot verify") is
//!   never published, and counts as absent: clients fall back to the legacy
//!   signature in both cases;
//! - [`SignaturePolicy::Either`] (default) accepts a verified `.sign` or,
//!   without one, a verified legacy signature: exactly freshclam 1.5's rule,
//!   and it keeps a mirror updating while upstream moves from one scheme
//!   to the other (a CVD that carries only the new signature included);
//! - [`SignaturePolicy::Sign`] requires the `.sign` (a fleet of FIPS-mode
//!   clients, which cannot use anything else);
//! - [`SignaturePolicy::Both`] requires both (clients of ClamAV before 1.5
//!   and FIPS-mode clients served from one mirror).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cvd::Legacy;
use crate::cvd::sign::{SignError, SignedBy};

/// Which signatures a file must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// A verified `.sign`, or without one a verified legacy signature.
    #[default]
    Either,
    /// A verified `.sign`.
    Sign,
    /// A verified `.sign` and a verified legacy signature.
    Both,
}

impl fmt::Display for SignaturePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Either => "either",
            Self::Sign => "sign",
            Self::Both => "both",
        })
    }
}

impl FromStr for SignaturePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "either" => Ok(Self::Either),
            "sign" => Ok(Self::Sign),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "unknown signature policy {other:?} (expected \"either\", \"sign\" or \"both\")"
            )),
        }
    }
}

/// The verdict on a file's `.sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignVerdict {
    /// Upstream has none (`404`).
    Absent,
    /// Verified.
    Verified(SignedBy),
    /// Present but not usable, or checked and failed.
    Failed(SignError),
}

/// What the policy decided for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `.sign` to publish beside the file, if it verified.
    pub sign: Option<SignedBy>,
    /// Whether the legacy signature verified.
    pub legacy: bool,
    /// Something operators should know although the file is accepted.
    pub warning: Option<String>,
}

impl SignaturePolicy {
    /// Accepts or rejects a file given both verdicts; the error is the
    /// reason, fit for a log line and the status page.
    pub fn judge(self, legacy: &Legacy, sign: &SignVerdict) -> Result<Accepted, String> {
        let legacy_ok = *legacy == Legacy::Verified;
        let signed_by = match sign {
            SignVerdict::Failed(e @ SignError::Invalid(_)) => {
                let also = match legacy {
                    Legacy::Failed(why) => format!("; legacy signature: {why}"),
                    _ => String::new(),
                };
                return Err(format!(
                    ".sign present but {e} (ClamAV 1.5 clients would refuse the file){also}"
                ));
            }
            SignVerdict::Verified(by) => Some(by.clone()),
            SignVerdict::Absent | SignVerdict::Failed(SignError::Unusable(_)) => None,
        };
        let missing_sign = || match sign {
            SignVerdict::Failed(e) => format!("the .sign is required but {e}"),
            _ => "the .sign is required but upstream has none".to_owned(),
        };
        let legacy_reason = || match legacy {
            Legacy::Absent => "no legacy signature".to_owned(),
            Legacy::Failed(why) => format!("legacy signature: {why}"),
            Legacy::Verified => String::new(),
        };
        match (self, &signed_by, legacy_ok) {
            (Self::Both, None, _) | (Self::Sign, None, _) => Err(missing_sign()),
            (Self::Both, Some(_), false) => Err(format!(
                "the legacy signature is required but there is {}",
                legacy_reason()
            )),
            (Self::Either, None, false) => {
                Err(format!("{} and no verified .sign", legacy_reason()))
            }
            (_, _, _) => Ok(Accepted {
                warning: match legacy {
                    Legacy::Failed(why) => Some(format!(
                        "accepted on its .sign, but its legacy signature fails ({why}): clients before ClamAV 1.5 will refuse it"
                    )),
                    _ => None,
                },
                sign: signed_by,
                legacy: legacy_ok,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by() -> SignedBy {
        SignedBy {
            signer: "ClamAV_datafiles_release".into(),
            issuer: "root".into(),
            fingerprint: "00".into(),
            line: 1,
        }
    }

    /// Every policy against every combination of verdicts.
    #[test]
    fn decisions_follow_the_documented_table() {
        use SignaturePolicy::*;
        let legacies = [
            ("legacy ok", Legacy::Verified),
            ("legacy absent", Legacy::Absent),
            ("legacy bad", Legacy::Failed("bad".into())),
        ];
        let signs = [
            ("sign ok", SignVerdict::Verified(by())),
            ("sign absent", SignVerdict::Absent),
            (
                "sign unusable",
                SignVerdict::Failed(SignError::Unusable("x".into())),
            ),
            (
                "sign invalid",
                SignVerdict::Failed(SignError::Invalid("x".into())),
            ),
        ];
        // (policy, legacy, sign) → accepted?
        let expected = |p: SignaturePolicy, l: usize, s: usize| -> bool {
            let sign_ok = s == 0;
            let invalid = s == 3;
            let legacy_ok = l == 0;
            !invalid
                && match p {
                    Either => sign_ok || legacy_ok,
                    Sign => sign_ok,
                    Both => sign_ok && legacy_ok,
                }
        };
        for p in [Either, Sign, Both] {
            for (l, (ln, legacy)) in legacies.iter().enumerate() {
                for (s, (sn, sign)) in signs.iter().enumerate() {
                    let got = p.judge(legacy, sign);
                    assert_eq!(got.is_ok(), expected(p, l, s), "{p} / {ln} / {sn}: {got:?}");
                    if let Ok(accepted) = got {
                        assert_eq!(accepted.sign.is_some(), s == 0);
                        assert_eq!(accepted.legacy, l == 0);
                        assert_eq!(accepted.warning.is_some(), l == 2, "{p} / {ln} / {sn}");
                    }
                }
            }
        }
    }

    #[test]
    fn reasons_say_what_is_missing() {
        let err = SignaturePolicy::Sign
            .judge(&Legacy::Verified, &SignVerdict::Absent)
            .unwrap_err();
        assert!(err.contains("upstream has none"), "{err}");
        let err = SignaturePolicy::Either
            .judge(
                &Legacy::Verified,
                &SignVerdict::Failed(SignError::Invalid("certificate has expired".into())),
            )
            .unwrap_err();
        assert!(err.contains("certificate has expired"), "{err}");
        assert!(err.contains("would refuse"), "{err}");
        let err = SignaturePolicy::Either
            .judge(&Legacy::Absent, &SignVerdict::Absent)
            .unwrap_err();
        assert!(err.contains("no legacy signature"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for p in [
            SignaturePolicy::Either,
            SignaturePolicy::Sign,
            SignaturePolicy::Both,
        ] {
            assert_eq!(p.to_string().parse::<SignaturePolicy>(), Ok(p));
        }
        assert!("any".parse::<SignaturePolicy>().is_err());
    }
}
