//! One sync pass, end to end, and the status it leaves for health checks.
//!
//! Passes are single-flight: a trigger while one runs waits for it rather
//! than starting a second. Database failures are contained per database: a
//! `429` cool-down on `main.cvd` does not hold back `daily`. Verified cdiffs
//! are published as soon as they are verified, because every patch a client
//! finds is a whole-CVD download it does not make; a CVD is published only
//! once every cdiff leading to it is.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::{Mutex, watch};

use super::SyncConfig;
use super::backoff::Backoff;
use super::plan::{self, Plan};
use super::publish::{self, Staged};
use super::state::{PassRecord, StateFile, SyncState};
use super::upstream::{FetchError, Upstream};
use super::versions::{self, VersionSource};
use crate::cvd::{self, Expected, TrustedKeys, VerifyError};

/// How long a `403` stops all requests upstream.
const FORBIDDEN_COOL_DOWN: Duration = Duration::from_secs(24 * 3600);
/// How long history cdiffs upstream lacked are not asked for again.
const HISTORY_RETRY: Duration = Duration::from_secs(24 * 3600);
/// Longest wait between retries inside one pass.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Receives progress of downloads (progress bars on a terminal, nothing in the server).
pub trait Progress: Send + Sync {
    /// A download of `name` started or restarted.
    fn started(&self, name: &str) {
        let _ = name;
    }
    /// `done` of `total` bytes of `name` have arrived.
    fn advanced(&self, name: &str, done: u64, total: Option<u64>) {
        let _ = (name, done, total);
    }
    /// `name` is done; `outcome` says how, in a few words.
    fn finished(&self, name: &str, outcome: &str) {
        let _ = (name, outcome);
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// What health checks and the status page read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Version of each published CVD.
    pub published: BTreeMap<String, u32>,
    /// Version upstream advertised at the last pass.
    pub advertised: BTreeMap<String, u32>,
    /// The TXT record upstream advertised at the last pass (DNS mode).
    pub advertised_record: Option<crate::dns::VersionRecord>,
    /// A pass is running now.
    pub running: bool,
    /// The last pass.
    pub last_pass: Option<PassRecord>,
}

impl SyncStatus {
    /// Versions each database lags upstream by (only those that lag).
    pub fn behind(&self) -> BTreeMap<String, u32> {
        self.advertised
            .iter()
            .filter_map(|(db, &adv)| {
                let published = self.published.get(db).copied().unwrap_or(0);
                (adv > published).then(|| (db.clone(), adv - published))
            })
            .collect()
    }

    /// Whether every configured database has a published, verified CVD.
    pub fn is_complete(&self, databases: &[String]) -> bool {
        databases.iter().all(|db| self.published.contains_key(db))
    }
}

/// The result of one pass for one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbReport {
    /// Database.
    pub name: String,
    /// Published version before.
    pub before: Option<u32>,
    /// Published version after.
    pub after: Option<u32>,
    /// Advertised version.
    pub advertised: u32,
    /// Files fetched and published.
    pub fetched: Vec<String>,
    /// How it ended.
    pub outcome: DbOutcome,
}

/// How a database's pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbOutcome {
    /// Nothing to do.
    UpToDate,
    /// New files published; now at the advertised version.
    Updated,
    /// Upstream advertises an older version than ours; kept ours.
    UpstreamBehind,
    /// Not brought up to date; the reason.
    Failed(String),
}

/// A whole pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Per database.
    pub databases: Vec<DbReport>,
}

/// Why a pass did not leave the mirror complete and current.
#[derive(Debug, Error)]
pub enum SyncError {
    /// The version source failed.
    #[error("cannot learn upstream versions: {0}")]
    Versions(String),
    /// Upstream answered `403`.
    #[error("upstream refuses this mirror (403); no requests until {}", httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(*.until)))]
    Forbidden {
        /// Unix time requests resume.
        until: u64,
    },
    /// Local disk trouble.
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// Some databases were not brought up to date.
    #[error("{}", summarize(.0))]
    Incomplete(Vec<DbReport>),
}

impl SyncError {
    /// Whether an early retry may succeed (vs. waiting for a cool-down or a person).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SyncError::Forbidden { .. } | SyncError::Config(_))
    }
}

fn summarize(reports: &[DbReport]) -> String {
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            DbOutcome::Failed(reason) => Some(format!("{}: {reason}", r.name)),
            _ => None,
        })
        .collect();
    format!(
        "sync incomplete; previous files still served. {}",
        failed.join("; ")
    )
}

/// Why one file was not staged.
#[derive(Debug, Error)]
enum FileError {
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
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
}

/// What a staged file must be.
#[derive(Debug, Clone, Copy)]
enum Expect<'a> {
    Cvd { db: &'a str, at_least: u32 },
    Cdiff { version: u32 },
}

/// The sync engine of one root.
pub struct Engine {
    config: SyncConfig,
    upstream: Upstream,
    state_file: StateFile,
    single_flight: Mutex<()>,
    status: watch::Sender<SyncStatus>,
}

impl Engine {
    /// Checks the configuration and prepares the engine (no network yet).
    pub fn new(config: SyncConfig) -> Result<Self, SyncError> {
        if config.versions == VersionSource::Http && versions::is_official_cdn(&config.upstream) {
            return Err(SyncError::Config(
                "HTTP version checks are not allowed against the official ClamAV CDN (it counts them as downloads); use DNS".into(),
            ));
        }
        if config.databases.is_empty() {
            return Err(SyncError::Config("no databases to mirror".into()));
        }
        let upstream = Upstream::new(
            &config.upstream,
            config.connect_timeout,
            config.stall_timeout,
        )
        .map_err(|e| SyncError::Config(e.to_string()))?;
        let private = config.root.join(publish::PRIVATE_DIR);
        std::fs::create_dir_all(publish::staging_dir(&config.root))?;
        let state_file = StateFile::new(private.join("sync-state"));
        let engine = Self {
            config,
            upstream,
            state_file,
            single_flight: Mutex::new(()),
            status: watch::Sender::new(SyncStatus::default()),
        };
        let mut status = SyncStatus {
            last_pass: engine.state_file.load()?.last_pass,
            ..Default::default()
        };
        status.published = engine.scan_published()?;
        engine.status.send_replace(status);
        Ok(engine)
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Follows the engine's status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Runs one pass (waiting for a running one to finish first).
    pub async fn pass(&self, progress: &dyn Progress) -> Result<PassReport, SyncError> {
        let _flight = self.single_flight.lock().await;
        self.status.send_modify(|s| s.running = true);
        let started = unix_now();
        let mut state = self.state_file.load()?;
        let result = self.run(&mut state, progress).await;
        let record = PassRecord {
            started,
            finished: unix_now(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        state.consecutive_failures = if record.ok {
            0
        } else {
            state.consecutive_failures.saturating_add(1)
        };
        state.last_pass = Some(record.clone());
        let saved = self.state_file.save(&state);
        let published = self.scan_published();
        self.status.send_modify(|s| {
            s.running = false;
            s.last_pass = Some(record);
            if let Ok(published) = published {
                s.published = published;
            }
        });
        saved?;
        result
    }

    fn scan_published(&self) -> io::Result<BTreeMap<String, u32>> {
        let mut published = BTreeMap::new();
        for db in &self.config.databases {
            if let Some(version) = publish::scan(&self.config.root, db)?.cvd_version {
                published.insert(db.clone(), version);
            }
        }
        Ok(published)
    }

    async fn run(
        &self,
        state: &mut SyncState,
        progress: &dyn Progress,
    ) -> Result<PassReport, SyncError> {
        let now = unix_now();
        match state.forbidden_until {
            Some(until) if until > now => return Err(SyncError::Forbidden { until }),
            Some(_) => state.forbidden_until = None,
            None => {}
        }
        std::fs::create_dir_all(publish::staging_dir(&self.config.root))?;
        let (advertised, record) = match &self.config.versions {
            VersionSource::Http => (self.header_versions(state).await?, None),
            dns => dns
                .lookup(&self.config.databases)
                .await
                .map_err(SyncError::Versions)?,
        };
        self.status.send_modify(|s| {
            s.advertised = advertised.clone();
            s.advertised_record = record;
        });
        let mut reports = Vec::new();
        for db in &self.config.databases {
            let target = advertised.get(db).copied().unwrap_or_default();
            let report = self.sync_db(state, db, target, progress).await?;
            match &report.outcome {
                DbOutcome::Failed(reason) => {
                    tracing::warn!(db, %reason, "database not updated; previous files still served")
                }
                DbOutcome::UpstreamBehind => {
                    tracing::warn!(db, published = ?report.before, advertised = target, "upstream advertises an older version than ours; keeping ours")
                }
                DbOutcome::Updated => {
                    tracing::info!(db, from = ?report.before, to = ?report.after, files = report.fetched.len(), "published")
                }
                DbOutcome::UpToDate => tracing::debug!(db, version = target, "up to date"),
            }
            reports.push(report);
        }
        if reports
            .iter()
            .any(|r| matches!(r.outcome, DbOutcome::Failed(_)))
        {
            return Err(SyncError::Incomplete(reports));
        }
        Ok(PassReport { databases: reports })
    }

    async fn sync_db(
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
        let update = match plan::plan(&input, self.config.backfill) {
            Plan::UpToDate => {
                self.prune(state, db)?;
                return Ok(report);
            }
            Plan::UpstreamBehind { .. } => {
                report.outcome = DbOutcome::UpstreamBehind;
                return Ok(report);
            }
            Plan::Update(update) => update,
        };
        let mut update = update;
        let now = unix_now();
        update.cdiffs.retain(|&v| {
            v > update.required_above
                || state
                    .file(&format!("{db}-{v}.cdiff"))
                    .missing_since
                    .is_none_or(|since| now.saturating_sub(since) >= HISTORY_RETRY.as_secs())
        });
        if update.cdiffs.is_empty() && !update.cvd {
            self.prune(state, db)?;
            return Ok(report);
        }
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
        if update.cvd {
            let name = format!("{db}.cvd");
            let (staged, version) = match self
                .fetch_verified(
                    state,
                    &name,
                    Expect::Cvd {
                        db,
                        at_least: target,
                    },
                    progress,
                )
                .await
            {
                Ok(staged) => staged,
                Err(FileError::Fetch(FetchError::Forbidden)) => return Err(self.forbidden(state)),
                Err(e) => {
                    report.outcome = DbOutcome::Failed(format!("{name}: {e}"));
                    return Ok(report);
                }
            };
            // Upstream moved on since the version lookup: the CVD still needs its patches.
            for v in target + 1..=version {
                if let Err(reason) = self
                    .fetch_cdiff(state, db, v, true, &mut report, progress)
                    .await?
                {
                    let _ = std::fs::remove_file(&staged.path);
                    report.outcome = DbOutcome::Failed(reason);
                    return Ok(report);
                }
            }
            let sign = self
                .fetch_signature(state, &format!("{db}-{version}.cvd.sign"), progress)
                .await?;
            publish::publish(&root, &[], Some(&staged))?;
            publish::publish(&root, sign.as_slice(), None)?;
            report.fetched.push(name);
            report.after = Some(version);
        }
        report.outcome = DbOutcome::Updated;
        self.prune(state, db)?;
        Ok(report)
    }

    /// Fetches, verifies and publishes one cdiff. `Ok(Err(reason))` when a
    /// required cdiff is missing; a history cdiff that is missing is fine.
    async fn fetch_cdiff(
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
            && state
                .file(&name)
                .missing_since
                .is_some_and(|since| unix_now().saturating_sub(since) < HISTORY_RETRY.as_secs())
        {
            // History upstream lacked recently: not asked again before a day passed.
            return Ok(Ok(()));
        }
        match self
            .fetch_verified(state, &name, Expect::Cdiff { version }, progress)
            .await
        {
            Ok((staged, _)) => {
                state.file(&name).missing_since = None;
                let sign = self
                    .fetch_signature(state, &format!("{name}.sign"), progress)
                    .await?;
                publish::publish(&self.config.root, &[staged], None)?;
                // A signature is published only beside the file it signs.
                publish::publish(&self.config.root, sign.as_slice(), None)?;
                state.published_at.insert(name.clone(), unix_now());
                report.fetched.push(name);
                Ok(Ok(()))
            }
            Err(FileError::Fetch(FetchError::Forbidden)) => Err(self.forbidden(state)),
            Err(FileError::Fetch(FetchError::NotFound)) => {
                let now = unix_now();
                if !required {
                    state.file(&name).missing_since = Some(now);
                    tracing::debug!(file = %name, "cdiff history not available upstream; asking again in a day");
                    return Ok(Ok(()));
                }
                let since = *state.file(&name).missing_since.get_or_insert(now);
                let missing_for = Duration::from_secs(now.saturating_sub(since));
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

    /// Fetches an optional `.sign` file and publishes it if it looks like one.
    async fn fetch_signature(
        &self,
        state: &mut SyncState,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<Option<Staged>, SyncError> {
        let dest = publish::staging_dir(&self.config.root).join(format!("{name}.part"));
        match self.fetch_raw(state, name, &dest, 1, progress).await {
            Ok(()) => {
                let looks_right =
                    std::fs::read(&dest).is_ok_and(|b| b.starts_with(b"#clamsign-1.0"));
                if looks_right {
                    return Ok(Some(Staged {
                        path: dest,
                        name: name.to_owned(),
                    }));
                }
                tracing::warn!(file = name, "not a ClamAV signature file; discarded");
                let _ = std::fs::remove_file(&dest);
                Ok(None)
            }
            Err(FileError::Fetch(FetchError::Forbidden)) => Err(self.forbidden(state)),
            Err(_) => {
                let _ = std::fs::remove_file(&dest);
                Ok(None)
            }
        }
    }

    /// Downloads `name` into staging and verifies it; the staged file and its
    /// version, or the reason it was rejected (and deleted).
    async fn fetch_verified(
        &self,
        state: &mut SyncState,
        name: &str,
        expect: Expect<'_>,
        progress: &dyn Progress,
    ) -> Result<(Staged, u32), FileError> {
        let path = publish::staging_dir(&self.config.root).join(format!("{name}.part"));
        self.fetch_raw(state, name, &path, self.config.attempts, progress)
            .await?;
        state.file(name).partial_validator = None;
        let verdict = verify(path.clone(), expect, self.config.keys.clone()).await;
        match verdict {
            Ok(version) => {
                progress.finished(name, "verified");
                Ok((
                    Staged {
                        path,
                        name: name.to_owned(),
                    },
                    version,
                ))
            }
            Err(e) => {
                tracing::error!(file = name, reason = %e, "upstream file rejected; it will not be published");
                progress.finished(name, "rejected");
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Downloads with cool-downs, budget and retries.
    async fn fetch_raw(
        &self,
        state: &mut SyncState,
        name: &str,
        dest: &std::path::Path,
        attempts: u32,
        progress: &dyn Progress,
    ) -> Result<(), FileError> {
        let now = unix_now();
        let max_per_hour = self.config.max_requests_per_file_per_hour as usize;
        let file = state.file(name);
        match file.cool_down_until {
            Some(until) if until > now => return Err(FileError::CoolingDown(until)),
            Some(_) => file.cool_down_until = None,
            None => {}
        }
        file.recent_requests
            .retain(|&t| now.saturating_sub(t) < 3600);
        let mut backoff = Backoff::new(self.config.retry_base, MAX_RETRY_DELAY);
        for attempt in 1..=attempts.max(1) {
            let file = state.file(name);
            if file.recent_requests.len() >= max_per_hour {
                return Err(FileError::Budget);
            }
            file.recent_requests.push(unix_now());
            let validator = file.partial_validator.clone();
            let mut validator_out = None;
            progress.started(name);
            let result = self
                .upstream
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

    /// Versions from `Range: bytes=0-511` of each CVD, under the same
    /// cool-downs, budget and `403` handling as downloads.
    async fn header_versions(
        &self,
        state: &mut SyncState,
    ) -> Result<BTreeMap<String, u32>, SyncError> {
        let mut versions = BTreeMap::new();
        for db in &self.config.databases {
            let name = format!("{db}.cvd");
            let now = unix_now();
            let file = state.file(&name);
            if let Some(until) = file.cool_down_until.filter(|&until| until > now) {
                return Err(SyncError::Versions(format!(
                    "{name}: {}",
                    FileError::CoolingDown(until)
                )));
            }
            file.recent_requests
                .retain(|&t| now.saturating_sub(t) < 3600);
            if file.recent_requests.len() >= self.config.max_requests_per_file_per_hour as usize {
                return Err(SyncError::Versions(format!(
                    "{name}: {}",
                    FileError::Budget
                )));
            }
            file.recent_requests.push(now);
            match self.upstream.cvd_header(db).await {
                Ok(header) => {
                    versions.insert(db.clone(), header.version);
                }
                Err(FetchError::Forbidden) => return Err(self.forbidden(state)),
                Err(FetchError::RateLimited { retry_after }) => {
                    state.file(&name).cool_down_until = Some(now + retry_after.as_secs());
                    let _ = self.state_file.save(state);
                    return Err(SyncError::Versions(format!(
                        "{name} header: rate limited by upstream (429); cooling down for {}",
                        humantime::format_duration(retry_after)
                    )));
                }
                Err(e) => return Err(SyncError::Versions(format!("{name} header: {e}"))),
            }
        }
        Ok(versions)
    }

    fn forbidden(&self, state: &mut SyncState) -> SyncError {
        let until = unix_now() + FORBIDDEN_COOL_DOWN.as_secs();
        state.forbidden_until = Some(until);
        tracing::error!(
            "upstream answered 403: this mirror is refused; stopping all requests for 24 h"
        );
        SyncError::Forbidden { until }
    }

    fn prune(&self, state: &mut SyncState, db: &str) -> io::Result<()> {
        let removed = publish::prune(
            &self.config.root,
            db,
            self.config.retention,
            SystemTime::now(),
            |name| state.published_at.get(name).copied(),
        )?;
        for name in removed {
            tracing::info!(file = %name, "cdiff past retention removed");
            state.published_at.remove(&name);
            state.files.remove(&name);
        }
        Ok(())
    }
}

/// Verifies a staged file off the async threads (hashing 160 MB takes a while).
async fn verify(path: PathBuf, expect: Expect<'_>, keys: TrustedKeys) -> Result<u32, FileError> {
    let expect_owned = match expect {
        Expect::Cvd { db, at_least } => (Some(db.to_owned()), at_least),
        Expect::Cdiff { version } => (None, version),
    };
    let joined = tokio::task::spawn_blocking(move || -> Result<u32, FileError> {
        match expect_owned {
            (Some(db), at_least) => {
                let verified = cvd::verify_file(&path, &Expected::cvd(&db), &keys)
                    .map_err(FileError::Verify)?;
                let got = verified.header.version;
                if got < at_least {
                    return Err(FileError::WrongVersion {
                        expected: at_least,
                        got,
                    });
                }
                Ok(got)
            }
            (None, version) => {
                cvd::verify_cdiff_file(&path, Some(version), &keys).map_err(FileError::Verify)?;
                Ok(version)
            }
        }
    })
    .await;
    joined.map_err(|e| FileError::Io(io::Error::other(e)))?
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
