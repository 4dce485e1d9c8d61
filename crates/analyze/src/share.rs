//! Large transfers share the link. Spreading each download's bytes evenly
//! over its duration overstates the minutes where many overlapped: on a
//! saturated link a download that began among ten others and ended among a
//! hundred moved most of its bytes early, and even spreading puts 128
//! Mbit/s into minutes of a 100 Mbit/s link. So large transfers are kept
//! until the log is read, and then each bucket's share of a transfer is
//! weighted by how few others it shared that bucket with (equal shares of
//! the link, what TCP flows on one bottleneck converge to):
//!
//! `bytes(i, b) = bytes(i) × w(i, b) / Σ w(i, ·)`, with
//! `w(i, b) = overlap(i, b) / max(1, concurrency(b))`,
//!
//! where `concurrency(b)` is the average number of large transfers in
//! flight during bucket `b`. One transfer alone is spread evenly, as before;
//! on a full link the buckets come out at the link's rate.
//!
//! Bounds: at most `cap` transfers are kept (24 bytes each); beyond that,
//! transfers are spread evenly at once and counted in `overflow`.

use super::classify::Class;
use super::stamps::Stamp;
use super::timeline::{MAX_SPREAD_SECS, Timeline};

/// One large transfer, under both meanings of its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Start if the stamp marks the arrival / the completion (UTC seconds).
    pub start: [i64; 2],
    /// Duration under each, milliseconds.
    pub dur_ms: [u32; 2],
    /// Bytes.
    pub bytes: u64,
    /// Its class.
    pub class: Class,
}

/// The kept transfers.
#[derive(Debug, Clone)]
pub struct Shared {
    transfers: Vec<Transfer>,
    cap: usize,
    /// Transfers spread evenly because the table was full.
    pub overflow: u64,
}

impl Shared {
    /// A table of at most `cap` transfers.
    pub fn new(cap: usize) -> Self {
        Self {
            transfers: Vec::new(),
            cap,
            overflow: 0,
        }
    }

    /// Keeps `t` for [`Shared::place`]; false (and counted) when full.
    pub fn push(&mut self, t: Transfer) -> bool {
        if self.transfers.len() >= self.cap {
            self.overflow += 1;
            return false;
        }
        self.transfers.push(t);
        true
    }

    /// Transfers kept, and the cap.
    pub fn table_size(&self) -> (usize, usize) {
        (self.transfers.len(), self.cap)
    }

    /// Adds every kept transfer's bytes to `timeline` (built for stamps
    /// meaning `stamp`), weighted by the link's sharing.
    pub fn place(&self, stamp: Stamp, timeline: &mut Timeline) {
        let s = stamp.idx();
        let span = |t: &Transfer| {
            let dur = (i64::from(t.dur_ms[s])).min(MAX_SPREAD_SECS * 1000);
            let from = t.start[s] * 1000;
            (from, from + dur.max(1))
        };
        for t in &self.transfers {
            let (from, to) = span(t);
            timeline.cover_range(from.div_euclid(1000), (to - 1).div_euclid(1000));
        }
        let (origin, width) = (timeline.origin(), timeline.width() * 1000);
        let mut busy = vec![0f64; timeline.len()];
        let each_bucket = |from: i64, to: i64, f: &mut dyn FnMut(usize, f64)| {
            let mut b = (from - origin * 1000).div_euclid(width);
            loop {
                let lo = origin * 1000 + b * width;
                let hi = lo + width;
                let overlap = (to.min(hi) - from.max(lo)) as f64;
                if overlap > 0.0 && b >= 0 {
                    f(b as usize, overlap);
                }
                if hi >= to {
                    break;
                }
                b += 1;
            }
        };
        for t in &self.transfers {
            let (from, to) = span(t);
            each_bucket(from, to, &mut |b, o| {
                if let Some(x) = busy.get_mut(b) {
                    *x += o;
                }
            });
        }
        let concurrency = |b: usize| (busy.get(b).copied().unwrap_or(0.0) / width as f64).max(1.0);
        let mut weights: Vec<(usize, f64)> = Vec::new();
        for t in &self.transfers {
            let (from, to) = span(t);
            weights.clear();
            each_bucket(from, to, &mut |b, o| weights.push((b, o / concurrency(b))));
            let total: f64 = weights.iter().map(|w| w.1).sum();
            let (mut given, mut acc) = (0u64, 0f64);
            for (k, &(b, w)) in weights.iter().enumerate() {
                acc += w;
                let due = if k + 1 == weights.len() || total <= 0.0 {
                    t.bytes
                } else {
                    ((t.bytes as f64) * acc / total).round().min(t.bytes as f64) as u64
                };
                let part = due.saturating_sub(given);
                given = given.max(due);
                timeline.add_bytes_at(b, t.class, part);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start: i64, secs: u32, bytes: u64) -> Transfer {
        Transfer {
            start: [start; 2],
            dur_ms: [secs * 1000; 2],
            bytes,
            class: Class::Cvd,
        }
    }

    #[test]
    fn alone_even_together_shared() {
        // One transfer alone over three minutes: even.
        let mut tl = Timeline::new(60, 100);
        tl.at(0);
        let mut s = Shared::new(10);
        s.push(t(0, 180, 1800));
        s.place(Stamp::Start, &mut tl);
        let got: Vec<u64> = tl.dense().iter().map(|(_, b)| b.bytes[0]).collect();
        assert_eq!(got, [600, 600, 600]);
        // A 100 B/s link: A runs 0-180 s alone for the first minute, then
        // with B (60-120 s), then alone. Processor sharing gives A 6000,
        // 3000, 6000 and B 3000: 6000 per minute, not 7000 in the middle.
        let mut tl = Timeline::new(60, 100);
        tl.at(0);
        let mut s = Shared::new(10);
        s.push(t(0, 180, 15_000));
        s.push(t(60, 60, 3_000));
        s.place(Stamp::Start, &mut tl);
        let got: Vec<u64> = tl.dense().iter().map(|(_, b)| b.bytes[0]).collect();
        assert_eq!(got, [6000, 6000, 6000]);
        assert!(!Shared::new(0).push(t(0, 1, 1)));
    }
}
