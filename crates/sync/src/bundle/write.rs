//! Writing a bundle: the published set of a root, as it is at one instant,
//! into one tar file with its manifest first.
//!
//! The set is chosen and every file opened while holding the root's sync
//! lock, so a pass running beside the export cannot put half an update into
//! the bundle; after that the open files keep their content even if a pass
//! replaces them, and the lock is released at once. The bundle is written
//! beside its final name and renamed into place, so a bundle that exists
//! is complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::manifest::{self, DbEntry, FileEntry, Kind, Manifest};
use super::{BundleError, io_error};
use crate::atomic_file;
use crate::cvd;
use crate::publish;

/// One file chosen for the bundle, held open.
struct Chosen {
    entry: FileEntry,
    file: File,
    mtime: u64,
}

/// Writes the published set of `databases` (all with a `<db>.cvd` in
/// `root` when empty) into the bundle `out`: each CVD with its `.sign`, and
/// every cdiff up to its version with theirs.
pub fn export(root: &Path, out: &Path, databases: &[String]) -> Result<Manifest, BundleError> {
    let lock = match publish::lock(root, |path| {
        tracing::info!(lock = %path.display(), "a sync pass is running on this root; waiting for it to finish");
    }) {
        Ok(lock) => Some(lock),
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "cannot take the root's sync lock; exporting without it");
            None
        }
    };
    let mut chosen = choose(root, databases)?;
    drop(lock);
    let mut dbs = BTreeMap::new();
    for c in &mut chosen {
        let (size, sha256) = hash(&mut c.file).map_err(io_error(&root.join(&c.entry.name)))?;
        c.entry.size = size;
        c.entry.sha256 = manifest::hex(&sha256);
        if c.entry.kind == Kind::Cvd {
            dbs.insert(
                c.entry.database.clone(),
                DbEntry {
                    version: c.entry.version,
                },
            );
        }
    }
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        producer: format!("cvdmirror {}", env!("CARGO_PKG_VERSION")),
        databases: dbs,
        files: chosen.iter().map(|c| c.entry.clone()).collect(),
    };
    manifest.check().map_err(BundleError::Manifest)?;
    let tmp = temporary(out)?;
    let written = write_tar(&tmp, &manifest, &mut chosen)
        .and_then(|()| atomic_file::rename_durably(&tmp, out).map_err(io_error(out)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| manifest)
}

/// Picks the files and opens them (under the root's lock).
fn choose(root: &Path, databases: &[String]) -> Result<Vec<Chosen>, BundleError> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_error(root))? {
        let entry = entry.map_err(io_error(root))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    let mut wanted: Vec<String> = names
        .iter()
        .filter_map(|n| manifest::parse_name(n))
        .filter(|n| n.kind == Kind::Cvd)
        .map(|n| n.database)
        .filter(|db| databases.is_empty() || databases.contains(db))
        .collect();
    wanted.sort();
    if let Some(db) = databases.iter().find(|db| !wanted.contains(db)) {
        return Err(BundleError::NotABundle(format!(
            "{} has no published {db}.cvd to export",
            root.display()
        )));
    }
    if wanted.is_empty() {
        return Err(BundleError::NotABundle(format!(
            "{} has no published database (no <db>.cvd) to export",
            root.display()
        )));
    }
    let mut chosen = Vec::new();
    for db in &wanted {
        let cvd_name = format!("{db}.cvd");
        let cvd_path = root.join(&cvd_name);
        let mut cvd_file = File::open(&cvd_path).map_err(io_error(&cvd_path))?;
        let mut head = [0; cvd::HEADER_LEN];
        cvd_file
            .read_exact(&mut head)
            .map_err(io_error(&cvd_path))?;
        let version = cvd::Header::parse(&head)
            .map_err(|e| BundleError::Cvd {
                name: cvd_name.clone(),
                reason: format!("not a CVD: {e}"),
            })?
            .version;
        let mut cdiffs: Vec<u32> = names
            .iter()
            .filter_map(|n| publish::cdiff_version(n, db))
            .filter(|&v| v <= version)
            .collect();
        cdiffs.sort_unstable();
        let mut add = |name: String, kind: Kind, version: u32, file: Option<File>| {
            let path = root.join(&name);
            let file = match file {
                Some(file) => file,
                None => match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io_error(&path)(e)),
                },
            };
            let mtime = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            chosen.push(Chosen {
                entry: FileEntry {
                    name,
                    kind,
                    database: db.clone(),
                    version,
                    size: 0,
                    sha256: String::new(),
                },
                file,
                mtime,
            });
            Ok(())
        };
        for v in cdiffs {
            let cdiff = format!("{db}-{v}.cdiff");
            add(cvd::sign::cdiff_sign_name(&cdiff), Kind::Sign, v, None)?;
            add(cdiff, Kind::Cdiff, v, None)?;
        }
        add(
            cvd::sign::cvd_sign_name(db, version),
            Kind::Sign,
            version,
            None,
        )?;
        add(cvd_name, Kind::Cvd, version, Some(cvd_file))?;
    }
    Ok(chosen)
}

fn hash(file: &mut File) -> io::Result<(u64, [u8; 32])> {
    file.rewind()?;
    super::sha256_of(&*file)
}

/// A name beside `out` that the final rename replaces it with.
fn temporary(out: &Path) -> Result<PathBuf, BundleError> {
    let name = out
        .file_name()
        .ok_or_else(|| BundleError::Io {
            path: out.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        })?
        .to_string_lossy();
    Ok(out.with_file_name(format!(".{name}.tmp-{}", std::process::id())))
}

fn write_tar(path: &Path, manifest: &Manifest, chosen: &mut [Chosen]) -> Result<(), BundleError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let text =
        serde_json::to_vec_pretty(manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tar.append_data(
        &mut header(text.len() as u64, now),
        manifest::NAME,
        &text[..],
    )
    .map_err(io_error(path))?;
    for c in chosen {
        c.file.rewind().map_err(io_error(path))?;
        let mut reader = Hashing {
            inner: (&c.file).take(c.entry.size),
            hasher: Sha256::new(),
            read: 0,
        };
        tar.append_data(
            &mut header(c.entry.size, c.mtime),
            &c.entry.name,
            &mut reader,
        )
        .map_err(io_error(path))?;
        let sha256: [u8; 32] = reader.hasher.finalize().into();
        if reader.read != c.entry.size || manifest::hex(&sha256) != c.entry.sha256 {
            return Err(BundleError::Cvd {
                name: c.entry.name.clone(),
                reason: "changed while it was being exported (something other than cvdmirror writes into the root); try again".into(),
            });
        }
    }
    let file = tar
        .into_inner()
        .map_err(io_error(path))?
        .into_inner()
        .map_err(|e| io_error(path)(e.into_error()))?;
    file.sync_all().map_err(io_error(path))
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Hashes what the tar builder reads, to prove it is what the manifest says.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
