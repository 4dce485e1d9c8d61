//! Air-gapped mirrors: the published set in one file that can be carried
//! across a gap, and read back by the sync engine as if it were upstream.
//!
//! A bundle is a plain POSIX tar file (`tar tf` lists it): `manifest.json`
//! first ([`manifest`]: format, when and by what it was written, each
//! database's CVD version, and each file's name, kind, version, size and
//! SHA-256), then the files in the order the engine publishes them (per
//! database: each cdiff after its `.sign`, the CVD's `.sign`, the CVD).
//! Not compressed: CVDs and cdiffs already are, and an uncompressed tar
//! can be read in place, each file at its offset, without unpacking it.
//!
//! Reading one ([`Bundle::open`]) trusts nothing: the manifest must be
//! consistent, every file it lists must be there with its size and SHA-256,
//! nothing unlisted may be there, and each CVD's header must carry the
//! version the manifest gives. Only then does the engine see the files
//! ([`LocalSource`]), and it verifies their signatures as it verifies any
//! upstream's. A directory works too: an unpacked bundle (its manifest is
//! checked the same way) or a plain copy of a mirror's root (no manifest:
//! the engine's verification is the only check).

pub mod import;
pub mod manifest;
mod source;
mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

pub use manifest::{DbEntry, FileEntry, Kind, Manifest};
pub use source::LocalSource;
pub use write::export;

use crate::cvd;

/// Largest `manifest.json` read (a year of daily cdiffs is ~100 kB).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Copy and hash buffer.
const CHUNK: usize = 256 * 1024;

/// Why a bundle cannot be used. Nothing is taken from a bundle with any of
/// these.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The file or a file in it cannot be read (or written, when exporting).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not a tar file, or not one cvdmirror wrote.
    #[error("not a cvdmirror bundle: {0}")]
    NotABundle(String),
    /// The manifest is unreadable or inconsistent.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A file the manifest lists is absent.
    #[error("{0}: listed in the manifest but not in the bundle")]
    Missing(String),
    /// A file is present that the manifest does not list.
    #[error("{0}: in the bundle but not listed in its manifest")]
    Unlisted(String),
    /// A file's size differs from the manifest's.
    #[error("{name}: {actual} bytes, the manifest says {listed}")]
    Size {
        /// The file.
        name: String,
        /// What the manifest says.
        listed: u64,
        /// What is there.
        actual: u64,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error(
        "{name}: SHA-256 {actual} differs from the manifest's {listed}: the file was damaged or changed"
    )]
    Hash {
        /// The file.
        name: String,
        /// What the manifest says.
        listed: String,
        /// What is there.
        actual: String,
    },
    /// A CVD's header disagrees with the manifest.
    #[error("{name}: {reason}")]
    Cvd {
        /// The file.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An opened bundle whose manifest and files were checked.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    store: Store,
    manifest: Option<Manifest>,
    /// Listed files: where they are, how long, their SHA-256.
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug)]
enum Store {
    /// A tar file, held open: a bundle replaced while a pass runs does not
    /// change under it.
    Tar { file: File, identity: Identity },
    /// A directory.
    Dir,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Offset of the data in the tar (0 in a directory).
    offset: u64,
    size: u64,
    sha256: [u8; 32],
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Bundle {
    /// Opens a bundle file or a directory and checks it (see the module
    /// documentation). Reads every file once, to hash it.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let meta = std::fs::metadata(path).map_err(io_error(path))?;
        let bundle = if meta.is_dir() {
            Self::open_dir(path)?
        } else {
            Self::open_tar(path)?
        };
        bundle.check_files()?;
        Ok(bundle)
    }

    fn open_tar(path: &Path) -> Result<Bundle, BundleError> {
        let file = File::open(path).map_err(io_error(path))?;
        let identity = Identity::of(&file.metadata().map_err(io_error(path))?);
        let not_tar =
            |e: io::Error| BundleError::NotABundle(format!("not a readable tar file: {e}"));
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        let mut manifest_text = None;
        let mut archive = tar::Archive::new(&file);
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            let kind = entry.header().entry_type();
            let raw = entry
                .path()
                .map_err(not_tar)?
                .to_string_lossy()
                .into_owned();
            let name = raw.strip_prefix("./").unwrap_or(&raw).to_owned();
            if kind.is_pax_global_extensions()
                || (kind.is_dir() && matches!(name.as_str(), "" | "." | "./"))
            {
                continue;
            }
            if !kind.is_file() {
                return Err(BundleError::NotABundle(format!(
                    "{raw:?} is not a plain file (a bundle holds nothing else)"
                )));
            }
            if name == manifest::NAME {
                if entry.size() > MAX_MANIFEST_BYTES {
                    return Err(BundleError::Manifest("larger than 16 MiB".into()));
                }
                let mut text = Vec::new();
                entry.read_to_end(&mut text).map_err(not_tar)?;
                manifest_text = Some(text);
                continue;
            }
            let located = Entry {
                offset: entry.raw_file_position(),
                size: entry.size(),
                sha256: [0; 32],
            };
            if found.insert(name.clone(), located).is_some() {
                return Err(BundleError::NotABundle(format!("{name} is stored twice")));
            }
        }
        let text = manifest_text
            .ok_or_else(|| BundleError::NotABundle(format!("it has no {}", manifest::NAME)))?;
        let manifest = parse_manifest(&text)?;
        if let Some(name) = found.keys().find(|n| manifest.file(n).is_none()) {
            return Err(BundleError::Unlisted(name.clone()));
        }
        let mut entries = BTreeMap::new();
        for listed in &manifest.files {
            let mut entry = found
                .remove(&listed.name)
                .ok_or_else(|| BundleError::Missing(listed.name.clone()))?;
            entry.sha256 = parse_hex(&listed.sha256);
            if entry.size != listed.size {
                return Err(BundleError::Size {
                    name: listed.name.clone(),
                    listed: listed.size,
                    actual: entry.size,
                });
            }
            entries.insert(listed.name.clone(), entry);
        }
        Ok(Bundle {
            path: path.to_owned(),
            store: Store::Tar { file, identity },
            manifest: Some(manifest),
            entries,
        })
    }

    fn open_dir(path: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = path.join(manifest::NAME);
        let manifest = match std::fs::read(&manifest_path) {
            Ok(text) => Some(parse_manifest(&text)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&manifest_path)(e)),
        };
        let mut entries = BTreeMap::new();
        for listed in manifest.iter().flat_map(|m| &m.files) {
            let file = path.join(&listed.name);
            let meta = match std::fs::metadata(&file) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => return Err(BundleError::Missing(listed.name.clone())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BundleError::Missing(listed.name.clone()));
                }
                Err(e) => return Err(io_error(&file)(e)),
            };
            if meta.len() != listed.size {
                return Err(BundleError::Size {
                    name: listed.name.clone(),
                    listed: listed.size,
                    actual: meta.len(),
                });
            }
            let entry = Entry {
                offset: 0,
                size: listed.size,
                sha256: parse_hex(&listed.sha256),
            };
            entries.insert(listed.name.clone(), entry);
        }
        Ok(Bundle {
            path: path.to_owned(),
            store: Store::Dir,
            manifest,
            entries,
        })
    }

    /// Hashes every listed file and reads each CVD's header.
    fn check_files(&self) -> Result<(), BundleError> {
        let Some(manifest) = &self.manifest else {
            return Ok(());
        };
        for listed in &manifest.files {
            let mut hasher = Sha256::new();
            self.read(&listed.name, u64::MAX, &mut |chunk| {
                hasher.update(chunk);
                Ok(())
            })?;
            self.check_hash(&listed.name, hasher)?;
            if listed.kind == Kind::Cvd {
                let head = self.head(&listed.name)?.unwrap_or_default();
                let header = cvd::Header::parse(&head).map_err(|e| BundleError::Cvd {
                    name: listed.name.clone(),
                    reason: format!("not a CVD: {e}"),
                })?;
                if header.version != listed.version {
                    return Err(BundleError::Cvd {
                        name: listed.name.clone(),
                        reason: format!(
                            "its header says version {}, the manifest says {}",
                            header.version, listed.version
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_hash(&self, name: &str, hasher: Sha256) -> Result<(), BundleError> {
        let actual: [u8; 32] = hasher.finalize().into();
        match self.entries.get(name) {
            Some(entry) if entry.sha256 != actual => Err(BundleError::Hash {
                name: name.to_owned(),
                listed: manifest::hex(&entry.sha256),
                actual: manifest::hex(&actual),
            }),
            _ => Ok(()),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// "bundle PATH" or "directory PATH", for messages.
    pub fn describe(&self) -> String {
        match self.store {
            Store::Tar { .. } => format!("bundle {}", self.path.display()),
            Store::Dir => format!("directory {}", self.path.display()),
        }
    }

    /// The manifest (none for a plain directory).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Whether the file at the path is still the one opened (a directory
    /// never is: files in it may change without it).
    pub fn is_unchanged(&self) -> bool {
        match &self.store {
            Store::Tar { identity, .. } => {
                std::fs::metadata(&self.path).is_ok_and(|meta| Identity::of(&meta) == *identity)
            }
            Store::Dir => false,
        }
    }

    /// Whether `name` is offered: listed in the manifest, or (in a plain
    /// directory) a file with a servable name.
    fn path_of(&self, name: &str) -> Option<PathBuf> {
        manifest::parse_name(name)?;
        match (&self.store, &self.manifest) {
            (Store::Dir, None) => Some(self.path.join(name)),
            (Store::Dir, Some(_)) if self.entries.contains_key(name) => Some(self.path.join(name)),
            _ => None,
        }
    }

    /// The size of `name`; `Ok(None)` when the bundle does not offer it.
    pub fn size(&self, name: &str) -> Result<Option<u64>, BundleError> {
        if let Store::Tar { .. } = self.store {
            return Ok(self.entries.get(name).map(|e| e.size));
        }
        let Some(path) = self.path_of(name) else {
            return Ok(None);
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Feeds up to `limit` bytes of `name` to `sink` in chunks; `Ok(None)`
    /// when the bundle does not offer it, else how many bytes were fed.
    fn read(
        &self,
        name: &str,
        limit: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), BundleError>,
    ) -> Result<Option<u64>, BundleError> {
        let mut buf = vec![0; CHUNK];
        if let Store::Tar { file, .. } = &self.store {
            let Some(entry) = self.entries.get(name) else {
                return Ok(None);
            };
            let end = entry.size.min(limit);
            let mut done = 0;
            while done < end {
                let want = (end - done).min(CHUNK as u64) as usize;
                let n = file
                    .read_at(&mut buf[..want], entry.offset + done)
                    .map_err(io_error(&self.path))?;
                if n == 0 {
                    return Err(BundleError::NotABundle(format!(
                        "{name}: the bundle ends inside it (truncated)"
                    )));
                }
                sink(&buf[..n])?;
                done += n as u64;
            }
            return Ok(Some(done));
        }
        let Some(path) = self.path_of(name) else {
            return Ok(None);
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let mut file = file.take(limit);
        let mut done = 0;
        loop {
            let n = file.read(&mut buf).map_err(io_error(&path))?;
            if n == 0 {
                return Ok(Some(done));
            }
            sink(&buf[..n])?;
            done += n as u64;
        }
    }

    /// The first 512 bytes of `name` (fewer if it is shorter).
    pub fn head(&self, name: &str) -> Result<Option<Vec<u8>>, BundleError> {
        let mut head = Vec::with_capacity(cvd::HEADER_LEN);
        let found = self.read(name, cvd::HEADER_LEN as u64, &mut |chunk| {
            head.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(found.map(|_| head))
    }

    /// Copies `name` to `dest` (created or truncated, then fsynced),
    /// checking its SHA-256 against the manifest on the way; `Ok(None)` when
    /// the bundle does not offer it, else its length.
    pub fn copy_to(&self, name: &str, dest: &Path) -> Result<Option<u64>, BundleError> {
        if self.size(name)?.is_none() {
            return Ok(None);
        }
        let mut out = File::create(dest).map_err(io_error(dest))?;
        let mut hasher = Sha256::new();
        let copied = self.read(name, u64::MAX, &mut |chunk| {
            hasher.update(chunk);
            out.write_all(chunk).map_err(io_error(dest))
        })?;
        out.sync_all().map_err(io_error(dest))?;
        self.check_hash(name, hasher)?;
        Ok(copied)
    }
}

/// Length and SHA-256 of everything `reader` yields.
fn sha256_of(mut reader: impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut len = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok((len, hasher.finalize().into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

fn parse_manifest(text: &[u8]) -> Result<Manifest, BundleError> {
    let manifest: Manifest = serde_json::from_slice(text)
        .map_err(|e| BundleError::Manifest(format!("unreadable: {e}")))?;
    manifest.check().map_err(BundleError::Manifest)?;
    Ok(manifest)
}

/// A checked manifest's hex digest (64 hex digits, see [`Manifest::check`]).
fn parse_hex(hex: &str) -> [u8; 32] {
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvd::build::{self, DbSpec};
    use crate::cvd::testkeys;

    /// A root serving daily 7 with cdiffs 6 and 7, exported to a bundle.
    fn exported() -> (tempfile::TempDir, PathBuf, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let keys = testkeys::signing_keys();
        let cvd = build::cvd(&DbSpec::new("daily", 7), &keys).unwrap();
        std::fs::write(root.join("daily.cvd"), cvd).unwrap();
        for v in [6, 7] {
            let cdiff = build::cdiff("daily", v, &keys).unwrap();
            std::fs::write(root.join(format!("daily-{v}.cdiff")), cdiff).unwrap();
        }
        // Not part of the served set: never exported.
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        let out = dir.path().join("b.tar");
        let manifest = export(&root, &out, &[]).unwrap();
        (dir, out, manifest)
    }

    #[test]
    fn an_exported_bundle_opens_and_reads_back() {
        let (dir, out, manifest) = exported();
        let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["daily-6.cdiff", "daily-7.cdiff", "daily.cvd"]);
        let bundle = Bundle::open(&out).unwrap();
        assert_eq!(bundle.manifest(), Some(&manifest));
        assert!(bundle.is_unchanged());
        let head = bundle.head("daily.cvd").unwrap().unwrap();
        assert_eq!(cvd::Header::parse(&head).unwrap().version, 7);
        let copy = dir.path().join("copy");
        let len = bundle.copy_to("daily-7.cdiff", &copy).unwrap().unwrap();
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(dir.path().join("root/daily-7.cdiff")).unwrap()
        );
        assert_eq!(len, manifest.file("daily-7.cdiff").unwrap().size);
        assert!(bundle.copy_to("daily-5.cdiff", &copy).unwrap().is_none());
        assert!(bundle.head("main.cvd").unwrap().is_none());
    }

    #[test]
    fn an_unpacked_bundle_is_checked_like_the_file() {
        let (dir, out, _) = exported();
        let unpacked = dir.path().join("unpacked");
        tar::Archive::new(File::open(&out).unwrap())
            .unpack(&unpacked)
            .unwrap();
        let bundle = Bundle::open(&unpacked).unwrap();
        assert!(bundle.manifest().is_some());
        assert_eq!(
            bundle.size("daily-6.cdiff").unwrap(),
            Some(
                std::fs::metadata(unpacked.join("daily-6.cdiff"))
                    .unwrap()
                    .len()
            )
        );
        // Only listed files are offered.
        std::fs::write(unpacked.join("daily-5.cdiff"), b"x").unwrap();
        assert!(bundle.size("daily-5.cdiff").unwrap().is_none());

        let mut bytes = std::fs::read(unpacked.join("daily-6.cdiff")).unwrap();
        bytes[10] ^= 1;
        std::fs::write(unpacked.join("daily-6.cdiff"), &bytes).unwrap();
        let err = Bundle::open(&unpacked).unwrap_err();
        assert!(
            matches!(err, BundleError::Hash { ref name, .. } if name == "daily-6.cdiff"),
            "{err}"
        );
        std::fs::remove_file(unpacked.join("daily-6.cdiff")).unwrap();
        let err = Bundle::open(&unpacked).unwrap_err();
        assert!(
            matches!(err, BundleError::Missing(ref name) if name == "daily-6.cdiff"),
            "{err}"
        );
    }

    #[test]
    fn a_plain_directory_offers_servable_names_only() {
        let (dir, _, _) = exported();
        let root = dir.path().join("root");
        let bundle = Bundle::open(&root).unwrap();
        assert!(bundle.manifest().is_none());
        assert!(bundle.size("daily.cvd").unwrap().is_some());
        assert!(bundle.size("notes.txt").unwrap().is_none());
        assert!(bundle.size("../root/daily.cvd").unwrap().is_none());
    }

    #[test]
    fn export_refuses_a_root_without_databases() {
        let dir = tempfile::tempdir().unwrap();
        let err = export(dir.path(), &dir.path().join("b.tar"), &[]).unwrap_err();
        assert!(err.to_string().contains("no published database"), "{err}");
        let (dir, _, _) = exported();
        let err = export(
            &dir.path().join("root"),
            &dir.path().join("c.tar"),
            &["main".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("no published main.cvd"), "{err}");
        assert!(!dir.path().join("c.tar").exists());
    }
}
