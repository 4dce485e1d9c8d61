//! What a sync pass tells the outside: progress while it downloads, the
//! report of each pass and database, the error that says why the mirror is
//! not complete and current, and the status health checks, the status
//! page and alerts follow.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use thiserror::Error;

use super::signatures::{DbSignatures, Rejections};
use super::state::PassRecord;

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
    /// Per database: which signatures the published CVD carries.
    pub signatures: BTreeMap<String, DbSignatures>,
    /// The most recent files refused, with the reasons.
    pub rejections: Rejections,
    /// The most recent `.sign` files left unpublished because they could
    /// not be used (not fetched, not parsed), with the reasons: clients
    /// ignore such a file, so the file it signs is not refused for it.
    pub unusable_signs: Rejections,
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
