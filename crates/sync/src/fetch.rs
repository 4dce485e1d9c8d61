//! Getting one file from upstream into the served root, politely and
//! verified: downloads under cool-downs, a request budget and retries; a
//! file and its ClamAV 1.5 `.sign` fetched, verified and judged together
//! ([`super::policy`]), then published together, the `.sign` first, so a
//! client that has just downloaded a file never finds its `.sign` missing.
//!
//! Also the back-fill of `.sign` files for what is already published (a
//! mirror upgraded from a version that did not keep them, or an upstream
//! that published a `.sign` after its file).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use thiserror::Error;

use super::backoff::Backoff;
use super::engine::{Engine, HISTORY_RETRY, SIGN_RETRY, unix_now};
use super::policy::{Accepted, SignVerdict};
use super::publish::{self, Staged};
use super::report::{DbReport, Progress, SyncError};
use super::signatures::{DbSignatures, Signer};
use super::state::SyncState;
use super::upstream::FetchError;
use crate::cvd::sign::{self, SignError, SignVerifier};
use crate::cvd::{self, Expected, HeaderSignature, Legacy, Signed, TrustedKeys, VerifyError};

/// Longest wait between retries inside one pass.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Why one file was not staged.
#[derive(Debug, Error)]
pub(super) enum FileError {
    #[error(transparent)]
    Fetch(FetchError),
    #[error("cooling down after 429 until {}", httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(*.0)))]
    CoolingDown(u64),
    #[error("request budget for this file used up for this hour")]
    Budget,
    #[error("rejected: {0}")]
    Verify(VerifyError),
    #[error("rejected: upstream served version {got}, expected {expected}")]
    WrongVersion { expected: u32, got: u32 },
    #[error("rejected: {0}")]
    Policy(String),
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
}

/// What a staged file must be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect<'a> {
    Cvd { db: &'a str, at_least: u32 },
    Cdiff { version: u32 },
}

/// A verified file and its verified `.sign` (if upstream had one), staged.
pub(super) struct Pair {
    file: Staged,
    sign: Option<Staged>,
    /// The file's version (from a CVD's header; a cdiff's number).
    pub version: u32,
    /// What the signature policy decided.
    pub accepted: Accepted,
}

impl Pair {
    /// Publishes the `.sign`, then the file (durably, in that order).
    pub fn publish(&self, root: &Path) -> io::Result<()> {
        publish::publish(root, self.sign.as_slice(), Some(&self.file))
    }

    /// Drops the staged files.
    pub fn discard(&self) {
        for staged in std::iter::once(&self.file).chain(&self.sign) {
            let _ = std::fs::remove_file(&staged.path);
        }
    }
}

fn staging_path(root: &Path, name: &str) -> PathBuf {
    publish::staging_dir(root).join(format!("{name}.part"))
}

impl Engine {
    /// Fetches, verifies and publishes one cdiff with its `.sign`.
    /// `Ok(Err(reason))` when a required cdiff is missing or rejected; a
    /// history cdiff that is missing is fine.
    pub(super) async fn fetch_cdiff(
        &self,
        state: &mut SyncState,
        db: &str,
        version: u32,
        required: bool,
        report: &mut DbReport,
        progress: &dyn Progress,
    ) -> Result<Result<(), String>, SyncError> {
        let name = format!("{db}-{version}.cdiff");
        if self.config.root.join(&name).exists() {
            return Ok(Ok(()));
        }
        if !required
            && !self.upstream().is_local()
            && state
                .file(&name)
                .missing_since
                .is_some_and(|since| unix_now().saturating_sub(since) < HISTORY_RETRY.as_secs())
        {
            // History upstream lacked recently: not asked again before a day passed.
            return Ok(Ok(()));
        }
        match self
            .fetch_pair(state, &name, Expect::Cdiff { version }, progress)
            .await
        {
            Ok(pair) => {
                state.file(&name).missing_since = None;
                pair.publish(&self.config.root)?;
                state.published_at.insert(name.clone(), unix_now());
                report.fetched.push(name);
                Ok(Ok(()))
            }
            Err(FileError::Fetch(FetchError::Forbidden)) => Err(self.forbidden(state)),
            // A bundle will not grow the file if we wait: as its mirror did,
            // publish without it (clients too far behind take the whole CVD).
            Err(FileError::Fetch(FetchError::NotFound)) if self.upstream().is_local() => {
                if required {
                    tracing::warn!(file = %name, "required cdiff not in the local upstream; publishing without it (clients at older versions will download the whole CVD)");
                }
                Ok(Ok(()))
            }
            Err(FileError::Fetch(FetchError::NotFound)) => {
                let now = unix_now();
                if !required {
                    state.file(&name).missing_since = Some(now);
                    tracing::debug!(file = %name, "cdiff history not available upstream; asking again in a day");
                    return Ok(Ok(()));
                }
                let since = *state.file(&name).missing_since.get_or_insert(now);
                let missing_for = Duration::from_secs(now.saturating_sub(since));
                if self
                    .demand
                    .asked_since(&name, since.min(now.saturating_sub(3600)))
                {
                    tracing::warn!(file = %name, "required cdiff missing upstream and clients are already asking for it; publishing without it at once (they fall back to the whole CVD either way, and should get the new one)");
                    return Ok(Ok(()));
                }
                if missing_for >= self.config.missing_cdiff_grace {
                    tracing::warn!(file = %name, missing_for = %humantime::format_duration(missing_for), "required cdiff still missing upstream after the grace period; publishing without it (clients at older versions will download the whole CVD, as they would from upstream)");
                    return Ok(Ok(()));
                }
                Ok(Err(format!(
                    "{name}: not found upstream (404); waiting up to {} for it before publishing without it",
                    humantime::format_duration(self.config.missing_cdiff_grace)
                )))
            }
            Err(e) if required => Ok(Err(format!("{name}: {e}"))),
            Err(e) => {
                tracing::info!(file = %name, reason = %e, "cdiff history not fetched; skipped");
                Ok(Ok(()))
            }
        }
    }

    /// Downloads `name` and its `.sign` into staging, verifies both and
    /// applies the signature policy. A rejected file leaves nothing behind.
    pub(super) async fn fetch_pair(
        &self,
        state: &mut SyncState,
        name: &str,
        expect: Expect<'_>,
        progress: &dyn Progress,
    ) -> Result<Pair, FileError> {
        let root = &self.config.root;
        let path = staging_path(root, name);
        self.fetch_raw(state, name, &path, self.config.attempts, progress)
            .await?;
        state.file(name).partial_validator = None;
        if let Expect::Cdiff { version } = expect
            && std::fs::metadata(&path)?.len() == 0
        {
            // ClamAV's zero-byte cdiff ("fetch the whole CVD") carries no
            // signature of either kind and asks nothing of the policy.
            progress.finished(name, "verified");
            return Ok(Pair {
                file: Staged {
                    path,
                    name: name.to_owned(),
                },
                sign: None,
                version,
                accepted: Accepted {
                    sign: None,
                    legacy: false,
                    warning: None,
                },
            });
        }
        let (version, legacy) =
            match verify_legacy(path.clone(), expect, self.config.keys.clone()).await {
                Ok(verified) => verified,
                Err(e) => {
                    progress.finished(name, "rejected");
                    let _ = std::fs::remove_file(&path);
                    self.reject(name, &e.to_string());
                    return Err(e);
                }
            };
        let sign_name = match expect {
            Expect::Cvd { db, .. } => sign::cvd_sign_name(db, version),
            Expect::Cdiff { .. } => sign::cdiff_sign_name(name),
        };
        let (verdict, staged_sign) = self
            .fetch_sign(state, &sign_name, &path, progress)
            .await
            .map_err(|e| match e {
                SyncError::Forbidden { .. } => FileError::Fetch(FetchError::Forbidden),
                other => FileError::Io(io::Error::other(other.to_string())),
            })?;
        match self.config.signatures.judge(&legacy, &verdict) {
            Ok(accepted) => {
                if let Some(warning) = &accepted.warning {
                    tracing::warn!(file = name, "{warning}");
                }
                progress.finished(name, "verified");
                Ok(Pair {
                    file: Staged {
                        path,
                        name: name.to_owned(),
                    },
                    sign: staged_sign,
                    version,
                    accepted,
                })
            }
            Err(reason) => {
                progress.finished(name, "rejected");
                let _ = std::fs::remove_file(&path);
                if let Some(sign) = staged_sign {
                    let _ = std::fs::remove_file(sign.path);
                }
                self.reject(name, &reason);
                Err(FileError::Policy(reason))
            }
        }
    }

    /// Fetches `sign_name` and verifies it over the file at `signed`. The
    /// staged `.sign` is returned only when it verified; anything else is
    /// deleted and described by the verdict. Only a `403` is an error.
    async fn fetch_sign(
        &self,
        state: &mut SyncState,
        sign_name: &str,
        signed: &Path,
        progress: &dyn Progress,
    ) -> Result<(SignVerdict, Option<Staged>), SyncError> {
        let dest = staging_path(&self.config.root, sign_name);
        let fetched = self.fetch_raw(state, sign_name, &dest, 1, progress).await;
        state.file(sign_name).partial_validator = None;
        let verdict = match fetched {
            Ok(()) => {
                state.file(sign_name).missing_since = None;
                verify_sign(
                    self.config.sign_verifier.clone(),
                    signed.to_owned(),
                    dest.clone(),
                    self.verify_time(),
                )
                .await
            }
            Err(FileError::Fetch(FetchError::Forbidden)) => {
                let _ = std::fs::remove_file(&dest);
                return Err(self.forbidden(state));
            }
            Err(FileError::Fetch(FetchError::NotFound)) => {
                state
                    .file(sign_name)
                    .missing_since
                    .get_or_insert(unix_now());
                SignVerdict::Absent
            }
            Err(e) => {
                SignVerdict::Failed(SignError::Unusable(format!("could not be fetched: {e}")))
            }
        };
        match &verdict {
            SignVerdict::Verified(by) => {
                tracing::debug!(file = sign_name, signer = %by.signer, "signature verified");
                Ok((
                    verdict,
                    Some(Staged {
                        path: dest,
                        name: sign_name.to_owned(),
                    }),
                ))
            }
            SignVerdict::Failed(e) => {
                // Not asked for again before the retry interval, like a 404.
                state
                    .file(sign_name)
                    .missing_since
                    .get_or_insert(unix_now());
                tracing::warn!(file = sign_name, reason = %e, "signature file not published");
                if e.is_invalid() {
                    self.reject(sign_name, &e.to_string());
                } else {
                    self.set_aside(sign_name, &e.to_string());
                }
                let _ = std::fs::remove_file(&dest);
                Ok((verdict, None))
            }
            SignVerdict::Absent => {
                tracing::debug!(file = sign_name, "upstream has no signature file");
                let _ = std::fs::remove_file(&dest);
                Ok((verdict, None))
            }
        }
    }

    /// Fetches the `.sign` files the published set of `db` lacks: the
    /// current CVD's (asked again hourly while upstream lacks it) and each
    /// kept cdiff's (daily). Each is verified over the published file and
    /// published only if it verifies.
    pub(super) async fn backfill_signs(
        &self,
        state: &mut SyncState,
        db: &str,
        report: &mut DbReport,
        progress: &dyn Progress,
    ) -> Result<(), SyncError> {
        let root = self.config.root.clone();
        let published = publish::scan(&root, db)?;
        // (the signed file, its .sign, how long a 404 is believed)
        let mut wanted: Vec<(String, String, Duration)> = Vec::new();
        if let Some(version) = published.cvd_version {
            wanted.push((
                format!("{db}.cvd"),
                sign::cvd_sign_name(db, version),
                SIGN_RETRY,
            ));
        }
        let newest_cdiff = published.cdiffs.last().copied();
        for &version in published.cdiffs.iter().rev() {
            let cdiff = format!("{db}-{version}.cdiff");
            let retry = if Some(version) == newest_cdiff {
                SIGN_RETRY
            } else {
                HISTORY_RETRY
            };
            wanted.push((cdiff.clone(), sign::cdiff_sign_name(&cdiff), retry));
        }
        let now = unix_now();
        for (signed, sign_name, retry) in wanted {
            if root.join(&sign_name).exists() {
                continue;
            }
            let asked_recently = !self.upstream().is_local()
                && state
                    .file(&sign_name)
                    .missing_since
                    .is_some_and(|since| now.saturating_sub(since) < retry.as_secs());
            if asked_recently {
                continue;
            }
            let signed_path = root.join(&signed);
            if std::fs::metadata(&signed_path)
                .map(|m| m.len())
                .unwrap_or(0)
                == 0
            {
                // ClamAV's zero-byte "fetch the whole CVD" cdiffs carry no signature.
                continue;
            }
            let (verdict, staged) = self
                .fetch_sign(state, &sign_name, &signed_path, progress)
                .await?;
            if let Some(staged) = staged {
                publish::publish(&root, std::slice::from_ref(&staged), None)?;
                tracing::info!(file = %sign_name, "signature back-filled for a published file");
                report.fetched.push(sign_name.clone());
                if let (SignVerdict::Verified(by), Some(version)) =
                    (&verdict, published.cvd_version)
                    && sign_name == sign::cvd_sign_name(db, version)
                {
                    let legacy = state
                        .signatures
                        .get(db)
                        .is_some_and(|s| s.version == version && s.legacy);
                    self.record_signatures(
                        state,
                        db,
                        DbSignatures {
                            version,
                            legacy,
                            sign: Some(Signer::from(by)),
                            sign_missing_since: None,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Downloads with cool-downs, budget and retries.
    pub(super) async fn fetch_raw(
        &self,
        state: &mut SyncState,
        name: &str,
        dest: &Path,
        attempts: u32,
        progress: &dyn Progress,
    ) -> Result<(), FileError> {
        let now = unix_now();
        let max_per_hour = self.config.max_requests_per_file_per_hour as usize;
        // Etiquette is owed to remote upstreams, not to a local bundle.
        let polite = !self.upstream().is_local();
        let file = state.file(name);
        match file.cool_down_until {
            _ if !polite => {}
            Some(until) if until > now => return Err(FileError::CoolingDown(until)),
            Some(_) => file.cool_down_until = None,
            None => {}
        }
        file.recent_requests
            .retain(|&t| now.saturating_sub(t) < 3600);
        let mut backoff = Backoff::new(self.config.retry_base, MAX_RETRY_DELAY);
        for attempt in 1..=attempts.max(1) {
            let file = state.file(name);
            if polite {
                if file.recent_requests.len() >= max_per_hour {
                    return Err(FileError::Budget);
                }
                file.recent_requests.push(unix_now());
            }
            let validator = file.partial_validator.clone();
            let mut validator_out = None;
            progress.started(name);
            let result = self
                .upstream()
                .download(
                    name,
                    dest,
                    validator.as_deref(),
                    &mut validator_out,
                    &mut |done, total| progress.advanced(name, done, total),
                )
                .await;
            if validator_out.is_some() {
                state.file(name).partial_validator = validator_out;
            }
            match result {
                Ok(_) => return Ok(()),
                Err(FetchError::RateLimited { retry_after }) => {
                    let until = unix_now() + retry_after.as_secs();
                    state.file(name).cool_down_until = Some(until);
                    tracing::warn!(
                        file = name,
                        retry_after_secs = retry_after.as_secs(),
                        "upstream rate limit (429); file cooling down"
                    );
                    let _ = self.state_file.save(state);
                    progress.finished(name, "rate limited");
                    return Err(FileError::Fetch(FetchError::RateLimited { retry_after }));
                }
                Err(e) if e.is_retryable() && attempt < attempts => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(file = name, error = %e, attempt, retry_in = ?delay, "download failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    progress.finished(name, "failed");
                    return Err(FileError::Fetch(e));
                }
            }
        }
        Err(FileError::Budget)
    }
}

/// Verifies a staged file's structure and legacy signature off the async
/// threads (hashing 160 MB takes a while): its version and the legacy
/// verdict, which the signature policy weighs against the `.sign`.
async fn verify_legacy(
    path: PathBuf,
    expect: Expect<'_>,
    keys: TrustedKeys,
) -> Result<(u32, Legacy), FileError> {
    let expect_owned = match expect {
        Expect::Cvd { db, at_least } => (Some(db.to_owned()), at_least),
        Expect::Cdiff { version } => (None, version),
    };
    let joined = tokio::task::spawn_blocking(move || -> Result<(u32, Legacy), FileError> {
        match expect_owned {
            (Some(db), at_least) => {
                let expected = Expected::cvd(&db).header_signature(HeaderSignature::Reported);
                let verified =
                    cvd::verify_file(&path, &expected, &keys).map_err(FileError::Verify)?;
                let got = verified.header.version;
                if got < at_least {
                    return Err(FileError::WrongVersion {
                        expected: at_least,
                        got,
                    });
                }
                Ok((got, verified.legacy))
            }
            (None, version) => match cvd::verify_cdiff_file(&path, Some(version), &keys) {
                Ok(_) => Ok((version, Legacy::Verified)),
                Err(
                    e @ (VerifyError::BadSignature(Signed::Cdiff)
                    | VerifyError::SignatureEncoding(Signed::Cdiff, _)),
                ) => Ok((version, Legacy::Failed(e.to_string()))),
                Err(e) => Err(FileError::Verify(e)),
            },
        }
    })
    .await;
    joined.map_err(|e| FileError::Io(io::Error::other(e)))?
}

/// Verifies a staged `.sign` over `signed`, off the async threads.
async fn verify_sign(
    verifier: SignVerifier,
    signed: PathBuf,
    sign_path: PathBuf,
    at: std::time::SystemTime,
) -> SignVerdict {
    let joined =
        tokio::task::spawn_blocking(move || verifier.verify_file(&signed, &sign_path, at)).await;
    match joined {
        Ok(Ok(Ok(by))) => SignVerdict::Verified(by),
        Ok(Ok(Err(e))) => SignVerdict::Failed(e),
        Ok(Err(e)) => SignVerdict::Failed(SignError::Unusable(format!("cannot read: {e}"))),
        Err(e) => SignVerdict::Failed(SignError::Unusable(format!("verification failed: {e}"))),
    }
}
