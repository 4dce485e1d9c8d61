//! Time for the limits, injectable so tests run on a paused clock.
//!
//! Two clocks are needed: a monotonic one for request rates (immune to the
//! wall clock being stepped) and Unix time for quotas, whose periods are
//! calendar-aligned and must mean the same thing after a restart. Both come
//! from one [`Clock`]; [`TokioClock`] derives Unix time from tokio's clock so
//! `tokio::time::advance` moves both in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of monotonic and Unix time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Time since the Unix epoch.
    fn unix(&self) -> Duration;
}

/// The system clocks (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Unix time that advances with tokio's (possibly paused) clock from a
/// fixed starting point.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: Instant,
    anchor_unix: Duration,
}

impl TokioClock {
    /// A clock reading `unix` now.
    pub fn starting_at(unix: Duration) -> Self {
        Self {
            anchor: Instant::now(),
            anchor_unix: unix,
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix(&self) -> Duration {
        self.anchor_unix + Instant::now().saturating_duration_since(self.anchor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_the_paused_clock() {
        let c = TokioClock::starting_at(Duration::from_secs(1_000));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.unix(), Duration::from_secs(1_005));
        assert!(SystemClock.unix() > Duration::from_secs(1_600_000_000));
    }
}
