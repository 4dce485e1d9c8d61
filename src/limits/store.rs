//! Quota usage survives restarts: a versioned, checksummed state file.
//!
//! A restart must not hand every client a fresh quota (mod_cband's binary
//! scoreboard had no checksum and was rewritten on every request). The file
//! follows the sync state's format — a `cvdmirror-limits-state 1 <sha256>`
//! line, then JSON — and is replaced atomically, periodically and on
//! shutdown. Counters carry their period start, so a file from an earlier
//! period loads as zero usage. A corrupt file is moved aside with a warning
//! and the limits start empty: losing counters costs a little generosity,
//! never availability.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::usage::QuotaSnapshot;
use crate::atomic_file;

const MAGIC: &str = "cvdmirror-limits-state";
const FORMAT: u32 = 1;

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsState {
    /// Unix milliseconds of the save.
    #[serde(default)]
    pub saved_at_ms: u64,
    /// Quota usage of the current periods.
    #[serde(default)]
    pub quotas: QuotaSnapshot,
}

/// The state file on disk.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The state file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state. Missing: empty. Corrupt: moved to `*.corrupt` with a
    /// warning, empty. Only an I/O error reading or moving it is an error.
    pub fn load(&self) -> io::Result<LimitsState> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LimitsState::default()),
            Err(e) => return Err(e),
        };
        match decode(&bytes) {
            Ok(state) => Ok(state),
            Err(reason) => {
                let aside = self.path.with_extension("corrupt");
                tracing::warn!(
                    path = %self.path.display(), %reason, aside = %aside.display(),
                    "limits state unreadable; quota usage starts from zero"
                );
                std::fs::rename(&self.path, &aside)?;
                Ok(LimitsState::default())
            }
        }
    }

    /// Writes the state atomically and durably (blocking: call from
    /// `spawn_blocking` in async code).
    pub fn save(&self, state: &LimitsState) -> io::Result<()> {
        atomic_file::write(&self.path, &encode(state)?)
    }
}

fn encode(state: &LimitsState) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    let mut out = format!("{MAGIC} {FORMAT} {}\n", hex(&Sha256::digest(&body))).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<LimitsState, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err("not a cvdmirror limits state file".into());
    }
    let format: u32 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or("no format version")?;
    if format != FORMAT {
        return Err(format!(
            "format {format} is not supported (this version reads {FORMAT})"
        ));
    }
    let checksum = fields.next().ok_or("no checksum")?;
    if checksum != hex(&Sha256::digest(body)) {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::client::ClientKey;
    use crate::limits::quota::Usage;

    fn sample() -> LimitsState {
        let mut s = LimitsState {
            saved_at_ms: 1_704_067_200_000,
            ..LimitsState::default()
        };
        let usage = Usage {
            period_start_ms: 1_704_067_200_000,
            used: 12_345,
        };
        s.quotas.sites.insert("mirror".into(), usage);
        let key: ClientKey = "2001:db8:1:2::/64".parse().unwrap();
        s.quotas
            .clients
            .entry("mirror".into())
            .or_default()
            .insert(key, usage);
        s
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("limits-state"));
        assert_eq!(store.load().unwrap(), LimitsState::default());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
    }

    #[test]
    fn every_flipped_byte_is_detected_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("limits-state"));
        store.save(&sample()).unwrap();
        let good = std::fs::read(store.path()).unwrap();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(store.path(), &bad).unwrap();
            assert_eq!(store.load().unwrap(), LimitsState::default(), "byte {i}");
            assert!(dir.path().join("limits-state.corrupt").exists());
            assert!(!store.path().exists());
        }
    }

    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        assert!(
            decode(b"cvdmirror-limits-state 2 00\n{}")
                .unwrap_err()
                .contains("format 2")
        );
        assert!(decode(b"garbage").is_err());
        assert!(decode(b"cvdmirror-sync-state 1 00\n{}").is_err());
    }
}
