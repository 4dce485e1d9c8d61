//! Request rate per client: the generic cell rate algorithm (GCRA).
//!
//! GCRA is a token bucket that stores one number per client, the
//! theoretical arrival time (TAT) of the next request, so millions of
//! clients cost a few dozen bytes each. A client may send `burst` requests
//! at once and then one every `period / requests`; a refused request learns
//! exactly how long to wait. A client whose TAT lies in the past is
//! indistinguishable from a new one, so idle entries are dropped by
//! [`RequestRate::retain_recent`] and the table never grows past a
//! configured number of keys (past it, new clients pass untracked and are
//! counted: failing open beats refusing everyone during a flood of keys).
//!
//! In a fleet the TAT is the fleet's: every request admitted anywhere moves
//! it one interval on. The limiter still decides alone; it counts the
//! requests it admitted since they were last shared
//! ([`RequestRate::share_requests`], which also hands out, in turns, the
//! other clients whose TAT still lies ahead) and takes the fleet's TAT back
//! ([`RequestRate::merge_requests`]), keeping whichever is later.
//!
//! Time is passed in (`tokio::time::Instant`), so tests use a paused clock.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientKey;
use super::lock;

const SHARDS: usize = 16;

/// A request-rate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between requests at the sustained rate.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Gcra {
    /// `requests` per `per`, with bursts of `burst` (at least 1).
    pub fn new(requests: u32, per: Duration, burst: u32) -> Self {
        Self {
            interval: per / requests.max(1),
            burst: burst.max(1),
        }
    }

    fn interval_ns(&self) -> u64 {
        u64::try_from(self.interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn tolerance_ns(&self) -> u64 {
        self.interval_ns()
            .saturating_mul(u64::from(self.burst.saturating_sub(1)))
    }
}

/// An allowed request: what is left, for `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateAllowance {
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// Time until the full burst is available again.
    pub reset: Duration,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateStats {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests refused.
    pub denied: u64,
    /// Requests allowed untracked because the table was full.
    pub untracked: u64,
    /// Clients currently tracked.
    pub keys: usize,
}

/// A client's requests on this node since they were last shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRequests {
    /// The client.
    pub client: ClientKey,
    /// Requests admitted here since the last share.
    pub admitted: u32,
    /// How far this node's TAT for the client lies ahead of the moment of
    /// the share (zero when it lies in the past).
    pub debt: Duration,
}

/// One client's state.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Theoretical arrival time, nanoseconds since the epoch.
    tat: u64,
    /// Requests admitted since the last share (only while sharing); a
    /// cell with some waits in its shard's queue.
    pending: u32,
    /// In its shard's rotation of clients shared before.
    listed: bool,
    /// The share that last handed it out.
    shared_in: u64,
}

#[derive(Debug, Default)]
struct Shard {
    cells: HashMap<ClientKey, Cell>,
    /// Clients with pending requests, oldest first.
    queue: VecDeque<ClientKey>,
    /// Clients shared before whose TAT still lies ahead: shared again in
    /// turns, to learn what the other nodes admitted.
    recent: VecDeque<ClientKey>,
}

/// Per-client GCRA state, sharded to keep lock hold times short.
#[derive(Debug)]
pub struct RequestRate {
    policy: Gcra,
    epoch: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    max_per_shard: usize,
    allowed: AtomicU64,
    denied: AtomicU64,
    untracked: AtomicU64,
    /// Whether admitted requests are counted for a fleet (set by the first
    /// [`share_requests`](Self::share_requests)).
    sharing: AtomicBool,
    /// Where the next share starts, so every shard gets its turn.
    next_shard: AtomicUsize,
    /// Shares handed out so far.
    shares: AtomicU64,
}

impl RequestRate {
    /// A limiter tracking at most about `max_keys` clients; `epoch` is any
    /// instant not after the first request (usually `Instant::now()`).
    pub fn new(policy: Gcra, max_keys: usize, epoch: Instant) -> Self {
        Self {
            policy,
            epoch,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            sharing: AtomicBool::new(false),
            next_shard: AtomicUsize::new(0),
            shares: AtomicU64::new(0),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Gcra {
        self.policy
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<Shard> {
        let i = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[i]
    }

    fn ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Admits one request from `key` at `now`, or returns how long until the
    /// next one would be admitted.
    pub fn check(&self, key: &ClientKey, now: Instant) -> Result<RateAllowance, Duration> {
        let now_ns = self.ns(now);
        let t = self.policy.interval_ns();
        let tau = self.policy.tolerance_ns();
        let mut guard = lock(self.shard(key));
        let shard = &mut *guard;
        if !shard.cells.contains_key(key) && shard.cells.len() >= self.max_per_shard {
            shard.cells.retain(|_, c| c.tat > now_ns);
            if shard.cells.len() >= self.max_per_shard {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return Ok(RateAllowance {
                    remaining: 0,
                    reset: Duration::ZERO,
                });
            }
        }
        let cell = shard.cells.entry(*key).or_default();
        let tat = cell.tat.max(now_ns);
        let ahead = tat - now_ns;
        if ahead > tau {
            self.denied.fetch_add(1, Ordering::Relaxed);
            return Err(Duration::from_nanos(ahead - tau));
        }
        let new_tat = tat.saturating_add(t);
        cell.tat = new_tat;
        if self.sharing.load(Ordering::Relaxed) {
            if cell.pending == 0 {
                shard.queue.push_back(*key);
            }
            cell.pending = cell.pending.saturating_add(1);
        }
        self.allowed.fetch_add(1, Ordering::Relaxed);
        let ahead = new_tat - now_ns;
        let remaining = (tau + t).saturating_sub(ahead) / t;
        Ok(RateAllowance {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_nanos(ahead),
        })
    }

    /// Forgets clients whose budget is full again (they behave exactly like
    /// new ones, also to the fleet: requests not shared yet that no longer
    /// weigh on the budget need not be) and returns memory of shrunken
    /// shards.
    pub fn retain_recent(&self, now: Instant) {
        let now_ns = self.ns(now);
        for shard in &self.shards {
            let mut guard = lock(shard);
            let shard = &mut *guard;
            shard.cells.retain(|_, c| c.tat > now_ns);
            if shard.cells.capacity() > 2 * shard.cells.len() + 64 {
                shard.cells.shrink_to_fit();
            }
            let cells = &shard.cells;
            shard
                .queue
                .retain(|key| cells.get(key).is_some_and(|c| c.pending > 0));
            shard.recent.retain(|key| cells.contains_key(key));
        }
    }

    /// Whether admitted requests are counted for a fleet.
    pub fn is_sharing(&self) -> bool {
        self.sharing.load(Ordering::Relaxed)
    }

    /// Up to `max` clients to share with the fleet: first those that made
    /// requests since they were last shared, with their counts (reset
    /// here), then, in turns, those shared before whose TAT still lies
    /// ahead (with no count: the fleet's answer tells what the other nodes
    /// admitted since); each with this node's TAT as a debt at `now`. A
    /// count is at most the intervals the debt still holds: requests whose
    /// interval has passed no longer weigh on the budget (after an outage,
    /// a client that kept to its rate is not charged all it did at once).
    /// The first call turns the counting on. Hand the result back with
    /// [`merge_requests`](Self::merge_requests) once the fleet answered, or
    /// with [`unshare_requests`](Self::unshare_requests) when it did not.
    pub fn share_requests(&self, now: Instant, max: usize) -> Vec<SharedRequests> {
        self.sharing.store(true, Ordering::Relaxed);
        let share = self.shares.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ns = self.ns(now);
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let interval = self.policy.interval_ns();
        let hand_out = |key: ClientKey, cell: &mut Cell| {
            cell.shared_in = share;
            let debt = cell.tat.saturating_sub(now_ns);
            let weighing = u32::try_from(debt.div_ceil(interval)).unwrap_or(u32::MAX);
            SharedRequests {
                client: key,
                admitted: std::mem::take(&mut cell.pending).min(weighing),
                debt: Duration::from_nanos(debt),
            }
        };
        // What changed; each joins its shard's rotation.
        for i in 0..SHARDS {
            if out.len() >= max {
                break;
            }
            let mut guard = lock(&self.shards[(first + i) % SHARDS]);
            let shard = &mut *guard;
            while out.len() < max {
                let Some(key) = shard.queue.pop_front() else {
                    break;
                };
                let Some(cell) = shard.cells.get_mut(&key).filter(|c| c.pending > 0) else {
                    continue;
                };
                out.push(hand_out(key, cell));
                if !cell.listed {
                    cell.listed = true;
                    shard.recent.push_back(key);
                }
            }
        }
        // One turn at most through each shard's rotation.
        for i in 0..SHARDS {
            if out.len() >= max {
                break;
            }
            let mut guard = lock(&self.shards[(first + i) % SHARDS]);
            let shard = &mut *guard;
            for _ in 0..shard.recent.len() {
                if out.len() >= max {
                    break;
                }
                let Some(key) = shard.recent.pop_front() else {
                    break;
                };
                let Some(cell) = shard.cells.get_mut(&key) else {
                    continue;
                };
                if cell.tat <= now_ns && cell.pending == 0 {
                    cell.listed = false;
                    continue;
                }
                if cell.shared_in != share {
                    out.push(hand_out(key, cell));
                }
                shard.recent.push_back(key);
            }
        }
        out
    }

    /// Takes the fleet's TAT for clients handed out by
    /// [`share_requests`](Self::share_requests) at `shared_at`:
    /// `fleet_debt[i]` is how far the fleet's TAT for `shared[i]` lay ahead
    /// then. Requests admitted here since are added on top, and a TAT
    /// already later here is kept.
    pub fn merge_requests(
        &self,
        shared: &[SharedRequests],
        fleet_debt: &[Duration],
        shared_at: Instant,
    ) {
        let at = self.ns(shared_at);
        let t = self.policy.interval_ns();
        for (s, debt) in shared.iter().zip(fleet_debt) {
            let debt = u64::try_from(debt.as_nanos()).unwrap_or(u64::MAX);
            let mut guard = lock(self.shard(&s.client));
            let shard = &mut *guard;
            if !shard.cells.contains_key(&s.client)
                && (debt == 0 || shard.cells.len() >= self.max_per_shard)
            {
                continue;
            }
            let cell = shard.cells.entry(s.client).or_default();
            let fleet = at
                .saturating_add(debt)
                .saturating_add(t.saturating_mul(u64::from(cell.pending)));
            cell.tat = cell.tat.max(fleet);
        }
    }

    /// Counts requests whose sharing failed as pending again, so the next
    /// share sends them.
    pub fn unshare_requests(&self, shared: Vec<SharedRequests>) {
        for s in shared {
            let mut guard = lock(self.shard(&s.client));
            let shard = &mut *guard;
            if let Some(cell) = shard.cells.get_mut(&s.client) {
                if cell.pending == 0 {
                    shard.queue.push_back(s.client);
                }
                cell.pending = cell.pending.saturating_add(s.admitted);
            }
        }
    }

    /// Counts admitted requests for a fleet from now on (after a reload,
    /// when the previous limiter did).
    pub fn adopt_sharing(&self, previous: &RequestRate) {
        if previous.is_sharing() {
            self.sharing.store(true, Ordering::Relaxed);
        }
    }

    /// Clients tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).cells.len()).sum()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory reserved by the tables, in entries.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| lock(s).cells.capacity()).sum()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> RateStats {
        RateStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
            keys: self.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientPrefixes;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn key(n: u32) -> ClientKey {
        ClientPrefixes::default().key(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_the_rate() {
        // 60 per minute = one a second, bursts of 5.
        let rr = RequestRate::new(
            Gcra::new(60, Duration::from_secs(60), 5),
            1000,
            Instant::now(),
        );
        let k = key(1);
        for i in 0..5 {
            let a = rr.check(&k, Instant::now()).unwrap();
            assert_eq!(a.remaining, 4 - i);
        }
        let wait = rr.check(&k, Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Other clients are unaffected.
        assert!(rr.check(&key(2), Instant::now()).is_ok());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(
            rr.check(&k, Instant::now()).unwrap_err(),
            Duration::from_millis(1)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(rr.check(&k, Instant::now()).is_ok());
        assert!(rr.check(&k, Instant::now()).is_err());
        // Sustained: exactly one per second over a long run.
        let mut ok = 0;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(250)).await;
            if rr.check(&k, Instant::now()).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 25);
        // After idling, the whole burst is back.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert!(rr.check(&k, Instant::now()).is_ok());
        }
        assert!(rr.check(&k, Instant::now()).is_err());
        let s = rr.stats();
        assert_eq!(s.allowed, 5 + 1 + 1 + 25 + 5);
        assert_eq!(s.denied, 4 + 75);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_dropped_and_memory_is_bounded() {
        let rr = RequestRate::new(
            Gcra::new(1, Duration::from_secs(1), 2),
            10_000,
            Instant::now(),
        );
        for n in 0..10_000u32 {
            assert!(rr.check(&key(n), Instant::now()).is_ok());
        }
        // Shards are capped separately, so a few keys may already spill.
        assert_eq!(rr.len() as u64 + rr.stats().untracked, 10_000);
        // Past the cap new clients pass untracked instead of growing the table.
        for n in 0..5_000u32 {
            let v6 = ClientPrefixes::default().key(IpAddr::V6(Ipv6Addr::from(u128::from(n) << 64)));
            assert!(rr.check(&v6, Instant::now()).is_ok());
        }
        assert!(rr.len() <= 10_000);
        assert!(rr.stats().untracked >= 5_000);
        tokio::time::advance(Duration::from_secs(2)).await;
        rr.retain_recent(Instant::now());
        assert_eq!(rr.len(), 0);
        assert!(rr.capacity() <= SHARDS * 64, "capacity {}", rr.capacity());
        // A full table is swept before a new key is refused tracking.
        for n in 0..10_000u32 {
            assert!(rr.check(&key(n), Instant::now()).is_ok());
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let before = rr.stats().untracked;
        assert!(rr.check(&key(99_999), Instant::now()).is_ok());
        assert_eq!(rr.stats().untracked, before);
    }
}
