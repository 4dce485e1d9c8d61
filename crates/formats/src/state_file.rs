//! The one format for state cvdmirror keeps between runs (sync cool-downs,
//! quota usage): a header line `<magic> <format> <sha256 of the rest>`, then
//! JSON, replaced atomically.
//!
//! The magic says what the file is, the format number lets a newer version
//! refuse what it cannot read, and the checksum catches torn or flipped
//! bytes that JSON would happily accept. A file that fails any check is
//! moved aside (`*.corrupt`) with a warning and the caller starts from its
//! default: state here is worth keeping, never worth refusing to start for.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::atomic_file;

/// A state file of one kind.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    magic: &'static str,
    format: u32,
}

impl StateFile {
    /// A state file at `path` whose header says `magic` and `format`.
    pub fn new(path: PathBuf, magic: &'static str, format: u32) -> Self {
        Self {
            path,
            magic,
            format,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state. Missing: the default. Unreadable: moved aside with a
    /// warning, the default. Only an I/O error reading or moving it is an error.
    pub fn load<T: DeserializeOwned + Default>(&self) -> io::Result<T> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
            Err(e) => return Err(e),
        };
        match self.decode(&bytes) {
            Ok(state) => Ok(state),
            Err(reason) => {
                let aside = self.path.with_extension("corrupt");
                tracing::warn!(path = %self.path.display(), %reason, aside = %aside.display(), "state file unreadable; starting afresh");
                std::fs::rename(&self.path, &aside)?;
                Ok(T::default())
            }
        }
    }

    /// Writes the state atomically and durably (blocking), creating its
    /// directory on first use.
    pub fn save<T: Serialize>(&self, state: &T) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        atomic_file::write(&self.path, &self.encode(state)?)
    }

    /// The file's bytes for `state`.
    pub fn encode<T: Serialize>(&self, state: &T) -> io::Result<Vec<u8>> {
        let body = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        let mut out = format!(
            "{} {} {}\n",
            self.magic,
            self.format,
            hex(&Sha256::digest(&body))
        )
        .into_bytes();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The state in `bytes`, or why they are not a valid file of this kind.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
        let body = &bytes[newline + 1..];
        let mut fields = header.split(' ');
        if fields.next() != Some(self.magic) {
            return Err(format!("not a {} file", self.magic));
        }
        let format: u32 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or("no format version")?;
        if format != self.format {
            return Err(format!(
                "format {format} is not supported (this version reads {})",
                self.format
            ));
        }
        let checksum = fields.next().ok_or("no checksum")?;
        if checksum != hex(&Sha256::digest(body)) {
            return Err("checksum mismatch".into());
        }
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
