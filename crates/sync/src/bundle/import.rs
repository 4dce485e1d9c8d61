//! Importing a bundle with the promise that a bad one changes nothing.
//!
//! A normal sync pass publishes each verified file as soon as it can (a
//! verified cdiff helps clients even if the CVD after it is rejected) and
//! each database on its own. An import must be all or nothing, so it runs
//! the engine twice, unchanged:
//!
//! 1. [`Importer::verify`]: a pass from the bundle into an empty scratch
//!    root under `<root>/.cvdmirror/import`, with the mirror's own keys,
//!    `.sign` roots and signature policy. Every file the manifest lists must
//!    come out of it, byte for byte; anything rejected fails the import,
//!    saying which file and why. The served root is not touched.
//! 2. [`Importer::publish`]: a normal pass on the served root whose
//!    upstream is the scratch root, which holds only verified files. It
//!    verifies them again, publishes each with its `.sign`, cdiffs before
//!    the CVD they lead to, and keeps the mirror's state (retention, the
//!    grace of a replaced CVD's `.sign`) as any pass does.
//!
//! `--dry-run` is step 1 alone.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tracing::Instrument;

use super::manifest::{self, Manifest};
use super::{Bundle, BundleError};
use crate::signatures::DbSignatures;
use crate::upstream::Upstream;
use crate::{Engine, PassReport, Progress, SyncConfig, SyncError, publish};

/// Why a bundle was not imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The bundle is damaged or inconsistent.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A plain directory has no manifest to import by.
    #[error(
        "{0} has no manifest.json: import takes a bundle written by `cvdmirror export` (or one unpacked into a directory); a plain copy of a mirror works as `sync --upstream file:///path`"
    )]
    NoManifest(String),
    /// `--db` names a database the bundle does not have.
    #[error("the bundle has no database {0} (it has {1})")]
    NoSuchDatabase(String, String),
    /// Files failed the checks sync applies.
    #[error("{}", .0.join("\n  "))]
    Rejected(Vec<String>),
    /// The pass failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Local disk trouble.
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
}

/// One import of a checked bundle into a root.
pub struct Importer {
    config: SyncConfig,
    bundle: Arc<Bundle>,
    manifest: Manifest,
    databases: Vec<String>,
    work: PathBuf,
    _lock: WorkLock,
}

impl Importer {
    /// Prepares importing `databases` (all in the bundle when empty) into
    /// `config.root`, verifying under `work` (which it owns: it is emptied
    /// now and removed when the importer is dropped). `lock` serializes
    /// imports sharing the same `work`.
    pub fn new(
        config: SyncConfig,
        bundle: Arc<Bundle>,
        databases: &[String],
        work: PathBuf,
    ) -> Result<Importer, ImportError> {
        let manifest = bundle
            .manifest()
            .cloned()
            .ok_or_else(|| ImportError::NoManifest(bundle.describe()))?;
        let all: Vec<String> = manifest.databases.keys().cloned().collect();
        let databases = if databases.is_empty() {
            all
        } else {
            if let Some(db) = databases.iter().find(|db| !all.contains(db)) {
                return Err(ImportError::NoSuchDatabase(db.clone(), all.join(", ")));
            }
            databases.to_vec()
        };
        let lock = WorkLock::take(&work)?;
        remove_dir(&work)?;
        std::fs::create_dir_all(work.join("verified"))?;
        Ok(Importer {
            config,
            bundle,
            manifest,
            databases,
            work,
            _lock: lock,
        })
    }

    /// The bundle's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The databases imported.
    pub fn databases(&self) -> &[String] {
        &self.databases
    }

    fn verified(&self) -> PathBuf {
        self.work.join("verified")
    }

    /// History wide enough that every cdiff in the bundle is taken.
    fn backfill(&self) -> u32 {
        let manifest = self.manifest();
        let span = self
            .databases
            .iter()
            .filter_map(|db| {
                let version = manifest.databases.get(db)?.version;
                let oldest = manifest
                    .files_of(db)
                    .filter(|f| f.kind == manifest::Kind::Cdiff)
                    .map(|f| f.version)
                    .min()?;
                Some(version - oldest + 1)
            })
            .max()
            .unwrap_or(0);
        span.max(self.config.backfill)
    }

    /// Step 1: every listed file through the engine into the scratch root.
    pub async fn verify(&self, progress: &dyn Progress) -> Result<(), ImportError> {
        let mut config = self.config.clone();
        config.root = self.verified();
        config.upstream = file_url(self.bundle.path());
        config.databases = self.databases.clone();
        config.backfill = self.backfill();
        config.attempts = 1;
        let engine = Engine::with_upstream(config, Upstream::bundle(Arc::clone(&self.bundle)))?;
        let span = tracing::info_span!("import_verify", scratch = %self.verified().display());
        let result = engine.pass(progress).instrument(span).await;
        let (rejections, unusable) = {
            let status = engine.status();
            let status = status.borrow();
            (status.rejections.clone(), status.unusable_signs.clone())
        };
        let mut failed: Vec<(&str, String, bool)> = Vec::new();
        for db in &self.databases {
            for file in self.manifest().files_of(db) {
                let path = self.verified().join(&file.name);
                // Refused for itself: a failed check, or (a `.sign`) unusable.
                let rejected = rejections
                    .iter()
                    .chain(unusable.iter())
                    .filter(|r| r.file == file.name)
                    .last();
                let problem = match sha256(&path) {
                    Ok(hash) if hash == file.sha256 => continue,
                    Ok(_) => "differs from the bundle after verification".to_owned(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => match rejected {
                        Some(r) if r.reason.starts_with("rejected") => r.reason.clone(),
                        Some(r) => format!("rejected: {}", r.reason),
                        None => "not accepted by the checks sync applies (the log above says why)"
                            .to_owned(),
                    },
                    Err(e) => return Err(e.into()),
                };
                failed.push((&file.name, problem, rejected.is_some()));
            }
        }
        // A `.sign` left out only because the file it signs was rejected
        // adds nothing to that file's reason.
        let signed_failed = |sign: &str| {
            let signed = match manifest::parse_name(sign) {
                Some(n) if n.signs_cvd => format!("{}.cvd", n.database),
                _ => sign.trim_end_matches(".sign").to_owned(),
            };
            failed.iter().any(|(name, _, _)| *name == signed)
        };
        let mut problems: Vec<String> = failed
            .iter()
            .filter(|(name, _, own)| *own || !name.ends_with(".sign") || !signed_failed(name))
            .map(|(name, problem, _)| format!("{name}: {problem}"))
            .collect();
        let failed_dbs: Vec<String> = failed
            .iter()
            .filter_map(|(name, _, _)| manifest::parse_name(name).map(|n| n.database))
            .collect();
        match result {
            Ok(_) => {}
            Err(SyncError::Incomplete(reports)) => {
                for report in reports {
                    if let crate::DbOutcome::Failed(reason) = report.outcome
                        && !failed_dbs.contains(&report.name)
                    {
                        problems.push(format!("{}: {reason}", report.name));
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Rejected(problems))
        }
    }

    /// What the served root has now, per imported database.
    pub fn published(&self) -> io::Result<BTreeMap<String, Option<u32>>> {
        let mut out = BTreeMap::new();
        for db in &self.databases {
            let version = if self.config.root.is_dir() {
                publish::scan(&self.config.root, db)?.cvd_version
            } else {
                None
            };
            out.insert(db.clone(), version);
        }
        Ok(out)
    }

    /// Step 2 (after [`Importer::verify`]): a normal pass on the served
    /// root from the verified files. Returns its report and the published
    /// CVDs' signatures.
    pub async fn publish(
        &self,
        progress: &dyn Progress,
    ) -> Result<(PassReport, BTreeMap<String, DbSignatures>), SyncError> {
        let mut config = self.config.clone();
        config.upstream = file_url(&self.verified());
        config.databases = self.databases.clone();
        config.backfill = self.backfill();
        config.attempts = 1;
        let engine = Engine::new(config)?;
        let span = tracing::info_span!("import_publish", root = %self.config.root.display());
        let report = engine.pass(progress).instrument(span).await?;
        let signatures = engine.status().borrow().signatures.clone();
        Ok((report, signatures))
    }
}

impl Drop for Importer {
    fn drop(&mut self) {
        if let Err(e) = remove_dir(&self.work) {
            tracing::warn!(dir = %self.work.display(), error = %e, "cannot remove the import's scratch directory");
        }
    }
}

/// `file:///…` for `path`.
pub fn file_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    reqwest::Url::from_file_path(&absolute)
        .map(String::from)
        .unwrap_or_else(|()| format!("file://{}", absolute.display()))
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sha256(path: &Path) -> io::Result<String> {
    let (_, hash) = super::sha256_of(std::fs::File::open(path)?)?;
    Ok(manifest::hex(&hash))
}

/// An `flock` on `<work>.lock`: two imports into one root take turns
/// instead of sharing a scratch directory.
struct WorkLock {
    _file: std::fs::File,
}

impl WorkLock {
    fn take(work: &Path) -> io::Result<WorkLock> {
        use rustix::fs::{FlockOperation, flock};
        let mut name = work.as_os_str().to_owned();
        name.push(".lock");
        if let Some(parent) = work.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            tracing::info!(dir = %work.display(), "another import into this root is running; waiting for it");
            loop {
                match flock(&file, FlockOperation::LockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(WorkLock { _file: file })
    }
}
