//! The herd gate: admission control for whole-database downloads.
//!
//! When a mirror falls behind, hundreds of clients switch from tens of KB of
//! cdiffs to a 60 MB `daily.cvd` at once. Letting them all in splits the
//! link into hundreds of crawling transfers that take hours, hold every
//! connection and starve everything else. The gate admits a bulk transfer
//! only while each admitted one still gets at least `bulk_min_rate`:
//! `available / (active + 1) >= min_rate`. Everyone else gets `429` with a
//! `Retry-After` (freshclam stores it and comes back later) from the gate's
//! waiting list ([`super::appointments`]): the class finishes a download
//! about every `body_len / available`, so successive refusals are told to
//! come back that much apart, after the first slot expected to free, plus
//! about one such spacing of random jitter, within the configured window.
//! That turns a herd into a steady queue that keeps the slots busy until it
//! drains, without clients returning long after the link went idle. Small
//! responses (header checks, `304`, cdiffs, `404`) never reach the gate.
//!
//! Admission and the start of the transfer cannot race: admission itself
//! increments the active count (compare-and-swap, so concurrent requests
//! never over-admit) and returns a [`BulkPermit`] that counts as active until
//! it drops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use super::action::{LimitKind, Refusal, RejectStatus, reject};
use super::appointments::{Appointments, Pace};
use super::jitter::{Random, ceil_secs, spread};
use super::{ClientKey, lock};

/// Herd gate settings (resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HerdPolicy {
    /// Minimum bytes per second every admitted bulk transfer must keep.
    pub min_rate: u64,
    /// Shortest `Retry-After` handed out.
    pub retry_min: Duration,
    /// Longest `Retry-After` handed out; also how long a client is
    /// remembered past its appointment.
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
    book: Arc<Mutex<Appointments>>,
}

/// A bulk request as the gate judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRequest {
    /// Who asks (to recognise it when it comes back).
    pub client: ClientKey,
    /// Body bytes to send.
    pub body_len: u64,
    /// Rate the class can have now, bytes per second (from the scheduler).
    pub available: u64,
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
    /// Refused clients whose appointment is still ahead.
    pub waiting: u64,
    /// Seconds until the last appointment handed out (0: nobody waits).
    pub queue_secs: u64,
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
            book: Arc::new(Mutex::new(Appointments::new(policy.retry_max))),
        }
    }

    /// Takes over `previous`'s running transfers, waiting list and counters
    /// (config reload): permits it issued are still counted here and
    /// release here, and clients it refused keep their appointments.
    pub fn adopt(&mut self, previous: &HerdGate) {
        self.active = Arc::clone(&previous.active);
        self.book = Arc::clone(&previous.book);
        lock(&self.book).set_forget_after(self.policy.retry_max);
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

    /// [`try_admit`](Self::try_admit), with the refusal to send when closed:
    /// `Retry-After` is the client's appointment in the waiting list.
    pub fn admit(
        &self,
        request: BulkRequest,
        now: Instant,
        random: &dyn Random,
    ) -> Result<BulkPermit, Refusal> {
        if let Some(permit) = self.try_admit(request.available) {
            lock(&self.book).admitted(&request.client);
            return Ok(permit);
        }
        let secs = self.retry_after(request, now, random);
        Err(reject(LimitKind::Herd, self.policy.status.status(), secs))
    }

    /// Whole seconds until the refused `request`'s client should come back:
    /// its appointment, within the configured window.
    fn retry_after(&self, request: BulkRequest, now: Instant, random: &dyn Random) -> u64 {
        let (min, max) = (self.policy.retry_min, self.policy.retry_max);
        let Some(pace) = self.pace(request) else {
            // At this rate no slot ever frees: nothing to predict.
            return spread(random, min, max);
        };
        let spacing_ms = u64::try_from(pace.spacing.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(random.between(0, spacing_ms));
        let at = lock(&self.book).book(request.client, now, pace, jitter);
        let min = ceil_secs(min);
        ceil_secs(at.saturating_duration_since(now)).clamp(min, ceil_secs(max).max(min))
    }

    /// How the queue moves for `request`; `None` when its rate admits nobody.
    fn pace(&self, request: BulkRequest) -> Option<Pace> {
        let capacity = self.capacity(request.available);
        if capacity == 0 {
            return None;
        }
        // Beyond the longest Retry-After the estimates no longer matter.
        let bound = self.policy.retry_max.max(Duration::from_secs(1));
        let nanos = u128::from(request.body_len.max(1)) * 1_000_000_000
            / u128::from(request.available.max(1));
        let spacing = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(bound);
        // One departure frees a slot; more when the rate fell below what runs.
        let departures = (self.active() + 1).saturating_sub(capacity).max(1);
        let first_slot = spacing
            .saturating_mul(u32::try_from(departures).unwrap_or(u32::MAX))
            .min(bound);
        Some(Pace {
            first_slot,
            spacing,
        })
    }

    /// Forgets refused clients far past their appointment.
    pub fn maintain(&self, now: Instant) {
        lock(&self.book).prune(now);
    }

    /// Bulk transfers in progress.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// A snapshot for status pages at `now`.
    pub fn stats(&self, now: Instant) -> HerdStats {
        let available = self.last_available.load(Ordering::Relaxed);
        let active = self.active();
        let capacity = self.capacity(available);
        let (waiting, queue) = {
            let book = lock(&self.book);
            (book.waiting(now), book.horizon(now))
        };
        HerdStats {
            open: active < capacity,
            active,
            capacity,
            available,
            min_rate: self.policy.min_rate,
            admitted: self.admitted.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            waiting: waiting as u64,
            queue_secs: queue.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests;
