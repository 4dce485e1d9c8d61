//! Sync: pulls the databases from upstream, verifies every file, and
//! publishes atomically, so the mirror can never be left half-updated.
//!
//! One pass: learn the advertised versions ([`versions`]), plan per database
//! ([`plan`]), fetch cdiffs first and the whole CVD only when the version
//! changed ([`upstream`]), verify each file's signature before it may be
//! published, and publish cdiffs before the CVD they lead to ([`publish`]).
//! A file that fails verification, is truncated or has the wrong version is
//! logged with the reason and never replaces what is served.
//!
//! Since ClamAV 1.5 each CVD and cdiff also has a detached `.sign`: it is
//! fetched with its file, verified ([`crate::cvd::sign`]), weighed with the
//! legacy signature by the mirror's [`SignaturePolicy`], and published
//! before the file it signs; `.sign` files the published set lacks are
//! back-filled, and a replaced CVD's `.sign` stays for a grace period.
//!
//! Upstream etiquette is enforced here, persisted in [`state`]: a `429`
//! cools that file down for its `Retry-After` (4 h without one); a `403`
//! stops all requests for 24 h; errors are retried with jittered backoff; no
//! file is requested more than a handful of times per hour.

use cvdmirror_dns as dns;
use cvdmirror_exchange::hooks;
use cvdmirror_formats::atomic_file;
use cvdmirror_formats::cvd;
use cvdmirror_formats::state_file;

pub use cvdmirror_formats::backoff;
pub mod bundle;
pub mod demand;
mod engine;
mod fetch;
pub mod plan;
pub mod policy;
pub mod publish;
mod report;
pub mod schedule;
pub mod signatures;
pub mod state;
pub mod upstream;
pub mod versions;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use engine::Engine;
pub use policy::SignaturePolicy;
pub use report::{DbOutcome, DbReport, PassReport, Progress, Quiet, SyncError, SyncStatus};
pub use versions::VersionSource;

use crate::cvd::TrustedKeys;
use crate::cvd::sign::{SignRoots, SignVerifier};

/// Default upstream.
pub const DEFAULT_UPSTREAM: &str = "https://database.clamav.net";
/// Default databases.
pub const DEFAULT_DATABASES: [&str; 3] = ["daily", "main", "bytecode"];
/// Default cdiff retention.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default cdiff history fetched by a mirror that lacks it.
pub const DEFAULT_BACKFILL: u32 = 30;
/// Default wait for a required cdiff missing upstream before the CVD is
/// published without it. Short: while the mirror waits it serves the old
/// CVD, and clients that learned the new version from upstream's DNS fall
/// back to whole downloads of the *old* one (the seed incident's pattern).
pub const DEFAULT_MISSING_CDIFF_GRACE: Duration = Duration::from_secs(5 * 60);
/// Default time a replaced CVD's `.sign` stays published (clients that
/// were downloading the old CVD ask for its `.sign` when they finish, and
/// a download on a saturated link can take most of an hour).
pub const DEFAULT_SIGN_GRACE: Duration = Duration::from_secs(3 * 3600);
/// Default request budget per upstream file per hour.
pub const DEFAULT_MAX_REQUESTS_PER_FILE_PER_HOUR: u32 = 6;

/// Everything a sync engine needs.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The served root the engine publishes into.
    pub root: PathBuf,
    /// Upstream base URL.
    pub upstream: String,
    /// Where versions come from.
    pub versions: VersionSource,
    /// Databases to mirror.
    pub databases: Vec<String>,
    /// cdiff versions of history fetched when missing.
    pub backfill: u32,
    /// cdiffs older than this (since published here) are removed.
    pub retention: Duration,
    /// Keys legacy signatures must verify with.
    pub keys: TrustedKeys,
    /// Which signatures a file must carry (legacy, `.sign`, both).
    pub signatures: SignaturePolicy,
    /// Roots and feature level `.sign` files are verified with.
    pub sign_verifier: SignVerifier,
    /// How long a replaced CVD's `.sign` stays published.
    pub sign_grace: Duration,
    /// Certificates are checked at this time instead of now (tests pin it:
    /// test roots expire).
    pub verify_at: Option<SystemTime>,
    /// Proxy for every upstream request (`http://[user:password@]host:port`);
    /// without one, the environment's (`HTTPS_PROXY`, `NO_PROXY`, …).
    pub proxy: Option<String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// A transfer with no byte for this long is abandoned (and resumed later).
    pub stall_timeout: Duration,
    /// Attempts per file per pass for retryable errors.
    pub attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_base: Duration,
    /// Request budget per upstream file per hour.
    pub max_requests_per_file_per_hour: u32,
    /// How long a required cdiff may be missing upstream before the CVD is
    /// published without it.
    pub missing_cdiff_grace: Duration,
}

impl SyncConfig {
    /// Defaults for mirroring `upstream` into `root`.
    pub fn new(root: PathBuf, upstream: &str) -> Self {
        Self {
            root,
            upstream: upstream.to_owned(),
            versions: VersionSource::Dns {
                name: versions::DEFAULT_DNS_NAME.into(),
                nameserver: None,
            },
            databases: DEFAULT_DATABASES.iter().map(|s| s.to_string()).collect(),
            backfill: DEFAULT_BACKFILL,
            retention: DEFAULT_RETENTION,
            keys: TrustedKeys::official(),
            signatures: SignaturePolicy::default(),
            sign_verifier: SignVerifier::new(SignRoots::official()),
            sign_grace: DEFAULT_SIGN_GRACE,
            verify_at: None,
            proxy: None,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            attempts: 3,
            retry_base: Duration::from_secs(2),
            max_requests_per_file_per_hour: DEFAULT_MAX_REQUESTS_PER_FILE_PER_HOUR,
            missing_cdiff_grace: DEFAULT_MISSING_CDIFF_GRACE,
        }
    }
}
