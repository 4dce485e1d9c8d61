//! Traffic per fixed-size time bucket and file class: the timeline the
//! charts draw and the episode detector reads. Lines are placed by their own
//! timestamp, never by arrival order, so files that overlap in time (two
//! servers, a rotated log read after the current one) merge correctly.
//!
//! Bounds: at most `cap` buckets exist. When the time span would need more,
//! the bucket width doubles and neighbours merge (a 14-day log at 1 minute
//! fits the default cap; a month becomes 4-minute buckets). A line's bytes are
//! spread over the buckets its transfer lasted (when the log records a
//! request time, capped at [`MAX_SPREAD_SECS`]) because a saturated link is
//! a matter of bytes per second, not of when a download was logged.

use std::collections::BTreeMap;

use super::classify::Class;

/// Longest transfer spread over several buckets; longer ones are spread over
/// this much time (keeps a hostile duration from costing unbounded work).
pub const MAX_SPREAD_SECS: i64 = 3 * 3600;

/// Counts for one bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    /// Requests that started in this bucket, by [`Class`].
    pub requests: [u64; Class::COUNT],
    /// Bytes transferred during this bucket, by [`Class`].
    pub bytes: [u64; Class::COUNT],
    /// Requests for a patch that got 404.
    pub cdiff_404: u64,
    /// Requests for a `.sign` that got 404 (not counted in `cdiff_404`).
    pub sign_404: u64,
    /// Whole-database downloads that completed a cdiff-404 fallback chain.
    pub fallbacks: u64,
}

impl Bucket {
    /// Bytes of all classes.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    /// Requests of all classes.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    fn merge(&mut self, other: &Bucket) {
        for i in 0..Class::COUNT {
            self.requests[i] += other.requests[i];
            self.bytes[i] = self.bytes[i].saturating_add(other.bytes[i]);
        }
        self.cdiff_404 += other.cdiff_404;
        self.sign_404 += other.sign_404;
        self.fallbacks += other.fallbacks;
    }
}

/// The bucketed timeline.
#[derive(Debug, Clone)]
pub struct Timeline {
    width: i64,
    cap: usize,
    buckets: BTreeMap<i64, Bucket>,
}

impl Timeline {
    /// A timeline of `width_secs`-second buckets holding at most `cap` (≥ 2).
    pub fn new(width_secs: i64, cap: usize) -> Self {
        Self {
            width: width_secs.max(1),
            cap: cap.max(2),
            buckets: BTreeMap::new(),
        }
    }

    /// Current bucket width in seconds (grows when the span exceeds the cap).
    pub fn width(&self) -> i64 {
        self.width
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The most buckets ever held.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn key(&self, t: i64) -> i64 {
        t.div_euclid(self.width) * self.width
    }

    /// Makes room for time `t`, coarsening until the span fits.
    fn cover(&mut self, t: i64) {
        let (Some((&lo, _)), Some((&hi, _))) = (
            self.buckets.first_key_value(),
            self.buckets.last_key_value(),
        ) else {
            return;
        };
        let (lo, hi) = (lo.min(t), hi.max(t));
        while (hi.div_euclid(self.width) - lo.div_euclid(self.width)) as u128 + 1 > self.cap as u128
        {
            self.width = self.width.saturating_mul(2);
            let old = std::mem::take(&mut self.buckets);
            for (k, b) in old {
                self.buckets.entry(self.key(k)).or_default().merge(&b);
            }
        }
    }

    /// The bucket holding time `t`.
    pub fn at(&mut self, t: i64) -> &mut Bucket {
        self.cover(t);
        let k = self.key(t);
        self.buckets.entry(k).or_default()
    }

    /// Adds `bytes` of `class` transferred from `start` for `duration_ms`,
    /// in proportion to how much of the transfer each bucket saw.
    pub fn spread(&mut self, start: i64, duration_ms: u64, class: Class, bytes: u64) {
        let c = class as usize;
        let dur = (duration_ms as i64).min(MAX_SPREAD_SECS * 1000);
        if dur < 1000 || bytes == 0 {
            let b = self.at(start);
            b.bytes[c] = b.bytes[c].saturating_add(bytes);
            return;
        }
        self.cover(start);
        self.cover(start + dur / 1000);
        let (t0, t1) = (start as i128 * 1000, start as i128 * 1000 + dur as i128);
        let mut given: u64 = 0;
        let mut k = self.key(start);
        loop {
            let edge = (k as i128 + self.width as i128) * 1000;
            let upto = edge.min(t1);
            let due = (bytes as u128 * (upto - t0) as u128 / dur as u128) as u64;
            let b = self.buckets.entry(k).or_default();
            b.bytes[c] = b.bytes[c].saturating_add(due - given);
            given = due;
            if edge >= t1 {
                break;
            }
            k += self.width;
        }
    }

    /// Every bucket from the first to the last, empty ones included:
    /// (bucket start in UTC seconds, counts).
    pub fn dense(&self) -> Vec<(i64, Bucket)> {
        let (Some((&lo, _)), Some((&hi, _))) = (
            self.buckets.first_key_value(),
            self.buckets.last_key_value(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(((hi - lo) / self.width + 1) as usize);
        let mut t = lo;
        while t <= hi {
            out.push((t, self.buckets.get(&t).copied().unwrap_or_default()));
            t += self.width;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_bytes_over_the_transfer() {
        let mut t = Timeline::new(60, 100);
        t.spread(30, 120_000, Class::Cvd, 1200);
        let d = t.dense();
        let bytes: Vec<u64> = d.iter().map(|(_, b)| b.bytes[0]).collect();
        assert_eq!(bytes, vec![300, 600, 300]);
    }

    #[test]
    fn coarsens_instead_of_growing() {
        let mut t = Timeline::new(60, 10);
        for m in 0..1000 {
            t.at(m * 60).requests[0] += 1;
            assert!(t.len() <= t.cap());
        }
        assert!(t.width() >= 60 * 100);
        let total: u64 = t.dense().iter().map(|(_, b)| b.requests[0]).sum();
        assert_eq!(total, 1000);
        // A wild outlier coarsens but never allocates the whole span.
        t.at(250_000_000_000);
        assert!(t.len() <= t.cap());
    }
}
