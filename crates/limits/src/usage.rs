//! Quota counters of every site and client, as one table.
//!
//! [`quota`](super::quota) holds the arithmetic; this keeps the counters:
//! one per site and one per (site, client), each tagged with its period, so
//! charging is one lock and one lookup and a new period needs no reset pass.
//! The client table is bounded; past the bound new clients are not charged
//! (and counted), which errs on the side of serving.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::ClientKey;
use super::lock;
use super::quota::{QuotaLimit, QuotaState, Usage};

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
    use crate::client::ClientPrefixes;
    use crate::quota::tests::{DAY, HOUR, T0, day_limit};

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
