//! Live rates and the last hour, computed by the sampler from lifetime
//! counters.
//!
//! Every tick (one second) the sampler hands [`History::record`] the
//! lifetime totals; the difference to the previous tick, divided by the
//! time that really passed, is the current rate, and the differences are
//! summed into ten-second buckets, 360 of which make the hour the status
//! page charts. Working from lifetime counters means a reset of the status
//! counters never produces negative rates, and a late tick spreads its bytes
//! over the time that actually passed instead of inventing a spike.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use super::class::RequestClass;

/// Width of one history bucket.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;

const N: usize = RequestClass::COUNT;

/// Lifetime totals at one instant.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Bytes per class, all sites.
    pub bytes: [u64; N],
    /// Requests per class, all sites.
    pub requests: [u64; N],
    /// Bytes per site.
    pub site_bytes: BTreeMap<Arc<str>, u64>,
    /// cdiff `404`s.
    pub cdiff_not_found: u64,
}

/// Ten seconds of traffic.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Bucket {
    /// Unix time the bucket starts.
    pub t: u64,
    /// Bytes per class.
    pub bytes: [u64; N],
    /// Requests per class.
    pub requests: [u64; N],
    /// cdiff `404`s.
    pub cdiff_not_found: u64,
}

/// Current rates, from the last tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// Bytes per second, all traffic.
    pub total: f64,
    /// Bytes per second per class.
    pub class: [f64; N],
    /// Requests per second per class.
    pub class_requests: [f64; N],
    /// Bytes per second per site.
    pub site: BTreeMap<Arc<str>, f64>,
}

/// The sampler's memory.
#[derive(Debug, Default)]
pub struct History {
    last: Option<(Instant, Totals)>,
    current: Option<(Instant, Bucket)>,
    buckets: VecDeque<Bucket>,
    rates: Rates,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl History {
    /// Takes in the totals at `now` (`wall` for bucket labels).
    pub fn record(&mut self, now: Instant, wall: SystemTime, totals: Totals) {
        let Some((then, before)) = self.last.replace((now, totals.clone())) else {
            return;
        };
        let secs = now.duration_since(then).as_secs_f64();
        let delta: [u64; N] =
            std::array::from_fn(|i| totals.bytes[i].saturating_sub(before.bytes[i]));
        let delta_requests: [u64; N] =
            std::array::from_fn(|i| totals.requests[i].saturating_sub(before.requests[i]));
        if secs > 0.0 {
            self.rates = Rates {
                total: delta.iter().sum::<u64>() as f64 / secs,
                class: std::array::from_fn(|i| delta[i] as f64 / secs),
                class_requests: std::array::from_fn(|i| delta_requests[i] as f64 / secs),
                site: totals
                    .site_bytes
                    .iter()
                    .map(|(site, &b)| {
                        let was = before.site_bytes.get(site).copied().unwrap_or(0);
                        (Arc::clone(site), b.saturating_sub(was) as f64 / secs)
                    })
                    .collect(),
            };
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(start, _)| now.duration_since(*start) >= BUCKET)
            && let Some((_, full)) = self.current.take()
        {
            self.buckets.push_back(full);
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        let (_, bucket) = self.current.get_or_insert_with(|| {
            (
                now,
                Bucket {
                    t: unix(wall),
                    ..Bucket::default()
                },
            )
        });
        for i in 0..N {
            bucket.bytes[i] += delta[i];
            bucket.requests[i] += delta_requests[i];
        }
        bucket.cdiff_not_found += totals
            .cdiff_not_found
            .saturating_sub(before.cdiff_not_found);
    }

    /// The rates of the last tick.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// Completed buckets, oldest first, then the one being filled.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut all: Vec<Bucket> = self.buckets.iter().cloned().collect();
        all.extend(self.current.as_ref().map(|(_, b)| b.clone()));
        all
    }

    /// Sum of the buckets that started within `window` before `now`
    /// (including the one being filled).
    pub fn window(&self, now: Instant, window: Duration) -> Bucket {
        let mut sum = Bucket::default();
        let Some((start, current)) = &self.current else {
            return sum;
        };
        let mut add = |b: &Bucket| {
            for i in 0..N {
                sum.bytes[i] += b.bytes[i];
                sum.requests[i] += b.requests[i];
            }
            sum.cdiff_not_found += b.cdiff_not_found;
        };
        add(current);
        let mut age = now.duration_since(*start);
        for b in self.buckets.iter().rev() {
            age += BUCKET;
            if age > window {
                break;
            }
            add(b);
        }
        sum
    }

    /// Buckets in the last hour before the last `recent`, for baselines:
    /// their number and their sum.
    pub fn before(&self, recent: Duration) -> (usize, Bucket) {
        let skip = recent.as_secs().div_ceil(BUCKET.as_secs()) as usize;
        let older = self.buckets.len().saturating_sub(skip.saturating_sub(1));
        let mut sum = Bucket::default();
        for b in self.buckets.iter().take(older) {
            for i in 0..N {
                sum.bytes[i] += b.bytes[i];
                sum.requests[i] += b.requests[i];
            }
            sum.cdiff_not_found += b.cdiff_not_found;
        }
        (older, sum)
    }

    /// Forgets the history (rates keep flowing from the next tick).
    pub fn clear(&mut self) {
        self.current = None;
        self.buckets.clear();
        self.rates = Rates::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(cvd_bytes: u64, cvd_requests: u64) -> Totals {
        let mut t = Totals::default();
        t.bytes[RequestClass::Cvd.index()] = cvd_bytes;
        t.requests[RequestClass::Cvd.index()] = cvd_requests;
        t.site_bytes.insert(Arc::from("default"), cvd_bytes);
        t
    }

    #[tokio::test(start_paused = true)]
    async fn rates_follow_the_time_that_really_passed() {
        let mut h = History::default();
        let wall = SystemTime::now();
        h.record(Instant::now(), wall, totals(0, 0));
        tokio::time::advance(Duration::from_secs(1)).await;
        h.record(Instant::now(), wall, totals(1_000_000, 0));
        assert_eq!(h.rates().total, 1_000_000.0);
        assert_eq!(h.rates().site[&Arc::from("default")], 1_000_000.0);
        // A late tick: two seconds' bytes are a rate over two seconds.
        tokio::time::advance(Duration::from_secs(2)).await;
        h.record(Instant::now(), wall, totals(2_000_000, 1));
        assert_eq!(h.rates().class[RequestClass::Cvd.index()], 500_000.0);
        assert_eq!(h.rates().class_requests[RequestClass::Cvd.index()], 0.5);
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_hold_ten_seconds_and_an_hour_at_most() {
        let mut h = History::default();
        let wall = SystemTime::now();
        for second in 0..=(BUCKETS as u64 * 10 + 35) {
            h.record(Instant::now(), wall, totals(second * 100, second));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let buckets = h.buckets();
        assert_eq!(buckets.len(), BUCKETS + 1);
        assert_eq!(buckets[10].bytes[RequestClass::Cvd.index()], 1000);
        assert_eq!(buckets[10].requests[RequestClass::Cvd.index()], 10);
        let minute = h.window(Instant::now(), Duration::from_secs(60));
        assert_eq!(minute.requests[RequestClass::Cvd.index()], 55);
        let (n, older) = h.before(Duration::from_secs(60));
        assert_eq!(n, BUCKETS - 5);
        assert_eq!(
            older.requests[RequestClass::Cvd.index()],
            (BUCKETS as u64 - 5) * 10
        );
        h.clear();
        assert!(h.buckets().is_empty());
    }
}
