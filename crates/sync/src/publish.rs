//! The served set on disk: reading what is published, and publishing staged
//! files so that clients only ever see a complete, consistent set.
//!
//! Staging lives in `<root>/.cvdmirror/staging` (the same filesystem, so a
//! rename is atomic; a dot-directory, so it is never served). Every staged
//! file is fsynced before it is renamed into place. cdiffs go first and the
//! directory is fsynced, and only then does the CVD they lead to replace the
//! old one: after a crash at any instant the root holds the old CVD (plus,
//! perhaps, new cdiffs that only help clients) or the new CVD with every
//! cdiff that leads to it. Never a partial file, never a CVD without its
//! patches.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::atomic_file;
use crate::cvd;

/// Directory under the root that holds the engine's own files.
pub const PRIVATE_DIR: &str = ".cvdmirror";

/// What one database looks like in the served root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Version of `<db>.cvd`, if present and its header parses.
    pub cvd_version: Option<u32>,
    /// Versions of `<db>-N.cdiff` present.
    pub cdiffs: BTreeSet<u32>,
}

/// A verified file waiting in staging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Where it is.
    pub path: PathBuf,
    /// Its name once published.
    pub name: String,
}

/// Staging directory for a root.
pub fn staging_dir(root: &Path) -> PathBuf {
    root.join(PRIVATE_DIR).join("staging")
}

/// The lock file that makes passes on one root take turns, across processes.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join(PRIVATE_DIR).join("sync.lock")
}

/// An exclusive hold on a root's staging files and sync state, released
/// when dropped. It is an `flock`, so the kernel releases it when its holder
/// dies, even by `kill -9`: a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct RootLock {
    _file: std::fs::File,
}

/// Takes the root's lock, blocking while another process holds it (a pass
/// whose parent was killed but which runs on, a `cvdmirror sync` from cron
/// beside `serve`); `waiting` is called once, first, if it has to wait.
pub fn lock(root: &Path, waiting: impl FnOnce(&Path)) -> io::Result<RootLock> {
    use rustix::fs::{FlockOperation, flock};
    use rustix::io::Errno;
    let path = lock_path(root);
    std::fs::create_dir_all(root.join(PRIVATE_DIR))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(RootLock { _file: file }),
        Err(Errno::WOULDBLOCK) => waiting(&path),
        Err(e) => return Err(e.into()),
    }
    loop {
        match flock(&file, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(RootLock { _file: file }),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads what is published for `db`.
pub fn scan(root: &Path, db: &str) -> io::Result<Published> {
    let mut published = Published::default();
    match read_header(&root.join(format!("{db}.cvd"))) {
        Ok(header) => published.cvd_version = Some(header.version),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(db, error = %e, "published CVD unreadable; treating it as absent"),
    }
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        if let Some(version) = name.to_str().and_then(|n| cdiff_version(n, db)) {
            published.cdiffs.insert(version);
        }
    }
    Ok(published)
}

fn read_header(path: &Path) -> io::Result<cvd::Header> {
    use std::io::Read;
    let mut buf = [0u8; cvd::HEADER_LEN];
    std::fs::File::open(path)?.read_exact(&mut buf)?;
    cvd::Header::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `Some(N)` for `<db>-N.cdiff`.
pub fn cdiff_version(name: &str, db: &str) -> Option<u32> {
    name.strip_prefix(db)?
        .strip_prefix('-')?
        .strip_suffix(".cdiff")?
        .parse()
        .ok()
}

/// Publishes `cdiffs` (ascending), then `cvd`, into `root`.
pub fn publish(root: &Path, cdiffs: &[Staged], cvd: Option<&Staged>) -> io::Result<()> {
    for staged in cdiffs {
        std::fs::rename(&staged.path, root.join(&staged.name))?;
    }
    if !cdiffs.is_empty() {
        atomic_file::sync_dir(root)?;
    }
    if let Some(staged) = cvd {
        atomic_file::rename_durably(&staged.path, &root.join(&staged.name))?;
    }
    Ok(())
}

/// Removes the `.sign` files of replaced CVDs (`<db>-N.cvd.sign` for any N
/// but the published version) once they have been retired for `grace`:
/// clients that started downloading the old CVD ask for its `.sign` when
/// they finish. `retired_at` maps names to when they were retired; a file
/// it does not know is retired now.
pub fn prune_cvd_signs(
    root: &Path,
    db: &str,
    grace: Duration,
    now: SystemTime,
    retired_at: &mut std::collections::BTreeMap<String, u64>,
) -> io::Result<Vec<String>> {
    let current = scan(root, db)?.cvd_version;
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(version) = cvd_sign_version(name, db) else {
            continue;
        };
        if Some(version) == current {
            retired_at.remove(name);
            continue;
        }
        let since = *retired_at.entry(name.to_owned()).or_insert(now_secs);
        if now_secs.saturating_sub(since) >= grace.as_secs() {
            match std::fs::remove_file(root.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            retired_at.remove(name);
            removed.push(name.to_owned());
        }
    }
    retired_at.retain(|name, _| root.join(name).exists());
    Ok(removed)
}

/// `Some(N)` for `<db>-N.cvd.sign`.
pub fn cvd_sign_version(name: &str, db: &str) -> Option<u32> {
    name.strip_prefix(db)?
        .strip_prefix('-')?
        .strip_suffix(".cvd.sign")?
        .parse()
        .ok()
}

/// Removes `<db>-N.cdiff` (and its `.sign`) first published before
/// `now - retention`, never the newest one. `first_seen(name)` is when it
/// was published; files published by someone else fall back to their mtime.
pub fn prune(
    root: &Path,
    db: &str,
    retention: Duration,
    now: SystemTime,
    first_seen: impl Fn(&str) -> Option<u64>,
) -> io::Result<Vec<String>> {
    let published = scan(root, db)?;
    let newest = published.cdiffs.last().copied();
    let cutoff = now.checked_sub(retention).unwrap_or(UNIX_EPOCH);
    let mut removed = Vec::new();
    for version in published.cdiffs {
        if Some(version) == newest {
            continue;
        }
        let name = format!("{db}-{version}.cdiff");
        let path = root.join(&name);
        let seen = match first_seen(&name) {
            Some(secs) => UNIX_EPOCH + Duration::from_secs(secs),
            None => std::fs::metadata(&path)?.modified().unwrap_or(now),
        };
        if seen < cutoff {
            std::fs::remove_file(&path)?;
            let sign = root.join(format!("{name}.sign"));
            if let Err(e) = std::fs::remove_file(sign)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e);
            }
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdiff_names_are_recognised_per_database() {
        assert_eq!(cdiff_version("daily-27654.cdiff", "daily"), Some(27654));
        assert_eq!(cdiff_version("daily-27654.cdiff.sign", "daily"), None);
        assert_eq!(cdiff_version("main-5.cdiff", "daily"), None);
        assert_eq!(cdiff_version("daily-x.cdiff", "daily"), None);
    }

    #[test]
    fn publishing_moves_cdiffs_then_the_cvd() {
        let root = tempfile::tempdir().unwrap();
        let staging = staging_dir(root.path());
        std::fs::create_dir_all(&staging).unwrap();
        let stage = |name: &str| {
            let path = staging.join(name);
            std::fs::write(&path, name).unwrap();
            Staged {
                path,
                name: name.into(),
            }
        };
        let cdiffs = [stage("daily-2.cdiff"), stage("daily-3.cdiff")];
        let cvd = stage("daily.cvd");
        publish(root.path(), &cdiffs, Some(&cvd)).unwrap();
        let published = scan(root.path(), "daily").unwrap();
        assert_eq!(published.cdiffs, BTreeSet::from([2, 3]));
        assert_eq!(
            std::fs::read(root.path().join("daily.cvd")).unwrap(),
            b"daily.cvd"
        );
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn the_root_lock_is_exclusive_and_released_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let held = lock(root.path(), |_| panic!("nobody holds it yet")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = root.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let second = lock(&dir, |_| tx.send(()).unwrap()).unwrap();
            drop(second);
        });
        rx.recv().unwrap();
        drop(held);
        waiter.join().unwrap();
    }

    #[test]
    fn pruning_keeps_recent_and_newest_cdiffs_and_removes_signatures() {
        let root = tempfile::tempdir().unwrap();
        for name in [
            "daily-1.cdiff",
            "daily-1.cdiff.sign",
            "daily-2.cdiff",
            "daily-3.cdiff",
        ] {
            std::fs::write(root.path().join(name), b"x").unwrap();
        }
        let now = UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let seen = |name: &str| match name {
            "daily-1.cdiff" => Some(0),
            "daily-2.cdiff" => Some(99 * 86_400),
            _ => Some(0),
        };
        let removed = prune(
            root.path(),
            "daily",
            Duration::from_secs(90 * 86_400),
            now,
            seen,
        )
        .unwrap();
        assert_eq!(removed, vec!["daily-1.cdiff".to_string()]);
        assert!(!root.path().join("daily-1.cdiff.sign").exists());
        assert!(
            root.path().join("daily-3.cdiff").exists(),
            "the newest cdiff is always kept"
        );
    }
}
