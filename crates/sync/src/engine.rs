//! One sync pass, end to end: learn the advertised versions, plan each
//! database, fetch and verify what is missing ([`super::fetch`]), publish
//! each file with its `.sign`, retire what is no longer needed, and keep
//! the status health checks read. This file holds the engine and the pass
//! around the databases; what a pass does to each one is in [`database`].
//!
//! Passes are single-flight: a trigger while one runs waits for it rather
//! than starting a second. Database failures are contained per database: a
//! `429` cool-down on `main.cvd` does not hold back `daily`.

mod database;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, watch};

use super::SyncConfig;
use super::demand::Demand;
use super::publish;
use super::report::{DbOutcome, PassReport, Progress, SyncError, SyncStatus};
use super::signatures::Rejection;
use super::state::{PassRecord, StateFile, SyncState};
use arc_swap::ArcSwap;

use super::upstream::{FetchError, Upstream};
use super::versions::{self, VersionSource};

/// How long a `403` stops all requests upstream.
const FORBIDDEN_COOL_DOWN: Duration = Duration::from_secs(24 * 3600);
/// How long history cdiffs upstream lacked are not asked for again.
pub(super) const HISTORY_RETRY: Duration = Duration::from_secs(24 * 3600);
/// How long a `.sign` upstream lacked for the current CVD is not asked for
/// again.
pub(super) const SIGN_RETRY: Duration = Duration::from_secs(3600);

/// The sync engine of one root.
pub struct Engine {
    pub(super) config: SyncConfig,
    upstream: ArcSwap<Upstream>,
    pub(super) state_file: StateFile,
    single_flight: Mutex<()>,
    pub(super) status: watch::Sender<SyncStatus>,
    pub(super) demand: Arc<Demand>,
}

impl Engine {
    /// Checks the configuration and prepares the engine (no network yet).
    pub fn new(config: SyncConfig) -> Result<Self, SyncError> {
        if config.versions == VersionSource::Http && versions::is_official_cdn(&config.upstream) {
            return Err(SyncError::Config(
                "HTTP version checks are not allowed against the official ClamAV CDN (it counts them as downloads); use DNS".into(),
            ));
        }
        let upstream = Upstream::new(
            &config.upstream,
            config.connect_timeout,
            config.stall_timeout,
            config.proxy.as_deref(),
        )
        .map_err(|e| SyncError::Config(e.to_string()))?;
        Self::with_upstream(config, upstream)
    }

    /// Like [`Engine::new`], with the upstream given (a bundle already
    /// opened and checked) instead of built from `config.upstream`.
    pub fn with_upstream(config: SyncConfig, upstream: Upstream) -> Result<Self, SyncError> {
        if config.databases.is_empty() {
            return Err(SyncError::Config("no databases to mirror".into()));
        }
        let private = config.root.join(publish::PRIVATE_DIR);
        std::fs::create_dir_all(publish::staging_dir(&config.root))?;
        let state_file = StateFile::new(private.join("sync-state"));
        let engine = Self {
            config,
            upstream: ArcSwap::from_pointee(upstream),
            state_file,
            single_flight: Mutex::new(()),
            status: watch::Sender::new(SyncStatus::default()),
            demand: Arc::new(Demand::default()),
        };
        let state = engine.state_file.load()?;
        let mut status = SyncStatus {
            last_pass: state.last_pass.clone(),
            ..Default::default()
        };
        status.published = engine.scan_published()?;
        status.signatures = state
            .signatures
            .iter()
            .filter(|(db, s)| status.published.get(*db) == Some(&s.version))
            .map(|(db, s)| (db.clone(), s.clone()))
            .collect();
        engine.status.send_replace(status);
        Ok(engine)
    }

    /// Where files come from now.
    pub(super) fn upstream(&self) -> Arc<Upstream> {
        self.upstream.load_full()
    }

    /// Fetches from `url` from the next pass on (a fleet node that does
    /// not hold the upstream lease syncs from the node that does), with
    /// the configured timeouts and proxy. A pass under way finishes
    /// against the upstream it started with.
    pub fn set_upstream(&self, url: &str) -> Result<(), SyncError> {
        self.set_upstream_with(url, None)
    }

    /// [`set_upstream`](Self::set_upstream), sending `Authorization:
    /// Bearer TOKEN` with every request when `bearer` is given (a fleet
    /// node syncing from another); a change of token alone makes a new
    /// client too.
    pub fn set_upstream_with(&self, url: &str, bearer: Option<&str>) -> Result<(), SyncError> {
        let current = self.upstream.load();
        if current.base() == url && current.bearer() == bearer {
            return Ok(());
        }
        let mut upstream = Upstream::new(
            url,
            self.config.connect_timeout,
            self.config.stall_timeout,
            self.config.proxy.as_deref(),
        )
        .map_err(|e| SyncError::Config(e.to_string()))?;
        if let Some(token) = bearer {
            upstream = upstream
                .with_bearer(token)
                .map_err(|e| SyncError::Config(e.to_string()))?;
        }
        self.upstream.store(Arc::new(upstream));
        Ok(())
    }

    /// The URL files come from now.
    pub fn upstream_url(&self) -> String {
        self.upstream.load().base().to_owned()
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Follows the engine's status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Where the server records the cdiffs clients asked for and did not
    /// find, so a pass can tell a missing cdiff nobody wants from one
    /// clients are already falling back over.
    pub fn demand(&self) -> Arc<Demand> {
        Arc::clone(&self.demand)
    }

    /// Runs one pass (waiting for a running one to finish first).
    pub async fn pass(&self, progress: &dyn Progress) -> Result<PassReport, SyncError> {
        let _flight = self.single_flight.lock().await;
        // Another process may be in the middle of a pass on this root: it
        // writes, verifies and renames the same staging files. Wait for it.
        let root = self.config.root.clone();
        let _root_lock = tokio::task::spawn_blocking(move || {
            publish::lock(&root, |path| {
                tracing::warn!(lock = %path.display(), "another cvdmirror pass is running on this root; waiting for it to finish");
            })
        })
        .await
        .map_err(io::Error::other)??;
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
        let signatures = state.signatures.clone();
        self.status.send_modify(|s| {
            s.running = false;
            s.last_pass = Some(record);
            if let Ok(published) = published {
                s.signatures = signatures
                    .into_iter()
                    .filter(|(db, sig)| published.get(db) == Some(&sig.version))
                    .collect();
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

    /// The time certificates are checked at: now, unless pinned.
    pub(super) fn verify_time(&self) -> SystemTime {
        self.config.verify_at.unwrap_or_else(SystemTime::now)
    }

    /// Records a refused upstream file: logged, and shown in the status.
    pub(super) fn reject(&self, file: &str, reason: &str) {
        tracing::error!(
            file,
            reason,
            "upstream file rejected; it will not be published"
        );
        let rejection = Rejection {
            at: unix_now(),
            file: file.to_owned(),
            reason: reason.to_owned(),
        };
        self.status.send_modify(|s| s.rejections.push(rejection));
    }

    /// Records a `.sign` left unpublished because it could not be used.
    pub(super) fn set_aside(&self, file: &str, reason: &str) {
        let entry = Rejection {
            at: unix_now(),
            file: file.to_owned(),
            reason: reason.to_owned(),
        };
        self.status.send_modify(|s| s.unusable_signs.push(entry));
    }

    async fn run(
        &self,
        state: &mut SyncState,
        progress: &dyn Progress,
    ) -> Result<PassReport, SyncError> {
        let now = unix_now();
        match state.forbidden_until {
            // A ban by an HTTP upstream says nothing about a local bundle.
            _ if self.upstream().is_local() => {}
            Some(until) if until > now => return Err(SyncError::Forbidden { until }),
            Some(_) => state.forbidden_until = None,
            None => {}
        }
        std::fs::create_dir_all(publish::staging_dir(&self.config.root))?;
        self.upstream()
            .begin_pass()
            .await
            .map_err(|e| SyncError::Versions(e.to_string()))?;
        let (advertised, record) = match &self.config.versions {
            // A bundle's versions are in its CVDs' headers: no DNS, no budget.
            _ if self.upstream().is_local() => (self.header_versions(state).await?, None),
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
            if !self.upstream().is_local() {
                let file = state.file(&name);
                if let Some(until) = file.cool_down_until.filter(|&until| until > now) {
                    return Err(SyncError::Versions(format!(
                        "{name}: {}",
                        super::fetch::FileError::CoolingDown(until)
                    )));
                }
                file.recent_requests
                    .retain(|&t| now.saturating_sub(t) < 3600);
                if file.recent_requests.len() >= self.config.max_requests_per_file_per_hour as usize
                {
                    return Err(SyncError::Versions(format!(
                        "{name}: {}",
                        super::fetch::FileError::Budget
                    )));
                }
                file.recent_requests.push(now);
            }
            match self.upstream().cvd_header(db).await {
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

    pub(super) fn forbidden(&self, state: &mut SyncState) -> SyncError {
        let until = unix_now() + FORBIDDEN_COOL_DOWN.as_secs();
        state.forbidden_until = Some(until);
        tracing::error!(
            "upstream answered 403: this mirror is refused; stopping all requests for 24 h"
        );
        SyncError::Forbidden { until }
    }
}

pub(super) use cvdmirror_formats::calendar::unix_now;
