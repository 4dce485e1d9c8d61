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
//! Time is passed in (`tokio::time::Instant`), so tests use a paused clock.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Per-client GCRA state, sharded to keep lock hold times short.
#[derive(Debug)]
pub struct RequestRate {
    policy: Gcra,
    epoch: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<ClientKey, u64>>>,
    max_per_shard: usize,
    allowed: AtomicU64,
    denied: AtomicU64,
    untracked: AtomicU64,
}

impl RequestRate {
    /// A limiter tracking at most about `max_keys` clients; `epoch` is any
    /// instant not after the first request (usually `Instant::now()`).
    pub fn new(policy: Gcra, max_keys: usize, epoch: Instant) -> Self {
        Self {
            policy,
            epoch,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Gcra {
        self.policy
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<HashMap<ClientKey, u64>> {
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
        let mut shard = lock(self.shard(key));
        if !shard.contains_key(key) && shard.len() >= self.max_per_shard {
            shard.retain(|_, tat| *tat > now_ns);
            if shard.len() >= self.max_per_shard {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return Ok(RateAllowance {
                    remaining: 0,
                    reset: Duration::ZERO,
                });
            }
        }
        let tat = shard.get(key).copied().unwrap_or(now_ns).max(now_ns);
        let ahead = tat - now_ns;
        if ahead > tau {
            self.denied.fetch_add(1, Ordering::Relaxed);
            return Err(Duration::from_nanos(ahead - tau));
        }
        let new_tat = tat.saturating_add(t);
        shard.insert(*key, new_tat);
        self.allowed.fetch_add(1, Ordering::Relaxed);
        let ahead = new_tat - now_ns;
        let remaining = (tau + t).saturating_sub(ahead) / t;
        Ok(RateAllowance {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Duration::from_nanos(ahead),
        })
    }

    /// Forgets clients whose budget is full again (they behave exactly like
    /// new ones) and returns memory of shrunken shards.
    pub fn retain_recent(&self, now: Instant) {
        let now_ns = self.ns(now);
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.retain(|_, tat| *tat > now_ns);
            if shard.capacity() > 2 * shard.len() + 64 {
                shard.shrink_to_fit();
            }
        }
    }

    /// Clients tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory reserved by the tables, in entries.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| lock(s).capacity()).sum()
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
