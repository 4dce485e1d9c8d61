//! Aborted downloads: a `200` for a whole database whose byte count is less
//! than the file's full size. Logs do not record the full size, so it is
//! inferred: complete downloads of one version all have the same exact byte
//! count, while aborted ones stop at arbitrary points.
//!
//! Method: per file (at most [`FILES_CAP`] names) the byte counts of its
//! `200`s are tallied in a bounded [`TopK`] (exact for frequent sizes). A
//! size is *complete* if it is the largest seen, or if it occurred at least
//! twice and is at least half the largest (a new version of the file). Every
//! other `200` smaller than the largest complete size was aborted, and its
//! bytes were wasted: the client will fetch the file again.

use std::collections::HashMap;

use super::topk::{Rank, TopK};

/// Whole-database file names tracked (more are pooled as one).
pub const FILES_CAP: usize = 64;
/// Distinct sizes kept per file.
const SIZES_CAP: usize = 32;

#[derive(Debug, Clone)]
struct FileSizes {
    sizes: TopK<u64>,
    max: u64,
    count: u64,
    bytes: u64,
}

/// Per-file size tallies.
#[derive(Debug, Clone, Default)]
pub struct Sizes {
    files: HashMap<String, FileSizes>,
}

/// What the tallies say about one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileVerdict {
    /// The file name.
    pub file: String,
    /// The complete sizes, largest first.
    pub full_sizes: Vec<u64>,
    /// `200` responses seen.
    pub downloads: u64,
    /// Of which aborted.
    pub aborted: u64,
    /// Bytes sent in aborted downloads.
    pub wasted_bytes: u64,
}

impl Sizes {
    /// Records a `200` of `bytes` for the whole database `file`.
    pub fn record(&mut self, file: &[u8], bytes: u64) {
        let name = String::from_utf8_lossy(file);
        let key = if self.files.len() >= FILES_CAP && !self.files.contains_key(name.as_ref()) {
            "(other files)".to_string()
        } else {
            name.into_owned()
        };
        let f = self.files.entry(key).or_insert_with(|| FileSizes {
            sizes: TopK::new(SIZES_CAP, Rank::Requests),
            max: 0,
            count: 0,
            bytes: 0,
        });
        f.sizes.add(&bytes, bytes);
        f.max = f.max.max(bytes);
        f.count += 1;
        f.bytes = f.bytes.saturating_add(bytes);
    }

    /// Files tracked now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no download was recorded.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The verdict for every file, most wasted bytes first.
    pub fn verdicts(&self) -> Vec<FileVerdict> {
        let mut out: Vec<FileVerdict> = self
            .files
            .iter()
            .map(|(name, f)| {
                let full = complete_sizes(f);
                let (mut n, mut b) = (0u64, 0u64);
                for (size, c) in f.sizes.top(usize::MAX) {
                    if full.contains(&size) {
                        n += c.requests;
                        b = b.saturating_add(c.bytes);
                    }
                }
                FileVerdict {
                    file: name.clone(),
                    full_sizes: full,
                    downloads: f.count,
                    aborted: f.count.saturating_sub(n),
                    wasted_bytes: f.bytes.saturating_sub(b),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.wasted_bytes
                .cmp(&a.wasted_bytes)
                .then(a.file.cmp(&b.file))
        });
        out
    }

    /// Whether a `200` of `bytes` for `file` was a complete download.
    pub fn is_complete(&self, file: &str, bytes: u64) -> bool {
        self.files
            .get(file)
            .is_none_or(|f| complete_sizes(f).contains(&bytes) || bytes >= f.max)
    }
}

fn complete_sizes(f: &FileSizes) -> Vec<u64> {
    let mut full: Vec<u64> = f
        .sizes
        .top(usize::MAX)
        .into_iter()
        .filter(|(size, c)| *size == f.max || (c.requests >= 2 && *size >= f.max / 2 && *size > 0))
        .map(|(size, _)| size)
        .collect();
    full.sort_unstable_by(|a, b| b.cmp(a));
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_downloads_are_waste() {
        let mut s = Sizes::default();
        for _ in 0..10 {
            s.record(b"daily.cvd", 60_000_000);
        }
        s.record(b"daily.cvd", 1_000_000);
        s.record(b"daily.cvd", 30_000_000);
        s.record(b"daily.cvd", 61_000_000); // the next version, seen once
        s.record(b"daily.cvd", 61_000_000 - 5);
        let v = &s.verdicts()[0];
        assert_eq!(v.full_sizes, vec![61_000_000, 60_000_000]);
        assert_eq!((v.downloads, v.aborted), (14, 3));
        assert_eq!(v.wasted_bytes, 31_000_000 + 61_000_000 - 5);
        assert!(!s.is_complete("daily.cvd", 1_000_000));
        assert!(s.is_complete("daily.cvd", 60_000_000));
    }
}
