//! The herd gate: admission control for whole-database downloads.
//!
//! When a mirror falls behind, hundreds of clients switch from tens of KB of
//! cdiffs to a 60 MB `daily.cvd` at once. Letting them all in splits the
//! link into hundreds of crawling transfers that take hours, hold every
//! connection and starve everything else. The gate admits a bulk transfer
//! only while each admitted one still gets at least `bulk_min_rate`:
//! `available / (active + 1) >= min_rate`. Everyone else gets `429` with a
//! `Retry-After` drawn uniformly from a window (freshclam stores it and
//! comes back later), which turns a herd into a steady queue spread over
//! minutes. Small responses (header checks, `304`, cdiffs, `404`) never
//! reach the gate.
//!
//! Admission and the start of the transfer cannot race: admission itself
//! increments the active count (compare-and-swap, so concurrent requests
//! never over-admit) and returns a [`BulkPermit`] that counts as active until
//! it drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use super::action::{LimitKind, Refusal, RejectStatus, reject};
use super::jitter::{Random, spread};

/// Herd gate settings (resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HerdPolicy {
    /// Minimum bytes per second every admitted bulk transfer must keep.
    pub min_rate: u64,
    /// Shortest `Retry-After` handed out.
    pub retry_min: Duration,
    /// Longest `Retry-After` handed out.
    pub retry_max: Duration,
    /// `429` (freshclam cools down) or `503` (freshclam tries another mirror).
    pub status: RejectStatus,
}

/// Whether a planned response is a bulk transfer that the herd gate and
/// quotas judge: a `200`/`206` body of at least `threshold` bytes to a GET.
pub fn is_bulk(status: StatusCode, is_head: bool, body_len: u64, threshold: u64) -> bool {
    !is_head
        && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT)
        && body_len >= threshold
}

/// The gate.
#[derive(Debug)]
pub struct HerdGate {
    policy: HerdPolicy,
    active: Arc<AtomicU64>,
    admitted: AtomicU64,
    denied: AtomicU64,
    last_available: AtomicU64,
}

/// An admitted bulk transfer; counts as active until dropped.
#[derive(Debug)]
pub struct BulkPermit {
    active: Arc<AtomicU64>,
}

impl Drop for BulkPermit {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The gate's state for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HerdStats {
    /// Whether one more transfer would be admitted at the last known rate.
    pub open: bool,
    /// Bulk transfers in progress.
    pub active: u64,
    /// Transfers the last known rate allows (`available / min_rate`).
    pub capacity: u64,
    /// Last available rate given to the gate, bytes per second.
    pub available: u64,
    /// Minimum per-transfer rate, bytes per second.
    pub min_rate: u64,
    /// Admissions so far.
    pub admitted: u64,
    /// Refusals so far.
    pub denied: u64,
}

impl HerdGate {
    /// A gate with no transfers active.
    pub fn new(policy: HerdPolicy) -> Self {
        Self {
            policy,
            active: Arc::default(),
            admitted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            last_available: AtomicU64::new(0),
        }
    }

    /// Takes over `previous`'s running transfers and counters (config
    /// reload): permits it issued are still counted here and release here.
    pub fn adopt(&mut self, previous: &HerdGate) {
        self.active = Arc::clone(&previous.active);
        self.admitted
            .store(previous.admitted.load(Ordering::Relaxed), Ordering::Relaxed);
        self.denied
            .store(previous.denied.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The policy.
    pub fn policy(&self) -> HerdPolicy {
        self.policy
    }

    /// How many transfers `available` bytes per second can carry.
    pub fn capacity(&self, available: u64) -> u64 {
        available
            .checked_div(self.policy.min_rate)
            .unwrap_or(u64::MAX)
    }

    /// Admits one bulk transfer if `available` (the class's rate, from the
    /// scheduler) still gives every transfer `min_rate`; otherwise `None`.
    pub fn try_admit(&self, available: u64) -> Option<BulkPermit> {
        self.last_available.store(available, Ordering::Relaxed);
        let capacity = self.capacity(available);
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            Some(BulkPermit {
                active: self.active.clone(),
            })
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// [`try_admit`](Self::try_admit), with the refusal to send when closed
    /// (`Retry-After` uniform in the configured window).
    pub fn admit(&self, available: u64, random: &dyn Random) -> Result<BulkPermit, Refusal> {
        self.try_admit(available).ok_or_else(|| {
            let secs = spread(random, self.policy.retry_min, self.policy.retry_max);
            reject(LimitKind::Herd, self.policy.status.status(), secs)
        })
    }

    /// Bulk transfers in progress.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// A snapshot for status pages.
    pub fn stats(&self) -> HerdStats {
        let available = self.last_available.load(Ordering::Relaxed);
        let active = self.active();
        let capacity = self.capacity(available);
        HerdStats {
            open: active < capacity,
            active,
            capacity,
            available,
            min_rate: self.policy.min_rate,
            admitted: self.admitted.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::jitter::SeededRandom;

    const MBIT: u64 = 125_000;

    fn gate() -> HerdGate {
        HerdGate::new(HerdPolicy {
            min_rate: 2 * MBIT,
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(900),
            status: RejectStatus::TOO_MANY_REQUESTS,
        })
    }

    #[test]
    fn admits_exactly_what_keeps_each_transfer_above_the_minimum() {
        let g = gate();
        // 100 Mbit/s at 2 Mbit/s each: 50 transfers.
        let permits: Vec<_> = (0..50).map(|_| g.try_admit(100 * MBIT).unwrap()).collect();
        assert!(g.try_admit(100 * MBIT).is_none());
        // One finishes: one more gets in.
        let mut permits = permits;
        permits.pop();
        assert_eq!(g.active(), 49);
        let p = g.try_admit(100 * MBIT).unwrap();
        assert!(g.try_admit(100 * MBIT).is_none());
        // The scheduler reports less room (other classes busy): nobody new.
        drop(p);
        assert!(g.try_admit(80 * MBIT).is_none());
        drop(permits);
        assert_eq!(g.active(), 0);
        let s = g.stats();
        assert_eq!(
            (s.admitted, s.denied, s.open, s.capacity),
            (51, 3, true, 40)
        );
        // A rate below the minimum admits nobody.
        assert!(g.try_admit(MBIT).is_none());
    }

    #[test]
    fn refusals_spread_over_the_window() {
        let g = gate();
        let r = SeededRandom::new(9);
        let _held = g.admit(2 * MBIT, &r).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let refusal = g.admit(2 * MBIT, &r).unwrap_err();
            assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
            let s = refusal.retry_after().unwrap();
            assert!((60..=900).contains(&s));
            seen.insert(s);
        }
        assert!(seen.len() > 500, "{}", seen.len());
    }

    #[test]
    fn bulk_classification() {
        let mb = 1 << 20;
        assert!(is_bulk(StatusCode::OK, false, 60 * mb, mb));
        assert!(is_bulk(StatusCode::PARTIAL_CONTENT, false, 2 * mb, mb));
        assert!(!is_bulk(StatusCode::PARTIAL_CONTENT, false, 512, mb));
        assert!(!is_bulk(StatusCode::OK, true, 60 * mb, mb));
        assert!(!is_bulk(StatusCode::NOT_MODIFIED, false, 0, mb));
        assert!(!is_bulk(StatusCode::NOT_FOUND, false, 100, mb));
        assert!(!is_bulk(StatusCode::OK, false, 40_000, mb));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_admission_never_over_admits() {
        let g = Arc::new(gate());
        let barrier = Arc::new(tokio::sync::Barrier::new(200));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (g, barrier) = (g.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let permit = g.try_admit(37 * MBIT);
                // Hold it while the others race.
                tokio::task::yield_now().await;
                let active = g.active();
                (permit, active)
            }));
        }
        let mut held = Vec::new();
        for t in tasks {
            let (permit, active) = t.await.unwrap();
            assert!(active <= 18, "{active}");
            held.extend(permit);
        }
        assert_eq!(held.len(), 18);
        assert_eq!(g.stats().denied, 182);
    }
}
