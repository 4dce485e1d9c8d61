//! Stage 4: opens the file beneath the site root and derives its validators.
//!
//! Containment is the kernel's job: `openat2(RESOLVE_BENEATH)` relative to
//! the held-open root refuses any path, `..` or symlink that would leave it,
//! in one system call and without a check-then-open race. (Kernels before
//! 5.6 lack `openat2`; there the resolved path is canonicalized and checked.)
//!
//! For `.cvd` and `.cld` files the 512-byte header is read here: its build
//! time (`stime`) is the `Last-Modified` freshclam compares against, and the
//! same bytes answer freshclam's `Range: bytes=0-511` header check without a
//! second read.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::site::Site;
use crate::cvd;
pub use crate::meta_cache::MetaCache;
pub use cvdmirror_formats::FileKind;
use cvdmirror_formats::file_kind::extension;

/// What a conditional request is compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong entity tag, quoted.
    pub etag: String,
    /// Last modification, whole seconds.
    pub last_modified: SystemTime,
    /// `etag` as a header value, formatted once.
    pub etag_header: HeaderValue,
    /// `last_modified` as an HTTP date header value, formatted once.
    pub last_modified_header: HeaderValue,
}

impl Validators {
    /// Validators with their header values.
    pub fn new(etag: String, last_modified: SystemTime) -> Self {
        let etag_header =
            HeaderValue::try_from(etag.as_str()).unwrap_or(HeaderValue::from_static("\"0\""));
        let last_modified_header = HeaderValue::try_from(httpdate::fmt_http_date(last_modified))
            .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        Self {
            etag,
            last_modified,
            etag_header,
            last_modified_header,
        }
    }
}

/// What is derived from a file's content: computed once per version of the
/// file (same inode, size and mtime) and shared by every request for it.
#[derive(Debug)]
pub struct FileMeta {
    /// Its validators.
    pub validators: Validators,
    /// The first bytes (CVD/CLD header), when it has one.
    pub head: Option<Bytes>,
}

/// A regular file ready to be sent.
#[derive(Debug)]
pub struct ServedFile {
    /// The open file; `None` when it was recognized without opening (see
    /// [`lookup_known`]), which answers only what needs no bytes past
    /// [`FileMeta::head`].
    pub file: Option<Arc<File>>,
    /// Its length.
    pub len: u64,
    /// Its kind.
    pub kind: FileKind,
    /// Validators and header, shared with other requests for this version.
    pub meta: Arc<FileMeta>,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// `Cache-Control` value, if one is sent for this kind of file.
    pub cache_control: Option<HeaderValue>,
}

/// What the path named.
#[derive(Debug)]
pub enum Opened {
    /// A regular file.
    File(ServedFile),
    /// A directory.
    Directory(File),
}

/// Why the file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Missing, outside the root, unreadable, or not a regular file: `404`.
    #[error("not found")]
    NotFound,
    /// Out of file descriptors or memory: `503`, come back later.
    #[error("overloaded: {0}")]
    Overloaded(io::Error),
    /// Anything else: `500`.
    #[error("cannot open: {0}")]
    Io(#[from] io::Error),
}

impl OpenError {
    /// The status the client gets. Never `403`: freshclam treats that as a
    /// ban and stops updating for a day.
    pub fn status(&self) -> StatusCode {
        match self {
            OpenError::NotFound => StatusCode::NOT_FOUND,
            OpenError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpenError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Opens `relative` beneath `site`'s root.
pub fn open(site: &Site, relative: &Path) -> Result<Opened, OpenError> {
    let file = open_beneath(site, relative)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(Opened::Directory(file));
    }
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    let kind = FileKind::of(relative);
    let meta_info = site
        .meta_cache
        .get_or_insert(&meta, || file_meta(&file, &meta, kind));
    let file = Arc::new(file);
    site.meta_cache
        .remember(relative, &meta, &meta_info, Arc::downgrade(&file));
    Ok(Opened::File(ServedFile {
        file: Some(file),
        len: meta.len(),
        kind,
        meta: meta_info,
        content_type: content_type(relative),
        cache_control: site.cache_control.for_kind(kind).cloned(),
    }))
}

/// The file `relative` names, if it is a version this site opened beneath
/// its root before: then what the response needs is known without opening
/// it. The returned file is the descriptor other downloads of this version
/// still hold, or `None` when none is running.
///
/// `statx` follows the path as it is now, symlinks included, so on its own
/// it proves nothing about containment; but it is trusted only when it
/// lands on exactly the device and inode that `openat2(RESOLVE_BENEATH)`
/// opened under this path, unchanged since. A path that now leads
/// elsewhere (a swapped symlink, a renamed-in file) has another identity,
/// misses, and takes the full [`open`].
pub fn lookup_known(site: &Site, relative: &Path) -> Option<ServedFile> {
    if relative.as_os_str().is_empty() {
        return None;
    }
    let known = site.meta_cache.known_entry(relative)?;
    let now = rustix::fs::statx(
        &site.root_dir,
        relative,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .ok()?;
    let stat = (
        rustix::fs::makedev(now.stx_dev_major, now.stx_dev_minor),
        now.stx_ino,
        now.stx_size,
        i128::from(now.stx_mtime.tv_sec) * 1_000_000_000 + i128::from(now.stx_mtime.tv_nsec),
        i128::from(now.stx_ctime.tv_sec) * 1_000_000_000 + i128::from(now.stx_ctime.tv_nsec),
    );
    if stat != known.stat {
        return None;
    }
    let kind = FileKind::of(relative);
    Some(ServedFile {
        file: known.open.upgrade(),
        len: now.stx_size,
        kind,
        meta: known.meta,
        content_type: content_type(relative),
        cache_control: site.cache_control.for_kind(kind).cloned(),
    })
}

/// Reads what the response headers need: for a CVD/CLD, its 512-byte
/// header, whose build time is the `Last-Modified`.
fn file_meta(file: &File, meta: &std::fs::Metadata, kind: FileKind) -> FileMeta {
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let mut last_modified = whole_seconds(mtime);
    let mut head = None;
    if matches!(kind, FileKind::Cvd | FileKind::Cld) && meta.len() >= cvd::HEADER_LEN as u64 {
        let mut buf = vec![0u8; cvd::HEADER_LEN];
        if file.read_exact_at(&mut buf, 0).is_ok() {
            if let Ok(header) = cvd::Header::parse(&buf) {
                last_modified = UNIX_EPOCH + Duration::from_secs(header.stime);
            }
            head = Some(Bytes::from(buf));
        }
    }
    let etag = format!(
        "\"{:x}-{:x}-{:x}\"",
        meta.ino(),
        mtime_nanos(meta),
        meta.len()
    );
    FileMeta {
        validators: Validators::new(etag, last_modified),
        head,
    }
}

fn open_beneath(site: &Site, relative: &Path) -> Result<File, OpenError> {
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&site.root_dir, relative, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOSYS) => open_checked(site, relative),
        // An absolute symlink (`daily.cvd -> /srv/mirror/daily-27000.cvd`)
        // is refused by RESOLVE_BENEATH even when it stays inside the root.
        // Resolve it, and open the symlink-free result beneath the root again.
        Err(Errno::XDEV) => {
            let inside = resolve_inside_root(site, relative)?;
            match rustix::fs::openat2(&site.root_dir, &inside, flags, Mode::empty(), resolve) {
                Ok(fd) => Ok(File::from(fd)),
                Err(e) => Err(classify(io::Error::from(e), site, relative)),
            }
        }
        Err(e) => Err(classify(io::Error::from(e), site, relative)),
    }
}

/// Fallback without `openat2`: resolve, then require the result inside the root.
fn open_checked(site: &Site, relative: &Path) -> Result<File, OpenError> {
    let inside = resolve_inside_root(site, relative)?;
    File::open(site.root.join(inside)).map_err(|e| classify(e, site, relative))
}

/// The canonical form of `relative`, relative to the canonical root, or
/// `NotFound` when it resolves outside the root.
fn resolve_inside_root(site: &Site, relative: &Path) -> Result<PathBuf, OpenError> {
    let root = site.root.canonicalize()?;
    let full = root
        .join(relative)
        .canonicalize()
        .map_err(|e| classify(e, site, relative))?;
    let inside = full.strip_prefix(&root).map_err(|_| OpenError::NotFound)?;
    Ok(if inside.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        inside.to_path_buf()
    })
}

fn classify(e: io::Error, site: &Site, relative: &Path) -> OpenError {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound | NotADirectory | InvalidFilename => OpenError::NotFound,
        PermissionDenied => {
            tracing::warn!(site = %site.name, path = %relative.display(), "file not readable by cvdmirror; answering 404");
            OpenError::NotFound
        }
        // EXDEV: the path left the root; ELOOP: symlink loop or magic link.
        _ if matches!(e.raw_os_error(), Some(code) if code == Errno::XDEV.raw_os_error() || code == Errno::LOOP.raw_os_error() || code == Errno::NAMETOOLONG.raw_os_error()) => {
            OpenError::NotFound
        }
        // EMFILE/ENFILE/ENOMEM: a herd exhausted descriptors; tell clients
        // to come back instead of failing them (freshclam retries 5xx at once).
        _ if matches!(e.raw_os_error(), Some(code) if code == Errno::MFILE.raw_os_error() || code == Errno::NFILE.raw_os_error() || code == Errno::NOMEM.raw_os_error()) =>
        {
            tracing::warn!(site = %site.name, path = %relative.display(), error = %e, "out of file descriptors; answering 503 (raise LimitNOFILE or lower max_connections)");
            OpenError::Overloaded(e)
        }
        _ => {
            tracing::error!(site = %site.name, path = %relative.display(), error = %e, "cannot open file; answering 500");
            OpenError::Io(e)
        }
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn mtime_nanos(meta: &std::fs::Metadata) -> u128 {
    (meta.mtime().max(0) as u128) * 1_000_000_000 + meta.mtime_nsec().max(0) as u128
}

/// `Content-Type` by extension; mirror databases are opaque bytes.
///
/// A ClamAV 1.5 detached signature (`daily-27780.cvd.sign`,
/// `daily-27781.cdiff.sign`) is `text/plain; charset=us-ascii`, because that
/// is what it is: a `#clamsign-1.0` line, then `min:max:pkcs7-pem:<base64>`
/// lines, nothing outside ASCII (the sync engine publishes only a `.sign`
/// that verified). freshclam stores the body whatever the type, so the type
/// only matters to people and to proxies in between: a browser or `curl`
/// shows the file instead of saving it, so an operator can read the feature
/// levels it covers. Treating it as text cannot harm it: ClamAV trims each
/// line (LF or CRLF) and the signature itself is base64, so no line-ending or
/// charset handling along the way changes what it says, unlike the CVD,
/// cdiff and CLD bytes a signature covers, which stay
/// `application/octet-stream`.
pub fn content_type(path: &Path) -> &'static str {
    match extension(path) {
        Some(b"sign") => "text/plain; charset=us-ascii",
        Some(b"txt") => "text/plain; charset=utf-8",
        Some(b"html" | b"htm") => "text/html; charset=utf-8",
        Some(b"json") => "application/json",
        Some(b"css") => "text/css; charset=utf-8",
        Some(b"js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn extension_agrees_with_std_on_decoded_paths(p in "(/[a-z.]{1,5}){1,3}/?") {
            let Ok(relative) = super::super::path::decode(&p) else {
                return Ok(());
            };
            prop_assert_eq!(
                extension(&relative),
                relative.extension().map(std::os::unix::ffi::OsStrExt::as_bytes)
            );
        }
    }

    #[test]
    fn mirror_files_are_octet_streams_and_signatures_text() {
        for db in ["main.cvd", "daily.cld", "daily-27781.cdiff"] {
            assert_eq!(content_type(Path::new(db)), "application/octet-stream");
        }
        for sign in [
            "daily-27780.cvd.sign",
            "daily-27781.cdiff.sign",
            "sub/main-62.cld.sign",
        ] {
            assert_eq!(
                content_type(Path::new(sign)),
                "text/plain; charset=us-ascii",
                "{sign}"
            );
        }
        assert_eq!(
            content_type(Path::new("dns.txt")),
            "text/plain; charset=utf-8"
        );
    }
}
