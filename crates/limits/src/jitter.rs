//! Random spread for `Retry-After`, from an injectable source.
//!
//! A refusal that tells every client "come back in 60 s" schedules the next
//! herd for 60 s from now. Every delay handed out is therefore drawn
//! uniformly from a window, in whole seconds (the unit of `Retry-After`).
//! Tests inject a seeded generator to make the draws reproducible.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::lock;

/// A source of uniform random numbers.
pub trait Random: Send + Sync + 'static {
    /// A uniform integer in `lo..=hi` (`lo` if `hi < lo`).
    fn between(&self, lo: u64, hi: u64) -> u64;
}

/// The thread-local OS-seeded generator (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn between(&self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        rand::rng().random_range(lo..=hi)
    }
}

/// A seeded generator (tests, reproducible simulations).
#[derive(Debug)]
pub struct SeededRandom(Mutex<StdRng>);

impl SeededRandom {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Random for SeededRandom {
    fn between(&self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lock(&self.0).random_range(lo..=hi)
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` invites a storm).
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// A delay in whole seconds drawn uniformly from `[lo, hi]` (rounded up).
pub fn spread(random: &dyn Random, lo: Duration, hi: Duration) -> u64 {
    let lo = ceil_secs(lo);
    random.between(lo, ceil_secs(hi).max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_in_the_window_and_varies() {
        let r = SeededRandom::new(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let s = spread(&r, Duration::from_secs(60), Duration::from_secs(900));
            assert!((60..=900).contains(&s));
            seen.insert(s);
        }
        assert!(seen.len() > 500, "{} distinct", seen.len());
        assert_eq!(spread(&ThreadRandom, Duration::ZERO, Duration::ZERO), 1);
        assert_eq!(spread(&r, Duration::from_millis(1500), Duration::ZERO), 2);
    }
}
