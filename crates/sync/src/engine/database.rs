//! One database within a sync pass: its plan, its cdiffs, its CVD, and what
//! follows once its files are in place (back-filled `.sign` files, its
//! signature status, old files retired).
//!
//! Verified cdiffs are published as soon as they are verified, because every
//! patch a client finds is a whole-CVD download it does not make; a CVD is
//! published only once every cdiff leading to it is.

use std::io;
use std::time::SystemTime;

use super::{Engine, HISTORY_RETRY, unix_now};
use crate::cvd::{self, Expected, sign};
use crate::plan::{self, Plan};
use crate::publish;
use crate::report::{DbOutcome, DbReport, Progress, SyncError};
use crate::signatures::{DbSignatures, Signer};
use crate::state::SyncState;
use crate::upstream::FetchError;

impl Engine {
    pub(super) async fn sync_db(
        &self,
        state: &mut SyncState,
        db: &str,
        target: u32,
        progress: &dyn Progress,
    ) -> Result<DbReport, SyncError> {
        let root = self.config.root.clone();
        let before = publish::scan(&root, db)?;
        let mut report = DbReport {
            name: db.to_owned(),
            before: before.cvd_version,
            after: before.cvd_version,
            advertised: target,
            fetched: Vec::new(),
            outcome: DbOutcome::UpToDate,
        };
        let input = plan::DbState {
            name: db.to_owned(),
            published: before.cvd_version,
            cdiffs: before.cdiffs,
            advertised: target,
        };
        let mut update = match plan::plan(&input, self.config.backfill) {
            Plan::UpToDate => {
                self.finish_db(state, db, &mut report, progress).await?;
                return Ok(report);
            }
            Plan::UpstreamBehind { .. } => {
                report.outcome = DbOutcome::UpstreamBehind;
                self.refresh_signatures(state, db).await?;
                return Ok(report);
            }
            Plan::Update(update) => update,
        };
        let now = unix_now();
        update.cdiffs.retain(|&v| {
            v > update.required_above
                || self.upstream().is_local()
                || state
                    .file(&format!("{db}-{v}.cdiff"))
                    .missing_since
                    .is_none_or(|since| now.saturating_sub(since) >= HISTORY_RETRY.as_secs())
        });
        for &version in &update.cdiffs {
            let required = version > update.required_above;
            if let Err(reason) = self
                .fetch_cdiff(state, db, version, required, &mut report, progress)
                .await?
            {
                report.outcome = DbOutcome::Failed(reason);
                return Ok(report);
            }
        }
        if update.cvd
            && let Err(reason) = self
                .update_cvd(state, db, target, &mut report, progress)
                .await?
        {
            report.outcome = DbOutcome::Failed(reason);
            return Ok(report);
        }
        if !report.fetched.is_empty() {
            report.outcome = DbOutcome::Updated;
        }
        self.finish_db(state, db, &mut report, progress).await?;
        Ok(report)
    }

    /// Fetches, verifies and publishes `<db>.cvd` at `target` or newer with
    /// its `.sign` and the cdiffs leading to it. `Ok(Err(reason))` when
    /// it was not published.
    async fn update_cvd(
        &self,
        state: &mut SyncState,
        db: &str,
        target: u32,
        report: &mut DbReport,
        progress: &dyn Progress,
    ) -> Result<Result<(), String>, SyncError> {
        let name = format!("{db}.cvd");
        let expect = crate::fetch::Expect::Cvd {
            db,
            at_least: target,
        };
        let pair = match self.fetch_pair(state, &name, expect, progress).await {
            Ok(pair) => pair,
            Err(crate::fetch::FileError::Fetch(FetchError::Forbidden)) => {
                return Err(self.forbidden(state));
            }
            Err(e) => return Ok(Err(format!("{name}: {e}"))),
        };
        // Upstream moved on since the version lookup: the CVD still needs its patches.
        for v in target + 1..=pair.version {
            if let Err(reason) = self
                .fetch_cdiff(state, db, v, true, report, progress)
                .await?
            {
                pair.discard();
                return Ok(Err(reason));
            }
        }
        let previous = report.before;
        let signatures = DbSignatures {
            version: pair.version,
            legacy: pair.accepted.legacy,
            sign: pair.accepted.sign.as_ref().map(Signer::from),
            sign_missing_since: None,
        };
        pair.publish(&self.config.root)?;
        if let Some(old) = previous.filter(|&old| old != pair.version) {
            state
                .retired_at
                .insert(sign::cvd_sign_name(db, old), unix_now());
        }
        self.record_signatures(state, db, signatures);
        report.fetched.push(name);
        report.after = Some(pair.version);
        Ok(Ok(()))
    }

    /// After a database's files are in place: back-fill `.sign` files the
    /// published set lacks, bring its signature status up to date, and
    /// retire old files.
    async fn finish_db(
        &self,
        state: &mut SyncState,
        db: &str,
        report: &mut DbReport,
        progress: &dyn Progress,
    ) -> Result<(), SyncError> {
        self.backfill_signs(state, db, report, progress).await?;
        self.refresh_signatures(state, db).await?;
        self.prune(state, db)?;
        Ok(())
    }

    /// Stores what a published CVD's signatures are, keeping since when
    /// upstream has offered no usable `.sign` for it.
    pub(crate) fn record_signatures(&self, state: &mut SyncState, db: &str, mut new: DbSignatures) {
        if new.sign.is_none() {
            new.sign_missing_since = Some(
                state
                    .signatures
                    .get(db)
                    .and_then(|old| old.sign_missing_since)
                    .unwrap_or_else(unix_now),
            );
        }
        state.signatures.insert(db.to_owned(), new);
    }

    /// Makes sure the state describes the published CVD's signatures: a CVD
    /// published by an older cvdmirror, or by hand, is verified once.
    async fn refresh_signatures(&self, state: &mut SyncState, db: &str) -> Result<(), SyncError> {
        let root = &self.config.root;
        let Some(version) = publish::scan(root, db)?.cvd_version else {
            return Ok(());
        };
        let sign_path = root.join(sign::cvd_sign_name(db, version));
        let known = state.signatures.get(db).cloned();
        if let Some(known) = &known
            && known.version == version
            && known.sign.is_some() == sign_path.exists()
        {
            return Ok(());
        }
        let cvd_path = root.join(format!("{db}.cvd"));
        let keys = self.config.keys.clone();
        let verifier = self.config.sign_verifier.clone();
        let at = self.verify_time();
        let expected = Expected::cvd(db).header_signature(cvd::HeaderSignature::Reported);
        let (legacy, signed) = tokio::task::spawn_blocking(move || {
            let legacy = cvd::verify_file(&cvd_path, &expected, &keys)
                .map(|v| v.legacy == cvd::Legacy::Verified)
                .unwrap_or(false);
            let signed = verifier
                .verify_file(&cvd_path, &sign_path, at)
                .ok()
                .and_then(Result::ok);
            (legacy, signed)
        })
        .await
        .map_err(|e| SyncError::Io(io::Error::other(e)))?;
        self.record_signatures(
            state,
            db,
            DbSignatures {
                version,
                legacy,
                sign: signed.as_ref().map(Signer::from),
                sign_missing_since: None,
            },
        );
        Ok(())
    }

    fn prune(&self, state: &mut SyncState, db: &str) -> io::Result<()> {
        let now = SystemTime::now();
        let removed = publish::prune(&self.config.root, db, self.config.retention, now, |name| {
            state.published_at.get(name).copied()
        })?;
        for name in removed {
            tracing::info!(file = %name, "cdiff past retention removed");
            state.published_at.remove(&name);
            state.files.remove(&name);
            state.files.remove(&sign::cdiff_sign_name(&name));
        }
        let retired = publish::prune_cvd_signs(
            &self.config.root,
            db,
            self.config.sign_grace,
            now,
            &mut state.retired_at,
        )?;
        for name in retired {
            tracing::info!(file = %name, "signature of a replaced CVD removed after its grace period");
            state.files.remove(&name);
        }
        Ok(())
    }
}
