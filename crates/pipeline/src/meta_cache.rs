//! The metadata cache of stage 4: each site remembers what it derived from
//! the files it served ([`FileMeta`]: validators, a CVD's header), by file
//! identity and by path, so a file opened again is not read and parsed
//! again, and a path that still names the same version is answered without
//! opening it.

// Keyed by what this server opened itself (lookups of other paths only
// miss): foldhash, a fraction of SipHash's cost on every request.
use foldhash::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use cvdmirror_formats::mutex::lock;

use crate::file::{FileMeta, mtime_nanos};

/// Recently served files' [`FileMeta`], per site, by identity and by path.
///
/// By identity, a file opened again costs no read and no parsing. By path,
/// a request whose path still names a file that was opened beneath the
/// root before, in the same version, is answered without opening it at
/// all: one `statx` of the path, compared on device, inode, size, mtime and
/// ctime (see [`lookup_known`](crate::file::lookup_known)). That is what a
/// `304` and freshclam's 512-byte header check need, and both are most of a
/// mirror's requests.
#[derive(Debug, Default)]
pub struct MetaCache {
    entries: Mutex<HashMap<FileId, (FileVersion, Arc<FileMeta>)>>,
    /// Keyed by the path's bytes (hashing a `Path` walks its components).
    known: Mutex<HashMap<OsString, Known>>,
}

/// A path last seen naming this version of a regular file beneath the root.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) stat: StatVersion,
    pub(crate) meta: Arc<FileMeta>,
    /// The descriptor downloads of this version are reading, while any is:
    /// a herd of ten thousand downloads of `daily.cvd` shares one.
    pub(crate) open: Weak<File>,
}

/// What must be unchanged for a path to still name the same content:
/// device, inode, size, mtime and ctime (nanoseconds; ctime changes on any
/// write or rename, even one that restores the mtime).
type StatVersion = (u64, u64, u64, i128, i128);

/// A file's identity: device and inode.
type FileId = (u64, u64);
/// A version of it: mtime and ctime in nanoseconds, and size (ctime moves
/// on every write, even one that puts the mtime back).
type FileVersion = (u128, i128, u64);

/// Files remembered per site before the cache starts over.
const META_CACHE_ENTRIES: usize = 4096;

impl MetaCache {
    pub(crate) fn get_or_insert(
        &self,
        meta: &std::fs::Metadata,
        compute: impl FnOnce() -> FileMeta,
    ) -> Arc<FileMeta> {
        let key = (meta.dev(), meta.ino());
        let version = (
            mtime_nanos(meta),
            i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            meta.len(),
        );
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((cached_version, cached)) = entries.get(&key)
            && *cached_version == version
        {
            return Arc::clone(cached);
        }
        drop(entries);
        let computed = Arc::new(compute());
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= META_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (version, Arc::clone(&computed)));
        computed
    }
}

impl MetaCache {
    pub(crate) fn known_entry(&self, relative: &Path) -> Option<Known> {
        lock(&self.known).get(relative.as_os_str()).cloned()
    }

    /// Notes that `relative` was opened beneath the root as this version.
    pub(crate) fn remember(
        &self,
        relative: &Path,
        meta: &std::fs::Metadata,
        file_meta: &Arc<FileMeta>,
        open: Weak<File>,
    ) {
        let stat = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        );
        let mut known = lock(&self.known);
        if let Some(entry) = known.get_mut(relative.as_os_str()) {
            *entry = Known {
                stat,
                meta: Arc::clone(file_meta),
                open,
            };
            return;
        }
        if known.len() >= META_CACHE_ENTRIES {
            known.clear();
        }
        known.insert(
            relative.as_os_str().to_owned(),
            Known {
                stat,
                meta: Arc::clone(file_meta),
                open,
            },
        );
    }
}
