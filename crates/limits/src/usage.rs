//! Quota counters of every site and client, as one table.
//!
//! [`quota`](super::quota) holds the arithmetic; this keeps the counters:
//! one per site and one per (site, client), each tagged with its period, so
//! charging is one lock and one lookup and a new period needs no reset pass.
//! The client table is bounded; past the bound new clients are not charged
//! (and counted), which errs on the side of serving.
//!
//! In a fleet, a client's counter also holds what the *other* nodes sent
//! it this period, and its quota is judged on the sum. The table never
//! talks to anyone: [`Quotas::share_usage`] hands out the counters charged
//! since they were last shared (a queue, oldest first), then those of
//! clients charged here recently (a rotation, so their view of the other
//! nodes stays fresh), then a backlog, all bounded per share; and
//! [`Quotas::merge_usage`] folds back what the fleet reported. Site quotas
//! stay per node: they meter this node's link, like its caps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::ClientKey;
use super::lock;
use super::quota::{QuotaLimit, QuotaState, Usage, ms};

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

/// One client's counter on this node, to be shared with the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedUsage {
    /// The site.
    pub site: Arc<str>,
    /// The client.
    pub client: ClientKey,
    /// Start of the period, Unix milliseconds.
    pub period_start_ms: u64,
    /// End of the period (the next one's start), Unix milliseconds.
    pub period_end_ms: u64,
    /// Bytes this node sent the client on the site in the period.
    pub used: u64,
}

/// What the fleet holds for one shared counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetUsage {
    /// This node's bytes as the fleet has them: more than the node's own
    /// when it restarted without its state file.
    pub own: u64,
    /// Every other node's bytes in the period.
    pub others: u64,
}

type ClientId = (Arc<str>, ClientKey);

/// A client's counter: what this node sent, and what the rest of the fleet
/// did (zero without a fleet).
#[derive(Debug, Default, Clone, Copy)]
struct ClientCounter {
    own: Usage,
    others: Usage,
    /// Waiting in the share queue.
    queued: bool,
    /// In the rotation of recently charged clients.
    recent: bool,
    /// When it was last charged, Unix milliseconds.
    charged_ms: u64,
    /// The share that last handed it out.
    shared_in: u64,
}

impl ClientCounter {
    fn own(usage: Usage) -> Self {
        Self {
            own: usage,
            ..Self::default()
        }
    }

    /// The fleet-wide usage of the period starting at `start`.
    fn total(&self, start: u64) -> Usage {
        let of = |u: &Usage| {
            if u.period_start_ms == start {
                u.used
            } else {
                0
            }
        };
        Usage {
            period_start_ms: start,
            used: of(&self.own).saturating_add(of(&self.others)),
        }
    }

    fn is_current(&self, start: u64) -> bool {
        self.own.period_start_ms == start || self.others.period_start_ms == start
    }
}

#[derive(Debug, Default)]
struct Tables {
    sites: HashMap<Arc<str>, Usage>,
    clients: HashMap<ClientId, ClientCounter>,
    /// Clients charged since their counter was last shared, oldest first
    /// (only while sharing; each at most once, see `ClientCounter::queued`).
    queue: VecDeque<ClientId>,
    /// Clients charged recently, shared again every share (in turns when
    /// there are more than a share holds) to learn what the other nodes
    /// sent them since.
    recent: VecDeque<ClientId>,
    /// Counters to share again once the queue leaves room: after a
    /// restore, or when the fleet lost what it had.
    backlog: Vec<ClientId>,
    /// Shares handed out so far.
    shares: u64,
}

/// Quota counters of every site and client.
#[derive(Debug)]
pub struct Quotas {
    site: Option<QuotaLimit>,
    client: Option<QuotaLimit>,
    max_clients: usize,
    tables: Mutex<Tables>,
    untracked: AtomicU64,
    /// Whether client counters are shared with a fleet (set by the first
    /// [`share_usage`](Self::share_usage)); without it no bookkeeping is
    /// done for sharing.
    sharing: AtomicBool,
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
            sharing: AtomicBool::new(false),
        }
    }

    /// Whether any quota is configured.
    pub fn is_enabled(&self) -> bool {
        self.site.is_some() || self.client.is_some()
    }

    /// The counters of `site` and `client` at `now` (Unix time). Cheap: one
    /// lock, two lookups. A client's counter includes what other nodes of
    /// the fleet reported.
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
                let counter = t.clients.get(&(site.clone(), client));
                let usage = counter.map(|c| c.total(l.period_start_ms(now)));
                l.evaluate(usage.unwrap_or_default(), now)
            }),
        }
    }

    /// Charges `bytes` sent to `client` on `site` at `now` (Unix time).
    pub fn charge(&self, site: &Arc<str>, client: ClientKey, bytes: u64, now: Duration) {
        if bytes == 0 || !self.is_enabled() {
            return;
        }
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        if let Some(l) = &self.site {
            add(l, t.sites.entry(site.clone()).or_default(), bytes, now);
        }
        if let Some(l) = &self.client {
            let key = (site.clone(), client);
            if !t.clients.contains_key(&key) && t.clients.len() >= self.max_clients {
                let start = l.period_start_ms(now);
                t.clients.retain(|_, c| c.is_current(start));
                if t.clients.len() >= self.max_clients {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            let counter = t.clients.entry(key).or_default();
            add(l, &mut counter.own, bytes, now);
            counter.charged_ms = ms(now);
            if !counter.queued && self.sharing.load(Ordering::Relaxed) {
                counter.queued = true;
                t.queue.push_back((site.clone(), client));
            }
        }
    }

    /// Drops counters of past periods and returns their memory.
    pub fn retain_current(&self, now: Duration) {
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        if let Some(l) = &self.site {
            let start = l.period_start_ms(now);
            t.sites.retain(|_, u| u.period_start_ms == start);
        }
        if let Some(l) = &self.client {
            let start = l.period_start_ms(now);
            t.clients.retain(|_, c| c.is_current(start));
            if t.clients.capacity() > 2 * t.clients.len() + 64 {
                t.clients.shrink_to_fit();
            }
            let clients = &t.clients;
            t.queue.retain(|id| clients.contains_key(id));
            t.recent.retain(|id| clients.contains_key(id));
            t.backlog.retain(|id| clients.contains_key(id));
        }
    }

    /// Charges refused because the client table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Every counter of the current period, for persistence and status:
    /// this node's own usage (what the other nodes sent is theirs to keep).
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
            for ((site, key), c) in t
                .clients
                .iter()
                .filter(|(_, c)| c.own.period_start_ms == start)
            {
                snap.clients
                    .entry(site.to_string())
                    .or_default()
                    .insert(*key, c.own);
            }
        }
        snap
    }

    /// Restores counters saved earlier; those of another period (the file is
    /// from yesterday, or the period length changed) are dropped.
    pub fn restore(&self, snap: &QuotaSnapshot, now: Duration) {
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
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
            let sharing = self.sharing.load(Ordering::Relaxed);
            for (site, clients) in &snap.clients {
                let site: Arc<str> = Arc::from(site.as_str());
                for (key, u) in clients.iter().filter(|(_, u)| u.period_start_ms == start) {
                    let id = (site.clone(), *key);
                    if let Some(counter) = t.clients.get_mut(&id) {
                        counter.own = *u;
                    } else if t.clients.len() < self.max_clients {
                        t.clients.insert(id.clone(), ClientCounter::own(*u));
                    } else {
                        continue;
                    }
                    if sharing {
                        t.backlog.push(id);
                    }
                }
            }
        }
    }

    /// Whether client counters are shared with a fleet.
    pub fn is_sharing(&self) -> bool {
        self.sharing.load(Ordering::Relaxed)
    }

    /// Up to `max` client counters of the current period to share with the
    /// fleet: first those charged since they were last handed out (oldest
    /// first), then, in turns, those of clients charged within `active_for`
    /// (so that this node keeps learning what the others send them), then
    /// the backlog. The first call turns sharing on and puts every counter
    /// already held (restored from the state file) in the backlog. Without
    /// a client quota, nothing. Hand the result back with
    /// [`merge_usage`](Self::merge_usage) once the fleet answered, or with
    /// [`unshare_usage`](Self::unshare_usage) when it did not. Costs one
    /// lock for at most `max` lookups and one turn of the rotation, never a
    /// scan of the table.
    pub fn share_usage(&self, now: Duration, max: usize, active_for: Duration) -> Vec<SharedUsage> {
        let Some(l) = &self.client else {
            return Vec::new();
        };
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        if !self.sharing.swap(true, Ordering::Relaxed) {
            t.backlog = t.clients.keys().cloned().collect();
        }
        t.shares += 1;
        let share = t.shares;
        let start = l.period_start_ms(now);
        let end = start.saturating_add(ms(l.period).max(1));
        let active_since = ms(now).saturating_sub(ms(active_for));
        let mut out = Vec::new();
        let hand_out = |id: &ClientId, counter: &mut ClientCounter| {
            if counter.shared_in == share
                || counter.own.period_start_ms != start
                || counter.own.used == 0
            {
                return None;
            }
            counter.shared_in = share;
            Some(SharedUsage {
                site: id.0.clone(),
                client: id.1,
                period_start_ms: start,
                period_end_ms: end,
                used: counter.own.used,
            })
        };
        // What changed, oldest first; each joins the rotation.
        let mut joined = Vec::new();
        while out.len() < max {
            let Some(id) = t.queue.pop_front() else {
                break;
            };
            if let Some(counter) = t.clients.get_mut(&id) {
                counter.queued = false;
                out.extend(hand_out(&id, counter));
                if !counter.recent {
                    counter.recent = true;
                    joined.push(id);
                }
            }
        }
        // One turn at most through the clients charged recently.
        for _ in 0..t.recent.len() {
            if out.len() >= max {
                break;
            }
            let Some(id) = t.recent.pop_front() else {
                break;
            };
            let Some(counter) = t.clients.get_mut(&id) else {
                continue;
            };
            if counter.charged_ms < active_since {
                counter.recent = false;
                continue;
            }
            out.extend(hand_out(&id, counter));
            t.recent.push_back(id);
        }
        t.recent.extend(joined);
        while out.len() < max {
            let Some(id) = t.backlog.pop() else {
                break;
            };
            // A queued counter goes out with the queue, up to date.
            if let Some(counter) = t.clients.get_mut(&id).filter(|c| !c.queued) {
                out.extend(hand_out(&id, counter));
                if !counter.recent && counter.charged_ms >= active_since {
                    counter.recent = true;
                    t.recent.push_back(id);
                }
            }
        }
        out
    }

    /// Folds in what the fleet holds for counters handed out by
    /// [`share_usage`](Self::share_usage) (`fleet[i]` answers `shared[i]`):
    /// the other nodes' usage, and this node's own where the fleet knew
    /// more (the node lost its state). Usage only grows within a period, so
    /// a smaller answer (the fleet lost data) changes nothing.
    pub fn merge_usage(&self, shared: &[SharedUsage], fleet: &[FleetUsage]) {
        let mut t = lock(&self.tables);
        for (s, f) in shared.iter().zip(fleet) {
            let Some(counter) = t.clients.get_mut(&(s.site.clone(), s.client)) else {
                continue;
            };
            let start = s.period_start_ms;
            if counter.own.period_start_ms == start {
                counter.own.used = counter.own.used.max(f.own);
            }
            if counter.others.period_start_ms == start {
                counter.others.used = counter.others.used.max(f.others);
            } else if counter.others.period_start_ms < start {
                counter.others = Usage {
                    period_start_ms: start,
                    used: f.others,
                };
            }
        }
    }

    /// Puts counters whose sharing failed back in the queue, so the next
    /// share sends them again (with whatever was charged since).
    pub fn unshare_usage(&self, shared: Vec<SharedUsage>) {
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        for s in shared {
            let id = (s.site, s.client);
            if let Some(counter) = t.clients.get_mut(&id)
                && !counter.queued
            {
                counter.queued = true;
                t.queue.push_back(id);
            }
        }
    }

    /// Puts every counter in the backlog, to be shared again (the fleet
    /// lost what it had, e.g. its Redis restarted empty).
    pub fn reshare_all(&self) {
        if !self.is_sharing() {
            return;
        }
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        t.backlog = t.clients.keys().cloned().collect();
    }

    /// Continues `previous`'s sharing (after a reload): what the other
    /// nodes used and when each client was last charged, for the counters
    /// both tables hold, and every counter in the backlog so the fleet
    /// hears of this table soon.
    pub fn adopt_sharing(&self, previous: &Quotas) {
        if !previous.is_sharing() || self.client.is_none() {
            return;
        }
        self.sharing.store(true, Ordering::Relaxed);
        let before = lock(&previous.tables);
        let mut guard = lock(&self.tables);
        let t = &mut *guard;
        for (id, counter) in &mut t.clients {
            if let Some(old) = before.clients.get(id) {
                counter.others = old.others;
                counter.charged_ms = old.charged_ms;
            }
        }
        t.backlog = t.clients.keys().cloned().collect();
    }

    /// Client counters waiting to be shared (queue and backlog).
    pub fn unshared(&self) -> usize {
        let t = lock(&self.tables);
        t.queue.len() + t.backlog.len()
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
