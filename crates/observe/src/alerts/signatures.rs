//! What the signature alerts look at: per database, whether the published
//! CVD still carries the ClamAV 1.5 `.sign` it carried before, whether its
//! signer changed, and which upstream files the engine refused in the last
//! pass.
//!
//! The engine reports the present (which signatures the published CVD
//! carries, who signed it, since when upstream offers no usable `.sign`);
//! the past ("this database was published with a `.sign` before", "the
//! signer we saw last") is remembered here, from the statuses seen since
//! start. After a restart nothing is remembered: a `.sign` that went missing
//! before it does not raise `sign_missing` again, and the first signer seen
//! is nobody's change.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::sync::SyncStatus;
use crate::sync::signatures::{DbSignatures, Rejection, Signer};

/// Hex digits of a fingerprint shown where space is short.
pub const SHORT_FINGERPRINT: usize = 16;

/// The first [`SHORT_FINGERPRINT`] hex digits of a certificate fingerprint
/// (all of it if shorter).
pub fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..SHORT_FINGERPRINT).unwrap_or(fingerprint)
}

/// `CN (issuer ISSUER, 0123456789abcdef)` for a person.
pub fn describe(signer: &Signer) -> String {
    format!(
        "{} (issuer {}, {})",
        signer.signer,
        signer.issuer,
        short_fingerprint(&signer.fingerprint)
    )
}

/// A database published without the `.sign` it used to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSign {
    /// Database.
    pub database: String,
    /// The version published without a `.sign`.
    pub version: u32,
    /// Unix time since which upstream has offered no usable `.sign`.
    pub since: u64,
    /// The last version seen published with a verified `.sign`.
    pub last_signed: u32,
}

/// A database whose `.sign` is signed by someone else than before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerChange {
    /// Database.
    pub database: String,
    /// The version whose `.sign` showed the change.
    pub version: u32,
    /// The signer seen before.
    pub from: Signer,
    /// The signer now.
    pub to: Signer,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    signer: Option<Signer>,
    signed_version: Option<u32>,
}

/// The memory behind `sign_missing` and `signer_changed`.
#[derive(Debug, Clone, Default)]
pub struct SignWatch {
    seen: BTreeMap<String, Seen>,
}

impl SignWatch {
    /// Notes the published set's signatures; returns the signer changes
    /// since the last call (signer CN, issuer or fingerprint differs from
    /// the last `.sign` seen for that database, however long ago).
    pub fn update(&mut self, signatures: &BTreeMap<String, DbSignatures>) -> Vec<SignerChange> {
        let mut changes = Vec::new();
        for (db, sigs) in signatures {
            let Some(signer) = &sigs.sign else {
                continue;
            };
            let seen = self.seen.entry(db.clone()).or_default();
            if let Some(before) = &seen.signer
                && before != signer
            {
                changes.push(SignerChange {
                    database: db.clone(),
                    version: sigs.version,
                    from: before.clone(),
                    to: signer.clone(),
                });
            }
            seen.signer = Some(signer.clone());
            seen.signed_version = Some(
                seen.signed_version
                    .map_or(sigs.version, |v| v.max(sigs.version)),
            );
        }
        changes
    }

    /// Databases seen published with a verified `.sign` that are now
    /// published without one while upstream offers none
    /// (`sign_missing_since` set).
    pub fn missing(&self, signatures: &BTreeMap<String, DbSignatures>) -> Vec<MissingSign> {
        signatures
            .iter()
            .filter_map(|(db, sigs)| {
                let since = sigs.sign_missing_since.filter(|_| sigs.sign.is_none())?;
                let last_signed = self.seen.get(db)?.signed_version?;
                Some(MissingSign {
                    database: db.clone(),
                    version: sigs.version,
                    since,
                    last_signed,
                })
            })
            .collect()
    }
}

/// The summary and values of `sign_missing`.
pub fn missing_alert(missing: &[MissingSign]) -> (String, Value) {
    let what: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "{} {} (last signed {})",
                m.database, m.version, m.last_signed
            )
        })
        .collect();
    (
        format!(
            "upstream stopped providing .sign files: published without one: {}",
            what.join(", ")
        ),
        json!({"databases": missing.iter().map(|m| (m.database.clone(), json!({
            "version": m.version, "sign_missing_since": m.since, "last_signed_version": m.last_signed,
        }))).collect::<serde_json::Map<_, _>>()}),
    )
}

/// The summary and values of `signer_changed`.
pub fn change_alert(changes: &[SignerChange]) -> (String, Value) {
    let what: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{} {}: {} → {}",
                c.database,
                c.version,
                describe(&c.from),
                describe(&c.to)
            )
        })
        .collect();
    (
        format!(".sign signer changed: {}", what.join("; ")),
        json!({"databases": changes.iter().map(|c| (c.database.clone(), json!({
            "version": c.version, "from": c.from, "to": c.to,
        }))).collect::<serde_json::Map<_, _>>()}),
    )
}

/// The rejections of the pass running now, or else of the last one: those
/// at or after the last finished pass's start (all of them before the first
/// pass finished). Oldest first.
pub fn pass_rejections(status: &SyncStatus) -> Vec<Rejection> {
    let from = status.last_pass.as_ref().map_or(0, |p| p.started);
    status
        .rejections
        .iter()
        .filter(|r| r.at >= from)
        .cloned()
        .collect()
}

/// The summary and values of `upstream_rejected`.
pub fn rejection_alert(rejections: &[Rejection]) -> (String, Value) {
    let latest = rejections
        .last()
        .map_or(String::new(), |r| format!("{}: {}", r.file, r.reason));
    let summary = match rejections.len() {
        1 => format!("upstream file refused: {latest}"),
        n => format!("{n} upstream files refused in the last sync pass, latest {latest}"),
    };
    (summary, json!({"rejections": rejections}))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sync::state::PassRecord;

    /// A signer with `cn`, `issuer` and `fingerprint`.
    pub(crate) fn signer(cn: &str, issuer: &str, fingerprint: &str) -> Signer {
        Signer {
            signer: cn.into(),
            issuer: issuer.into(),
            fingerprint: fingerprint.into(),
        }
    }

    /// `daily` at `version`, with `sign` and `sign_missing_since`.
    pub(crate) fn daily(
        version: u32,
        sign: Option<Signer>,
        missing_since: Option<u64>,
    ) -> BTreeMap<String, DbSignatures> {
        BTreeMap::from([(
            "daily".to_owned(),
            DbSignatures {
                version,
                legacy: true,
                sign,
                sign_missing_since: missing_since,
            },
        )])
    }

    fn release() -> Signer {
        signer(
            "ClamAV_datafiles_release",
            "Cisco ClamAV Intermediate",
            "6b3d4e1b9a0c7f21aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55aa55",
        )
    }

    #[test]
    fn a_sign_that_stops_after_being_seen_is_missing() {
        let mut w = SignWatch::default();
        // Never seen signed: a mirror of an upstream without `.sign`s.
        let unsigned = daily(27780, None, Some(1000));
        assert!(w.update(&unsigned).is_empty());
        assert!(w.missing(&unsigned).is_empty());
        let signed = daily(27780, Some(release()), None);
        assert!(w.update(&signed).is_empty());
        assert!(w.missing(&signed).is_empty());
        // A newer version without one, upstream offering none since 2000.
        let stopped = daily(27781, None, Some(2000));
        w.update(&stopped);
        assert_eq!(
            w.missing(&stopped),
            vec![MissingSign {
                database: "daily".into(),
                version: 27781,
                since: 2000,
                last_signed: 27780,
            }]
        );
        // Without `sign_missing_since` the engine does not call it missing.
        assert!(w.missing(&daily(27781, None, None)).is_empty());
        // It came back.
        let back = daily(27782, Some(release()), None);
        w.update(&back);
        assert!(w.missing(&back).is_empty());
    }

    #[test]
    fn signer_issuer_or_fingerprint_changes_are_changes() {
        let mut w = SignWatch::default();
        assert!(w.update(&daily(1, Some(release()), None)).is_empty());
        assert!(w.update(&daily(2, Some(release()), None)).is_empty());
        for changed in [
            signer("someone_else", &release().issuer, &release().fingerprint),
            signer(&release().signer, "Other CA", &release().fingerprint),
            signer(&release().signer, &release().issuer, "00ff"),
        ] {
            let mut w = w.clone();
            let c = w.update(&daily(3, Some(changed.clone()), None));
            assert_eq!(c.len(), 1, "{changed:?}");
            assert_eq!(
                (c[0].version, &c[0].from, &c[0].to),
                (3, &release(), &changed)
            );
            // Reported once: the new signer is now the one last seen.
            assert!(w.update(&daily(4, Some(changed), None)).is_empty());
        }
        // A gap without `.sign` does not reset what was seen last.
        w.update(&daily(3, None, Some(5)));
        let c = w.update(&daily(4, Some(signer("x", "y", "z")), None));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn rejections_of_the_last_pass() {
        let mut status = SyncStatus::default();
        for (at, file) in [
            (100, "daily.cvd"),
            (205, "daily-9.cdiff.sign"),
            (206, "main.cvd"),
        ] {
            status.rejections.push(Rejection {
                at,
                file: file.into(),
                reason: "invalid signature: line 1: certificate has expired".into(),
            });
        }
        assert_eq!(pass_rejections(&status).len(), 3, "before any pass ended");
        status.last_pass = Some(PassRecord {
            started: 200,
            finished: 210,
            ok: false,
            error: None,
        });
        let last = pass_rejections(&status);
        assert_eq!(last.len(), 2);
        let (summary, values) = rejection_alert(&last);
        assert_eq!(
            summary,
            "2 upstream files refused in the last sync pass, latest main.cvd: invalid signature: line 1: certificate has expired"
        );
        assert_eq!(values["rejections"][0]["file"], "daily-9.cdiff.sign");
        status.last_pass = Some(PassRecord {
            started: 300,
            finished: 310,
            ok: true,
            error: None,
        });
        assert!(pass_rejections(&status).is_empty());
    }

    #[test]
    fn summaries_name_database_version_and_signers() {
        let (s, v) = change_alert(&[SignerChange {
            database: "daily".into(),
            version: 27781,
            from: release(),
            to: signer(
                "ClamAV_datafiles_release_2",
                "Cisco CA 2",
                "abcdef0123456789ffff",
            ),
        }]);
        assert_eq!(
            s,
            ".sign signer changed: daily 27781: ClamAV_datafiles_release (issuer Cisco ClamAV Intermediate, 6b3d4e1b9a0c7f21) → ClamAV_datafiles_release_2 (issuer Cisco CA 2, abcdef0123456789)"
        );
        assert_eq!(v["databases"]["daily"]["to"]["issuer"], "Cisco CA 2");
        let (s, v) = missing_alert(&[MissingSign {
            database: "daily".into(),
            version: 27781,
            since: 2000,
            last_signed: 27780,
        }]);
        assert_eq!(
            s,
            "upstream stopped providing .sign files: published without one: daily 27781 (last signed 27780)"
        );
        assert_eq!(v["databases"]["daily"]["sign_missing_since"], 2000);
    }
}
