//! What a node publishes, as the fleet compares it: every served ClamAV
//! file at the top of the mirror's root with its size, SHA-256 and, for a
//! CVD, its version. A file is hashed once per (size, modification time),
//! so a heartbeat costs a directory listing, not a read of every database.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use cvdmirror_formats::FileKind;
use cvdmirror_formats::cvd;
use sha2::{Digest, Sha256};

use crate::PublishedFile;

/// The published files of a root, hashed incrementally.
#[derive(Debug, Default)]
pub struct PublishedFiles {
    known: BTreeMap<String, (u64, SystemTime, PublishedFile)>,
}

impl PublishedFiles {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The CVD, cdiff and `.sign` files in `root` now, hashing only those
    /// that are new or changed since the last call. Files that cannot be
    /// read (being replaced this instant) are left out until the next call.
    pub fn scan(&mut self, root: &Path) -> io::Result<BTreeMap<String, PublishedFile>> {
        self.walk(root, true)
    }

    /// What [`scan`](Self::scan) finds, without hashing: names, sizes and
    /// CVD versions (from the 512-byte headers) at once, the SHA-256 of a
    /// file only when an earlier scan hashed it, empty otherwise. What a
    /// node reports when it joins, so that its versions count from its
    /// first heartbeat while a large root is still being hashed.
    pub fn list(&mut self, root: &Path) -> io::Result<BTreeMap<String, PublishedFile>> {
        self.walk(root, false)
    }

    fn walk(&mut self, root: &Path, hash: bool) -> io::Result<BTreeMap<String, PublishedFile>> {
        let mut seen = BTreeMap::new();
        let mut listed = BTreeMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let kind = FileKind::of(Path::new(&name));
            if !matches!(kind, FileKind::Cvd | FileKind::Cdiff | FileKind::Sign) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let size = meta.len();
            let cached = self
                .known
                .get(&name)
                .filter(|(s, m, _)| *s == size && *m == modified)
                .map(|(_, _, file)| file.clone());
            let path = root.join(&name);
            match (cached, hash) {
                (Some(file), _) => {
                    seen.insert(name, (size, modified, file));
                }
                (None, true) => {
                    if let Ok(file) = describe(&path, kind) {
                        seen.insert(name, (size, modified, file));
                    }
                }
                (None, false) => {
                    if let Ok(version) = version_of(&path, kind) {
                        let file = PublishedFile {
                            size,
                            sha256: String::new(),
                            version,
                        };
                        listed.insert(name, file);
                    }
                }
            }
        }
        self.known = seen;
        let mut files: BTreeMap<String, PublishedFile> = self
            .known
            .iter()
            .map(|(name, (_, _, file))| (name.clone(), file.clone()))
            .collect();
        files.append(&mut listed);
        Ok(files)
    }
}

/// The version in a CVD's header, `None` for other kinds or a header that
/// does not parse.
fn version_of(path: &Path, kind: FileKind) -> io::Result<Option<u32>> {
    if kind != FileKind::Cvd {
        return Ok(None);
    }
    let mut head = Vec::with_capacity(cvd::HEADER_LEN);
    std::fs::File::open(path)?
        .take(cvd::HEADER_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(cvd::Header::parse(&head).ok().map(|h| h.version))
}

fn describe(path: &Path, kind: FileKind) -> io::Result<PublishedFile> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut head = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < cvd::HEADER_LEN {
            let want = (cvd::HEADER_LEN - head.len()).min(n);
            head.extend_from_slice(&buf[..want]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let version = match kind {
        FileKind::Cvd => cvd::Header::parse(&head).ok().map(|h| h.version),
        _ => None,
    };
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(PublishedFile {
        size,
        sha256,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_mirror_files_with_digests_and_rehashes_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("daily-12.cdiff"), b"abc").unwrap();
        std::fs::write(dir.path().join("index.html"), b"<p>").unwrap();
        std::fs::create_dir(dir.path().join("x.cvd")).unwrap();
        let mut files = PublishedFiles::new();
        let first = files.scan(dir.path()).unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["daily-12.cdiff"]);
        assert_eq!(
            first["daily-12.cdiff"].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(first["daily-12.cdiff"].size, 3);
        std::fs::write(dir.path().join("daily-12.cdiff"), b"abcd").unwrap();
        let second = files.scan(dir.path()).unwrap();
        assert_eq!(second["daily-12.cdiff"].size, 4);
        std::fs::remove_file(dir.path().join("daily-12.cdiff")).unwrap();
        assert!(files.scan(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_listing_has_versions_at_once_and_digests_only_once_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cvd = cvd::build::DbSpec::new("bytecode", 268)
            .header_line()
            .into_bytes();
        cvd.resize(cvd::HEADER_LEN, b' ');
        cvd.extend_from_slice(b"the signatures");
        std::fs::write(dir.path().join("bytecode.cvd"), &cvd).unwrap();
        std::fs::write(dir.path().join("bytecode-268.cdiff"), b"abc").unwrap();
        let mut files = PublishedFiles::new();
        let listed = files.list(dir.path()).unwrap();
        assert_eq!(listed["bytecode.cvd"].version, Some(268));
        assert_eq!(listed["bytecode.cvd"].size, cvd.len() as u64);
        assert_eq!(listed["bytecode.cvd"].sha256, "");
        assert_eq!(listed["bytecode-268.cdiff"].sha256, "");
        let scanned = files.scan(dir.path()).unwrap();
        assert_eq!(scanned["bytecode.cvd"].version, Some(268));
        assert_eq!(scanned["bytecode.cvd"].sha256.len(), 64);
        // Once hashed, a listing keeps the digest.
        let listed = files.list(dir.path()).unwrap();
        assert_eq!(
            listed["bytecode.cvd"].sha256,
            scanned["bytecode.cvd"].sha256
        );
    }
}
