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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::ClientKey;
use super::lock;

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

fn ms(d: Duration) -> u64 {
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
        let offset = u128::from(self.period_ms()) * u128::from(j) / u128::from(self.slices());
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

/// Which quota is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QuotaScope {
    /// The site's total.
    Site,
    /// The client's share on the site.
    Client,
}

/// The result of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCheck {
    /// The site counter (if a site quota is configured).
    pub site: Option<QuotaState>,
    /// The client counter (if a client quota is configured).
    pub client: Option<QuotaState>,
}

impl QuotaCheck {
    /// The exhausted quota with the latest release, if any is exhausted.
    pub fn exceeded(&self) -> Option<(QuotaScope, QuotaState)> {
        [
            (QuotaScope::Site, self.site),
            (QuotaScope::Client, self.client),
        ]
        .into_iter()
        .filter_map(|(scope, s)| s.filter(QuotaState::exhausted).map(|s| (scope, s)))
        .max_by_key(|(_, s)| s.next_release)
    }
}

/// Usage of every site and client, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSnapshot {
    /// Site name → usage.
    #[serde(default)]
    pub sites: BTreeMap<String, Usage>,
    /// Site name → client → usage.
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<ClientKey, Usage>>,
}

#[derive(Debug, Default)]
struct Tables {
    sites: HashMap<Arc<str>, Usage>,
    clients: HashMap<(Arc<str>, ClientKey), Usage>,
}

/// Quota counters of every site and client.
#[derive(Debug)]
pub struct Quotas {
    site: Option<QuotaLimit>,
    client: Option<QuotaLimit>,
    max_clients: usize,
    tables: Mutex<Tables>,
    untracked: AtomicU64,
}

fn add(limit: &QuotaLimit, usage: &mut Usage, bytes: u64, now: Duration) {
    let start = limit.period_start_ms(now);
    if usage.period_start_ms != start {
        *usage = Usage {
            period_start_ms: start,
            used: 0,
        };
    }
    usage.used = usage.used.saturating_add(bytes);
}

impl Quotas {
    /// Counters for the given policies; at most `max_clients` client
    /// counters are kept (beyond that, new clients are not charged).
    pub fn new(site: Option<QuotaLimit>, client: Option<QuotaLimit>, max_clients: usize) -> Self {
        Self {
            site,
            client,
            max_clients,
            tables: Mutex::default(),
            untracked: AtomicU64::new(0),
        }
    }

    /// Whether any quota is configured.
    pub fn is_enabled(&self) -> bool {
        self.site.is_some() || self.client.is_some()
    }

    /// The counters of `site` and `client` at `now` (Unix time). Cheap: one
    /// lock, two lookups.
    pub fn check(&self, site: &Arc<str>, client: ClientKey, now: Duration) -> QuotaCheck {
        if !self.is_enabled() {
            return QuotaCheck {
                site: None,
                client: None,
            };
        }
        let t = lock(&self.tables);
        QuotaCheck {
            site: self
                .site
                .map(|l| l.evaluate(t.sites.get(site).copied().unwrap_or_default(), now)),
            client: self.client.map(|l| {
                let usage = t.clients.get(&(site.clone(), client)).copied();
                l.evaluate(usage.unwrap_or_default(), now)
            }),
        }
    }

    /// Charges `bytes` sent to `client` on `site` at `now` (Unix time).
    pub fn charge(&self, site: &Arc<str>, client: ClientKey, bytes: u64, now: Duration) {
        if bytes == 0 || !self.is_enabled() {
            return;
        }
        let mut t = lock(&self.tables);
        if let Some(l) = &self.site {
            add(l, t.sites.entry(site.clone()).or_default(), bytes, now);
        }
        if let Some(l) = &self.client {
            let key = (site.clone(), client);
            if !t.clients.contains_key(&key) && t.clients.len() >= self.max_clients {
                let start = l.period_start_ms(now);
                t.clients.retain(|_, u| u.period_start_ms == start);
                if t.clients.len() >= self.max_clients {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            add(l, t.clients.entry(key).or_default(), bytes, now);
        }
    }

    /// Drops counters of past periods and returns their memory.
    pub fn retain_current(&self, now: Duration) {
        let mut t = lock(&self.tables);
        if let Some(l) = &self.site {
            let start = l.period_start_ms(now);
            t.sites.retain(|_, u| u.period_start_ms == start);
        }
        if let Some(l) = &self.client {
            let start = l.period_start_ms(now);
            t.clients.retain(|_, u| u.period_start_ms == start);
            if t.clients.capacity() > 2 * t.clients.len() + 64 {
                t.clients.shrink_to_fit();
            }
        }
    }

    /// Charges refused because the client table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Every counter of the current period, for persistence and status.
    pub fn snapshot(&self, now: Duration) -> QuotaSnapshot {
        let t = lock(&self.tables);
        let mut snap = QuotaSnapshot::default();
        if let Some(l) = &self.site {
            let start = l.period_start_ms(now);
            for (site, u) in t.sites.iter().filter(|(_, u)| u.period_start_ms == start) {
                snap.sites.insert(site.to_string(), *u);
            }
        }
        if let Some(l) = &self.client {
            let start = l.period_start_ms(now);
            for ((site, key), u) in t.clients.iter().filter(|(_, u)| u.period_start_ms == start) {
                snap.clients
                    .entry(site.to_string())
                    .or_default()
                    .insert(*key, *u);
            }
        }
        snap
    }

    /// Restores counters saved earlier; those of another period (the file is
    /// from yesterday, or the period length changed) are dropped.
    pub fn restore(&self, snap: &QuotaSnapshot, now: Duration) {
        let mut t = lock(&self.tables);
        if let Some(l) = &self.site {
            let start = l.period_start_ms(now);
            for (site, u) in snap
                .sites
                .iter()
                .filter(|(_, u)| u.period_start_ms == start)
            {
                t.sites.insert(Arc::from(site.as_str()), *u);
            }
        }
        if let Some(l) = &self.client {
            let start = l.period_start_ms(now);
            for (site, clients) in &snap.clients {
                let site: Arc<str> = Arc::from(site.as_str());
                for (key, u) in clients.iter().filter(|(_, u)| u.period_start_ms == start) {
                    if t.clients.len() < self.max_clients {
                        t.clients.insert((site.clone(), *key), *u);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::client::ClientPrefixes;

    const DAY: Duration = Duration::from_secs(86_400);
    const HOUR: Duration = Duration::from_secs(3_600);
    // 2024-01-01T00:00:00Z, a period start for any whole-hour period.
    const T0: Duration = Duration::from_secs(1_704_067_200);

    fn day_limit() -> QuotaLimit {
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

    #[test]
    fn site_and_client_counters_charge_and_refuse() {
        let q = Quotas::new(
            Some(day_limit()),
            Some(QuotaLimit {
                limit: 2_400,
                ..day_limit()
            }),
            1_000,
        );
        let site: Arc<str> = Arc::from("mirror");
        let a = ClientPrefixes::default().key("192.0.2.1".parse().unwrap());
        let b = ClientPrefixes::default().key("192.0.2.2".parse().unwrap());
        assert_eq!(q.check(&site, a, T0).exceeded(), None);
        q.charge(&site, a, 100, T0);
        let c = q.check(&site, a, T0);
        assert_eq!(c.exceeded().map(|e| e.0), Some(QuotaScope::Client));
        assert_eq!(c.site.unwrap().used, 100);
        q.charge(&site, b, 900, T0);
        let (scope, state) = q.check(&site, b, T0).exceeded().unwrap();
        assert_eq!(scope, QuotaScope::Client);
        assert_eq!(state.next_release, HOUR * 9);
        assert_eq!(q.check(&site, b, T0).site.unwrap().remaining(), 0);
        // Next day, fresh.
        assert_eq!(q.check(&site, b, T0 + DAY).exceeded(), None);
        q.retain_current(T0 + DAY);
        assert!(q.snapshot(T0 + DAY).sites.is_empty());
    }

    #[test]
    fn snapshot_restores_only_the_current_period() {
        let q = Quotas::new(Some(day_limit()), Some(day_limit()), 10);
        let site: Arc<str> = Arc::from("m");
        let a = ClientPrefixes::default().key("2001:db8::1".parse().unwrap());
        q.charge(&site, a, 500, T0 + HOUR);
        let snap = q.snapshot(T0 + HOUR);
        assert_eq!(snap.clients["m"][&a].used, 500);
        let fresh = Quotas::new(Some(day_limit()), Some(day_limit()), 10);
        fresh.restore(&snap, T0 + 2 * HOUR);
        assert_eq!(
            fresh.check(&site, a, T0 + 2 * HOUR).client.unwrap().used,
            500
        );
        let tomorrow = Quotas::new(Some(day_limit()), Some(day_limit()), 10);
        tomorrow.restore(&snap, T0 + DAY + HOUR);
        assert_eq!(tomorrow.snapshot(T0 + DAY + HOUR), QuotaSnapshot::default());
    }

    #[test]
    fn client_table_is_bounded() {
        let q = Quotas::new(None, Some(day_limit()), 100);
        let site: Arc<str> = Arc::from("m");
        for n in 0..1_000u32 {
            let k = ClientPrefixes::default().key(std::net::Ipv4Addr::from(n).into());
            q.charge(&site, k, 1, T0);
        }
        assert_eq!(q.snapshot(T0).clients["m"].len(), 100);
        assert_eq!(q.untracked(), 900);
        // A new period frees the table.
        let k = ClientPrefixes::default().key("192.0.2.200".parse().unwrap());
        q.charge(&site, k, 1, T0 + DAY);
        assert_eq!(q.snapshot(T0 + DAY).clients["m"].len(), 1);
    }
}
