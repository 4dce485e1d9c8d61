//! Transfer quotas: at most `limit` bytes per `period`, released in slices.
//!
//! This is mod_cband's `CBandLimit`/`CBandPeriod`/`CBandPeriodSlice` done
//! right. Periods are aligned to the Unix epoch (a 1 d period starts at
//! 00:00 UTC), so every counter is keyed by its period start and a counter
//! from an earlier period — in memory or loaded from disk after a restart —
//! simply reads as zero. Within a period, slice `k` (1-based) allows
//! `limit * k / slices` bytes in total, so a herd cannot burn the whole
//! day's quota in its first hour. Usage is charged while transfers run, not
//! only when they start, and a refusal knows exactly when the next slice or
//! period brings room again (the `Retry-After` before jitter).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A quota policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimit {
    /// Bytes per period.
    pub limit: u64,
    /// Period length (at least 1 ms).
    pub period: Duration,
    /// Number of equal slices the limit is released in (at least 1).
    pub slices: u32,
}

/// Bytes used in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Start of the period, Unix milliseconds.
    pub period_start_ms: u64,
    /// Bytes charged in it.
    pub used: u64,
}

/// Where a counter stands right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaState {
    /// Bytes per period.
    pub limit: u64,
    /// Bytes the current slice allows in total.
    pub allowed_now: u64,
    /// Bytes used this period.
    pub used: u64,
    /// Start of the current period, Unix milliseconds.
    pub period_start_ms: u64,
    /// Time until more room is released (next slice or period) if used up;
    /// otherwise until the next slice boundary.
    pub next_release: Duration,
    /// Period length in seconds (for `RateLimit-Policy`).
    pub period_secs: u64,
}

impl QuotaState {
    /// Bytes that may still be sent in this slice.
    pub fn remaining(&self) -> u64 {
        self.allowed_now.saturating_sub(self.used)
    }

    /// No room left until [`next_release`](Self::next_release).
    pub fn exhausted(&self) -> bool {
        self.remaining() == 0
    }
}

/// Whole milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl QuotaLimit {
    fn period_ms(&self) -> u64 {
        ms(self.period).max(1)
    }

    fn slices(&self) -> u64 {
        u64::from(self.slices.max(1))
    }

    /// Start of the period containing `now` (Unix time), in Unix ms.
    pub fn period_start_ms(&self, now: Duration) -> u64 {
        let now = ms(now);
        now - now % self.period_ms()
    }

    /// Start of slice `j` (0-based; `slices` is the next period) in Unix ms.
    fn slice_start_ms(&self, start: u64, j: u64) -> u64 {
        // Rounded up: the first millisecond that `evaluate` places in slice `j`.
        let offset =
            (u128::from(self.period_ms()) * u128::from(j)).div_ceil(u128::from(self.slices()));
        start.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// Bytes allowed in total up to the end of slice `j` (0-based).
    fn allowed_through(&self, j: u64) -> u64 {
        let a = u128::from(self.limit) * u128::from(j + 1) / u128::from(self.slices());
        u64::try_from(a).unwrap_or(u64::MAX)
    }

    /// The state of a counter holding `usage` at `now` (Unix time).
    pub fn evaluate(&self, usage: Usage, now: Duration) -> QuotaState {
        let start = self.period_start_ms(now);
        let used = if usage.period_start_ms == start {
            usage.used
        } else {
            0
        };
        let into = ms(now) - start;
        let slice = u64::try_from(
            u128::from(into) * u128::from(self.slices()) / u128::from(self.period_ms()),
        )
        .unwrap_or(0)
        .min(self.slices() - 1);
        let allowed_now = self.allowed_through(slice);
        // The first slice whose allowance exceeds `used`, if this period has one.
        let release_slice = if used < allowed_now {
            slice + 1
        } else if self.limit == 0 {
            self.slices()
        } else {
            // allowed_through(j) > used  <=>  limit * (j + 1) >= (used + 1) * slices
            let need = (u128::from(used) + 1) * u128::from(self.slices());
            let j1 = need.div_ceil(u128::from(self.limit));
            u64::try_from(j1)
                .unwrap_or(u64::MAX)
                .saturating_sub(1)
                .max(slice + 1)
        };
        let release_at = self.slice_start_ms(start, release_slice.min(self.slices()));
        QuotaState {
            limit: self.limit,
            allowed_now,
            used,
            period_start_ms: start,
            next_release: Duration::from_millis(release_at.saturating_sub(ms(now))),
            period_secs: self.period.as_secs().max(1),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DAY: Duration = Duration::from_secs(86_400);
    pub(crate) const HOUR: Duration = Duration::from_secs(3_600);
    // 2024-01-01T00:00:00Z, a period start for any whole-hour period.
    pub(crate) const T0: Duration = Duration::from_secs(1_704_067_200);

    /// 24 000 bytes a day, released an hour's share at a time.
    pub(crate) fn day_limit() -> QuotaLimit {
        QuotaLimit {
            limit: 24_000,
            period: DAY,
            slices: 24,
        }
    }

    #[test]
    fn slices_release_at_boundaries() {
        let l = day_limit();
        let s = l.evaluate(Usage::default(), T0);
        assert_eq!((s.allowed_now, s.used, s.remaining()), (1_000, 0, 1_000));
        assert_eq!(s.next_release, HOUR);
        let used = Usage {
            period_start_ms: ms(T0),
            used: 1_000,
        };
        let s = l.evaluate(used, T0 + Duration::from_secs(1_800));
        assert!(s.exhausted());
        assert_eq!(s.next_release, Duration::from_secs(1_800));
        // One millisecond before the boundary: still exhausted; at it: room.
        let s = l.evaluate(used, T0 + HOUR - Duration::from_millis(1));
        assert!(s.exhausted());
        assert_eq!(s.next_release, Duration::from_millis(1));
        let s = l.evaluate(used, T0 + HOUR);
        assert_eq!((s.allowed_now, s.remaining()), (2_000, 1_000));
        // Way over (charged mid-transfer): room comes back only with the
        // sixth slice, which starts at 5 h.
        let over = Usage {
            period_start_ms: ms(T0),
            used: 5_500,
        };
        let s = l.evaluate(over, T0 + Duration::from_secs(60));
        assert!(s.exhausted());
        assert_eq!(s.next_release, 5 * HOUR - Duration::from_secs(60));
        // The whole limit used: nothing until the next period.
        let all = Usage {
            period_start_ms: ms(T0),
            used: 24_000,
        };
        let s = l.evaluate(all, T0 + 23 * HOUR + Duration::from_secs(10));
        assert!(s.exhausted());
        assert_eq!(s.next_release, HOUR - Duration::from_secs(10));
        // The period rolls over: the old counter reads as zero.
        let s = l.evaluate(all, T0 + DAY);
        assert_eq!(
            (s.used, s.allowed_now, s.period_start_ms),
            (0, 1_000, ms(T0 + DAY))
        );
    }

    #[test]
    fn one_slice_is_a_plain_limit_and_zero_blocks_all_period() {
        let l = QuotaLimit {
            limit: 100,
            period: HOUR,
            slices: 1,
        };
        let s = l.evaluate(Usage::default(), T0 + Duration::from_secs(5));
        assert_eq!(
            (s.allowed_now, s.next_release),
            (100, HOUR - Duration::from_secs(5))
        );
        let zero = QuotaLimit { limit: 0, ..l };
        let s = zero.evaluate(Usage::default(), T0 + Duration::from_secs(5));
        assert!(s.exhausted());
        assert_eq!(s.next_release, HOUR - Duration::from_secs(5));
    }

    #[test]
    fn release_time_rounds_up_to_the_slice_evaluate_uses() {
        // 1000 ms in 11 slices: slice 10 starts at 909.09 ms, i.e. 910 ms.
        let l = QuotaLimit {
            limit: 1,
            period: Duration::from_secs(1),
            slices: 11,
        };
        let s = l.evaluate(Usage::default(), T0);
        assert!(s.exhausted());
        assert_eq!(s.next_release, Duration::from_millis(910));
        assert!(
            l.evaluate(Usage::default(), T0 + Duration::from_millis(909))
                .exhausted()
        );
        assert!(
            !l.evaluate(Usage::default(), T0 + Duration::from_millis(910))
                .exhausted()
        );
    }

    #[test]
    fn uneven_division_never_releases_more_than_the_limit() {
        let l = QuotaLimit {
            limit: 10,
            period: Duration::from_secs(7),
            slices: 3,
        };
        let mut last = 0;
        let start = Duration::from_millis(l.period_start_ms(T0) + 7_000);
        for s in 0..7_000u64 {
            let st = l.evaluate(Usage::default(), start + Duration::from_millis(s));
            assert!(st.allowed_now >= last && st.allowed_now <= 10);
            last = st.allowed_now;
        }
        assert_eq!(last, 10);
    }

    proptest::proptest! {
        #[test]
        fn next_release_is_exactly_when_room_returns(
            limit in 0u64..1_000_000,
            slices in 1u32..50,
            period_s in 1u64..200_000,
            used_frac in 0.0f64..1.2,
            at_frac in 0.0f64..1.0,
        ) {
            let l = QuotaLimit { limit, period: Duration::from_secs(period_s), slices };
            let start = Duration::from_millis(l.period_start_ms(T0));
            let now = start + Duration::from_secs_f64(period_s as f64 * at_frac).min(Duration::from_secs(period_s) - Duration::from_millis(1));
            let usage = Usage { period_start_ms: ms(start), used: (limit as f64 * used_frac) as u64 };
            let s = l.evaluate(usage, now);
            proptest::prop_assert!(s.allowed_now <= limit);
            proptest::prop_assert!(s.next_release > Duration::ZERO);
            if s.exhausted() {
                let later = l.evaluate(usage, now + s.next_release);
                proptest::prop_assert!(!later.exhausted() || later.period_start_ms != usage.period_start_ms || limit == 0);
                if s.next_release > Duration::from_millis(1) {
                    let before = l.evaluate(usage, now + s.next_release - Duration::from_millis(1));
                    proptest::prop_assert!(before.exhausted());
                }
            }
        }
    }
}
