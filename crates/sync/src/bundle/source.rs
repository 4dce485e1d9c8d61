//! A bundle or a directory as the sync engine's upstream (`--upstream
//! file:///path`): what `cvd_header` and `download` do over HTTP, done
//! from local files, so a bundle's files pass through exactly the checks
//! an upstream's do.
//!
//! The bundle is opened and checked ([`Bundle::open`]) at the start of each
//! pass; a bundle file that has not changed since is not hashed again. A
//! pass reads from the file it opened even if the path is replaced while it
//! runs, so one pass never mixes two bundles.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Bundle, BundleError};
use crate::cvd;

/// Files from a bundle or a directory, for the engine.
#[derive(Debug)]
pub struct LocalSource {
    path: PathBuf,
    opened: Mutex<Option<Arc<Bundle>>>,
}

impl LocalSource {
    /// A source reading `path` (a bundle file or a directory), which must
    /// exist.
    pub fn new(path: PathBuf) -> Result<LocalSource, BundleError> {
        std::fs::metadata(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(LocalSource {
            path,
            opened: Mutex::new(None),
        })
    }

    /// A source over a bundle already opened and checked.
    pub fn from_bundle(bundle: Arc<Bundle>) -> LocalSource {
        LocalSource {
            path: bundle.path().to_owned(),
            opened: Mutex::new(Some(bundle)),
        }
    }

    /// Where it reads from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cached(&self) -> Option<Arc<Bundle>> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Opens and checks the bundle for a new pass (unless it is the one
    /// already checked).
    pub async fn begin_pass(&self) -> Result<Arc<Bundle>, BundleError> {
        if let Some(bundle) = self.cached().filter(|b| b.is_unchanged()) {
            return Ok(bundle);
        }
        let path = self.path.clone();
        let opened = tokio::task::spawn_blocking(move || Bundle::open(&path))
            .await
            .map_err(|e| BundleError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })??;
        let bundle = Arc::new(opened);
        if let Some(manifest) = bundle.manifest() {
            tracing::info!(
                bundle = %self.path.display(),
                created = %manifest.created,
                files = manifest.files.len(),
                "bundle checked against its manifest"
            );
        }
        *self.opened.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&bundle));
        Ok(bundle)
    }

    async fn current(&self) -> Result<Arc<Bundle>, BundleError> {
        match self.cached() {
            Some(bundle) => Ok(bundle),
            None => self.begin_pass().await,
        }
    }

    /// The header of `<db>.cvd`; `Ok(None)` when the source has none.
    pub async fn cvd_header(&self, db: &str) -> Result<Option<cvd::Header>, BundleError> {
        let bundle = self.current().await?;
        let name = format!("{db}.cvd");
        let task_name = name.clone();
        let head = tokio::task::spawn_blocking(move || bundle.head(&task_name))
            .await
            .map_err(|e| BundleError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })??;
        let Some(head) = head else {
            return Ok(None);
        };
        cvd::Header::parse(&head)
            .map(Some)
            .map_err(|e| BundleError::Cvd {
                name,
                reason: format!("not a CVD: {e}"),
            })
    }

    /// Copies `name` into `dest`; `Ok(None)` when the source does not offer
    /// it, else its length.
    pub async fn copy(&self, name: &str, dest: &Path) -> Result<Option<u64>, BundleError> {
        let bundle = self.current().await?;
        let (name, dest) = (name.to_owned(), dest.to_owned());
        tokio::task::spawn_blocking(move || bundle.copy_to(&name, &dest))
            .await
            .map_err(|e| BundleError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
    }

    /// The size of `name`, if the source offers it.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, BundleError> {
        self.current().await?.size(name)
    }

    /// `e` with the source named once, for a log line or a pass's error.
    pub fn explain(&self, e: &BundleError) -> String {
        match e {
            BundleError::Io { path, .. } if *path == self.path => {
                let what = self.describe();
                let kind = what.split(' ').next().unwrap_or("bundle");
                format!("{kind} {e}")
            }
            _ => format!("{}: {e}", self.describe()),
        }
    }

    /// "bundle PATH" or "directory PATH".
    pub fn describe(&self) -> String {
        match self.cached() {
            Some(bundle) => bundle.describe(),
            None if self.path.is_dir() => format!("directory {}", self.path.display()),
            None => format!("bundle {}", self.path.display()),
        }
    }
}
