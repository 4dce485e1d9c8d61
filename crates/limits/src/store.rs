//! Quota usage survives restarts: a versioned, checksummed state file.
//!
//! A restart must not hand every client a fresh quota (mod_cband's binary
//! scoreboard had no checksum and was rewritten on every request). The file
//! is a [`StateFile`] (`cvdmirror-limits-state 1 <sha256>` line, then JSON),
//! replaced atomically, periodically and on
//! shutdown. Counters carry their period start, so a file from an earlier
//! period loads as zero usage. A corrupt file is moved aside with a warning
//! and the limits start empty: losing counters costs a little generosity,
//! never availability.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::usage::QuotaSnapshot;
use crate::state_file::StateFile;

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
    file: StateFile,
}

impl StateStore {
    /// The state file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            file: StateFile::new(path, MAGIC, FORMAT),
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads the state. Missing: empty. Corrupt: moved to `*.corrupt` with a
    /// warning, empty. Only an I/O error reading or moving it is an error.
    pub fn load(&self) -> io::Result<LimitsState> {
        self.file.load()
    }

    /// Writes the state atomically and durably (blocking: call from
    /// `spawn_blocking` in async code).
    pub fn save(&self, state: &LimitsState) -> io::Result<()> {
        self.file.save(state)
    }
}

#[cfg(test)]
fn decode(bytes: &[u8]) -> Result<LimitsState, String> {
    StateFile::new(PathBuf::new(), MAGIC, FORMAT).decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;
    use crate::quota::Usage;

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
