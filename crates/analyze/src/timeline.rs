//! Traffic per fixed-size time bucket and file class: the timeline the
//! charts draw and the episode detector reads. Lines are placed by their own
//! timestamp, never by arrival order, so files that overlap in time (two
//! servers, a rotated log read after the current one) merge correctly.
//!
//! Bounds: at most `cap` buckets exist (a dense run from the first time to
//! the last). When the time span would need more,
//! the bucket width doubles and neighbours merge (a 14-day log at 1 minute
//! fits the default cap; a month becomes 4-minute buckets). A line's bytes are
//! spread over the buckets its transfer lasted (when the log records a
//! request time, capped at [`MAX_SPREAD_SECS`]) because a saturated link is
//! a matter of bytes per second, not of when a download was logged.

use std::collections::VecDeque;

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
    /// All bytes as a naive reading places them: evenly over each logged
    /// request time, else in the second of the stamp (what a
    /// timestamp-only tool shows), kept to show how far off that would be.
    pub naive_bytes: u64,
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
        self.naive_bytes = self.naive_bytes.saturating_add(other.naive_bytes);
        self.cdiff_404 += other.cdiff_404;
        self.sign_404 += other.sign_404;
        self.fallbacks += other.fallbacks;
    }
}

/// The bucketed timeline: a dense run of buckets from the first to the last
/// time seen (so a line costs an index, not a tree search).
#[derive(Debug, Clone)]
pub struct Timeline {
    width: i64,
    cap: usize,
    /// Start of `buckets[0]`.
    origin: i64,
    buckets: VecDeque<Bucket>,
}

impl Timeline {
    /// A timeline of `width_secs`-second buckets holding at most `cap` (≥ 2).
    pub fn new(width_secs: i64, cap: usize) -> Self {
        Self {
            width: width_secs.max(1),
            cap: cap.max(2),
            origin: 0,
            buckets: VecDeque::new(),
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

    fn last_key(&self) -> i64 {
        self.origin + (self.buckets.len() as i64 - 1) * self.width
    }

    /// Makes room for time `t`, coarsening until the span fits, and returns
    /// its bucket's index.
    fn cover(&mut self, t: i64) -> usize {
        if self.buckets.is_empty() {
            self.origin = self.key(t);
            self.buckets.push_back(Bucket::default());
            return 0;
        }
        let (lo, hi) = (self.origin.min(t), self.last_key().max(t));
        while (hi.div_euclid(self.width) as i128 - lo.div_euclid(self.width) as i128) + 1
            > self.cap as i128
        {
            self.coarsen();
        }
        let k = self.key(t);
        while k < self.origin {
            self.buckets.push_front(Bucket::default());
            self.origin -= self.width;
        }
        while k > self.last_key() {
            self.buckets.push_back(Bucket::default());
        }
        ((k - self.origin) / self.width) as usize
    }

    /// Doubles the bucket width, merging neighbours.
    fn coarsen(&mut self) {
        let (old_width, old_origin) = (self.width, self.origin);
        self.width = self.width.saturating_mul(2);
        let old = std::mem::take(&mut self.buckets);
        self.origin = self.key(old_origin);
        for (i, b) in old.iter().enumerate() {
            let k = self.key(old_origin + i as i64 * old_width);
            let idx = ((k - self.origin) / self.width) as usize;
            if idx >= self.buckets.len() {
                self.buckets.push_back(Bucket::default());
            }
            if let Some(slot) = self.buckets.get_mut(idx) {
                slot.merge(b);
            }
        }
    }

    /// Makes room for every second from `from` to `to` (coarsening if the
    /// span needs it).
    pub fn cover_range(&mut self, from: i64, to: i64) {
        self.cover(from);
        self.cover(to);
    }

    /// Start of the first bucket (UTC seconds; 0 when empty).
    pub fn origin(&self) -> i64 {
        self.origin
    }

    /// Adds `bytes` of `class` to the bucket at `index` (from the origin).
    pub fn add_bytes_at(&mut self, index: usize, class: Class, bytes: u64) {
        if let Some(b) = self.buckets.get_mut(index) {
            let c = class as usize;
            b.bytes[c] = b.bytes[c].saturating_add(bytes);
        }
    }

    /// The bucket holding time `t`.
    pub fn at(&mut self, t: i64) -> &mut Bucket {
        let i = self.cover(t);
        &mut self.buckets[i]
    }

    /// One request of `class` that started at `start` and moved `bytes` over
    /// `duration_ms`; its naive bytes (see [`Bucket::naive_bytes`]) over
    /// `naive_ms` from `naive_start`. Most requests are short and land in
    /// one bucket: one look-up.
    pub fn add(
        &mut self,
        start: i64,
        duration_ms: u64,
        class: Class,
        bytes: u64,
        naive_start: i64,
        naive_ms: u64,
    ) {
        let c = class as usize;
        let i = self.cover(start);
        let one = duration_ms < 1000 && naive_ms < 1000 && self.key(naive_start) == self.key(start);
        let b = &mut self.buckets[i];
        b.requests[c] += 1;
        if one {
            b.bytes[c] = b.bytes[c].saturating_add(bytes);
            b.naive_bytes = b.naive_bytes.saturating_add(bytes);
            return;
        }
        self.spread(start, duration_ms, class, bytes);
        self.spread_naive(naive_start, naive_ms, bytes);
    }

    /// Adds `bytes` of `class` transferred from `start` for `duration_ms`,
    /// in proportion to how much of the transfer each bucket saw.
    pub fn spread(&mut self, start: i64, duration_ms: u64, class: Class, bytes: u64) {
        let c = class as usize;
        self.spread_with(start, duration_ms, bytes, |b, v| {
            b.bytes[c] = b.bytes[c].saturating_add(v);
        });
    }

    /// Adds naive bytes (see [`Bucket::naive_bytes`]) the same way.
    pub fn spread_naive(&mut self, start: i64, duration_ms: u64, bytes: u64) {
        self.spread_with(start, duration_ms, bytes, |b, v| {
            b.naive_bytes = b.naive_bytes.saturating_add(v);
        });
    }

    fn spread_with(
        &mut self,
        start: i64,
        duration_ms: u64,
        bytes: u64,
        add: impl Fn(&mut Bucket, u64),
    ) {
        let dur = (duration_ms as i64).min(MAX_SPREAD_SECS * 1000);
        if dur < 1000 || bytes == 0 {
            add(self.at(start), bytes);
            return;
        }
        self.cover(start + dur / 1000);
        let first = self.cover(start);
        let (t0, t1) = (start as i128 * 1000, start as i128 * 1000 + dur as i128);
        let mut given: u64 = 0;
        let mut k = self.key(start);
        let mut i = first;
        loop {
            let edge = (k as i128 + self.width as i128) * 1000;
            let upto = edge.min(t1);
            let due = (bytes as u128 * (upto - t0) as u128 / dur as u128) as u64;
            if let Some(b) = self.buckets.get_mut(i) {
                add(b, due - given);
            }
            given = due;
            if edge >= t1 {
                break;
            }
            k += self.width;
            i += 1;
        }
    }

    /// Every bucket from the first to the last, empty ones included:
    /// (bucket start in UTC seconds, counts).
    pub fn dense(&self) -> Vec<(i64, Bucket)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (self.origin + i as i64 * self.width, *b))
            .collect()
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
        let total: u64 = t.dense().iter().map(|(_, b)| b.requests[0]).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn grows_backwards_and_keeps_every_byte() {
        let mut t = Timeline::new(60, 4);
        t.spread(600, 0, Class::Cvd, 5);
        t.spread(400, 100_000, Class::Cvd, 7);
        t.spread_naive(100, 0, 11);
        let d = t.dense();
        assert!(d.len() <= 4 && d.windows(2).all(|w| w[1].0 - w[0].0 == t.width()));
        let bytes: u64 = d.iter().map(|(_, b)| b.bytes[0]).sum();
        let naive: u64 = d.iter().map(|(_, b)| b.naive_bytes).sum();
        assert_eq!((bytes, naive), (12, 11));
    }
}
