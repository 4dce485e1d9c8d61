//! What the sync engine remembers between passes and restarts: upstream
//! cool-downs (`429 Retry-After`, `403`), recent requests per file (the
//! etiquette budget), partial downloads to resume, and when each cdiff was
//! first published (for retention), what the published CVDs' signatures
//! were found to be, and when a replaced CVD's `.sign` was retired.
//!
//! The file is a [`state_file::StateFile`] (`cvdmirror-sync-state 1
//! <sha256>` on the first line, JSON after it), replaced atomically. Published
//! versions are deliberately *not* stored here: they are read from the
//! served files themselves, so state can never disagree with what clients
//! see. A corrupt state file is set aside and the engine starts afresh with
//! a warning; losing it costs at most a few extra polite requests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::signatures::DbSignatures;
use crate::state_file;

const MAGIC: &str = "cvdmirror-sync-state";
const FORMAT: u32 = 1;

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// Per upstream file name (`daily.cvd`, `daily-27654.cdiff`).
    #[serde(default)]
    pub files: BTreeMap<String, FileState>,
    /// cdiff file name → Unix time it was first published here.
    #[serde(default)]
    pub published_at: BTreeMap<String, u64>,
    /// Upstream answered `403` (we are banned) until this Unix time.
    #[serde(default)]
    pub forbidden_until: Option<u64>,
    /// The last pass.
    #[serde(default)]
    pub last_pass: Option<PassRecord>,
    /// Consecutive failed passes (drives the schedule's backoff).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Per database: which signatures the published CVD carried when it was
    /// verified (so the status need not re-hash it at every start).
    #[serde(default)]
    pub signatures: BTreeMap<String, DbSignatures>,
    /// `.sign` of a replaced CVD (`daily-27780.cvd.sign`) → Unix time its
    /// CVD was replaced; removed after the grace period.
    #[serde(default)]
    pub retired_at: BTreeMap<String, u64>,
}

/// What we know about one upstream file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    /// No request before this Unix time (`429 Retry-After`).
    #[serde(default)]
    pub cool_down_until: Option<u64>,
    /// Unix times of recent requests (pruned to the last hour).
    #[serde(default)]
    pub recent_requests: Vec<u64>,
    /// Validator of a partial download in staging, for `If-Range`.
    #[serde(default)]
    pub partial_validator: Option<String>,
    /// Unix time upstream first answered `404` for it (cleared on success).
    #[serde(default)]
    pub missing_since: Option<u64>,
}

/// Outcome of a pass, for status and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    /// Unix time it started.
    pub started: u64,
    /// Unix time it ended.
    pub finished: u64,
    /// Whether the served set is complete and current.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// The state file on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    file: state_file::StateFile,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            file: state_file::StateFile::new(path, MAGIC, FORMAT),
        }
    }

    /// Reads the state; a missing file is an empty state, a corrupt one is
    /// moved aside (with a warning) and replaced by an empty state.
    pub fn load(&self) -> io::Result<SyncState> {
        self.file.load()
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &SyncState) -> io::Result<()> {
        self.file.save(state)
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
fn decode(bytes: &[u8]) -> Result<SyncState, String> {
    state_file::StateFile::new(PathBuf::new(), MAGIC, FORMAT).decode(bytes)
}

impl SyncState {
    /// The state of one upstream file, created on first use.
    pub fn file(&mut self, name: &str) -> &mut FileState {
        self.files.entry(name.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SyncState {
        let mut s = SyncState::default();
        s.file("daily.cvd").cool_down_until = Some(1_700_000_000);
        s.published_at.insert("daily-5.cdiff".into(), 1_600_000_000);
        s.consecutive_failures = 2;
        s
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sync-state"));
        assert_eq!(file.load().unwrap(), SyncState::default());
        file.save(&sample()).unwrap();
        assert_eq!(file.load().unwrap(), sample());
    }

    #[test]
    fn a_flipped_byte_is_detected_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sync-state"));
        file.save(&sample()).unwrap();
        let mut bytes = std::fs::read(file.path()).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(file.path(), bytes).unwrap();
        assert_eq!(file.load().unwrap(), SyncState::default());
        assert!(dir.path().join("sync-state.corrupt").exists());
    }

    #[test]
    fn unknown_formats_are_refused() {
        assert!(
            decode(b"cvdmirror-sync-state 2 00\n{}")
                .unwrap_err()
                .contains("format 2")
        );
        assert!(decode(b"garbage").is_err());
    }
}
