//! Exponential backoff with jitter, for retries after upstream errors.
//!
//! Each delay is half deterministic and half random ("equal jitter"), so a
//! fleet of mirrors that failed together does not retry together, yet no
//! retry comes back immediately.

use std::time::Duration;

use rand::{Rng, RngExt};

/// A retry schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start near `base` and double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rng.random::<f64>())
    }

    /// Retries made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `value` spread uniformly by ±`fraction` (e.g. a sync interval ±10 %).
pub fn jittered(value: Duration, fraction: f64, rng: &mut impl Rng) -> Duration {
    let spread = value.mul_f64(fraction.clamp(0.0, 1.0));
    value.saturating_sub(spread) + spread.mul_f64(2.0 * rng.random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut previous_ceiling = Duration::ZERO;
        for attempt in 0..10u32 {
            let ceiling = Duration::from_secs(1)
                .saturating_mul(1 << attempt)
                .min(Duration::from_secs(60));
            let d = b.next_delay(&mut rng);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
            assert!(ceiling >= previous_ceiling);
            previous_ceiling = ceiling;
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(100), 0.1, &mut rng);
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }
}
