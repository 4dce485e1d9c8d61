//! The heartbeat task's memory, turned into a [`FleetView`] at every beat:
//! the reports read at the last successful heartbeat (kept while Redis is
//! out of reach), since when each node has been behind the fleet's newest
//! version of each database (which makes it lagging once the lag grace has
//! passed), and the lease holders seen. Pure logic: time comes in as an
//! argument, so it is tested without Redis or waiting.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::FleetConfig;
use crate::report::NodeReport;
use crate::view::{FleetNode, FleetView, LeaseHolder, LeaseView};

/// Another node's report as read from Redis.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub report: NodeReport,
    /// The report's age when it was read.
    pub age: Duration,
}

/// What the heartbeat task remembers between beats.
#[derive(Debug)]
pub(crate) struct Tracker {
    node: String,
    fresh_within: Duration,
    lag_grace: Duration,
    stale_after: Duration,
    started: Instant,
    /// The other nodes at the last successful read.
    seen: Vec<Seen>,
    seen_at: Instant,
    redis_ok: bool,
    last_ok: Option<Instant>,
    /// (node, database) → since when the node has been behind on it.
    behind_since: HashMap<(String, String), Instant>,
    lease: LeaseView,
    /// The last holder seen, kept while the lease is vacant.
    last_holder: Option<LeaseHolder>,
}

impl Tracker {
    pub fn new(config: &FleetConfig, now: Instant) -> Self {
        Self {
            node: config.node.clone(),
            fresh_within: config.fresh_within(),
            lag_grace: config.lag_grace,
            stale_after: config.stale_after,
            started: now,
            seen: Vec::new(),
            seen_at: now,
            redis_ok: false,
            last_ok: None,
            behind_since: HashMap::new(),
            lease: LeaseView::default(),
            last_holder: None,
        }
    }

    /// A heartbeat read `reports` (this node's own among them, ignored).
    pub fn read(&mut self, reports: Vec<Seen>, at: Instant) {
        self.seen = reports
            .into_iter()
            .filter(|seen| seen.report.node != self.node)
            .collect();
        self.seen_at = at;
        self.redis_ok = true;
        self.last_ok = Some(at);
    }

    /// A heartbeat did not reach Redis: the last reports stay.
    pub fn failed(&mut self) {
        self.redis_ok = false;
    }

    pub fn redis_ok(&self) -> bool {
        self.redis_ok
    }

    /// The lease as a heartbeat found it: `holder` in Redis, and until when
    /// it is surely this node's.
    pub fn lease(&mut self, holder: Option<LeaseHolder>, mine_until: Option<Instant>) {
        if let Some(holder) = &holder
            && self.last_holder.as_ref() != Some(holder)
        {
            self.lease.changes += 1;
            self.last_holder = Some(holder.clone());
        }
        self.lease.holder = holder;
        self.lease.mine_until = mine_until;
    }

    #[cfg(test)]
    pub fn lease_view(&self) -> &LeaseView {
        &self.lease
    }

    /// The view at `now`, with `own` as this node's report; advances the
    /// lag clocks.
    pub fn view(&mut self, own: NodeReport, now: Instant) -> FleetView {
        let since_read = now.saturating_duration_since(self.seen_at);
        let mut nodes: Vec<FleetNode> = self
            .seen
            .iter()
            .map(|seen| FleetNode {
                report: seen.report.clone(),
                age: seen.age + since_read,
                fresh: seen.age <= self.fresh_within,
                lagging: false,
            })
            .collect();
        nodes.push(FleetNode {
            report: own,
            age: Duration::ZERO,
            fresh: true,
            lagging: false,
        });
        nodes.sort_by(|a, b| a.report.node.cmp(&b.report.node));
        nodes.dedup_by(|a, b| a.report.node == b.report.node);
        self.track_lag(&mut nodes, now);
        FleetView {
            node: self.node.clone(),
            nodes,
            lease: self.lease.clone(),
            redis_ok: self.redis_ok,
            stale_since: (!self.redis_ok).then(|| self.last_ok.unwrap_or(self.started)),
            stale_after: self.stale_after,
            computed_at: now,
        }
    }

    /// Marks the nodes that have been behind the newest version a fresh
    /// node publishes (or lacked the database) for longer than the lag
    /// grace. Nodes that are not fresh neither set the newest version nor
    /// move their clocks; clocks of nodes that left are dropped.
    fn track_lag(&mut self, nodes: &mut [FleetNode], now: Instant) {
        let mut newest: BTreeMap<String, u32> = BTreeMap::new();
        for node in nodes.iter().filter(|node| node.fresh) {
            for (database, &version) in &node.report.versions {
                let entry = newest.entry(database.clone()).or_insert(version);
                *entry = (*entry).max(version);
            }
        }
        self.behind_since.retain(|(name, database), _| {
            newest.contains_key(database) && nodes.iter().any(|node| node.report.node == *name)
        });
        for node in nodes.iter_mut() {
            for (database, &top) in &newest {
                let key = (node.report.node.clone(), database.clone());
                let behind = node
                    .report
                    .versions
                    .get(database)
                    .is_none_or(|&version| version < top);
                if node.fresh {
                    if behind {
                        self.behind_since.entry(key.clone()).or_insert(now);
                    } else {
                        self.behind_since.remove(&key);
                    }
                }
                if self
                    .behind_since
                    .get(&key)
                    .is_some_and(|&since| now.saturating_duration_since(since) >= self.lag_grace)
                {
                    node.lagging = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FleetConfig {
        let mut config = FleetConfig::new("redis://127.0.0.1/", "a", "https://a.example.org");
        config.node_ttl = Duration::from_secs(10);
        config.lag_grace = Duration::from_secs(60);
        config.stale_after = Duration::from_secs(30);
        config
    }

    fn report(name: &str, daily: Option<u32>) -> NodeReport {
        let mut report = NodeReport {
            node: name.to_owned(),
            ..NodeReport::default()
        };
        if let Some(daily) = daily {
            report.versions.insert("daily".to_owned(), daily);
        }
        report
    }

    fn seen(name: &str, daily: Option<u32>, age_secs: u64) -> Seen {
        Seen {
            report: report(name, daily),
            age: Duration::from_secs(age_secs),
        }
    }

    fn flags(view: &FleetView) -> Vec<(String, bool, bool)> {
        view.nodes
            .iter()
            .map(|node| (node.name().to_owned(), node.fresh, node.lagging))
            .collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_view_holds_the_own_report_and_the_others_sorted() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        tracker.read(
            vec![
                seen("c", Some(11), 1),
                seen("a", Some(1), 0),
                seen("b", Some(11), 6),
            ],
            t0,
        );
        let view = tracker.view(report("a", Some(11)), t0 + SECOND);
        let names: Vec<_> = view.nodes.iter().map(FleetNode::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // The own report is the current one, not the one read back.
        assert_eq!(
            view.node("a").and_then(|n| n.report.versions.get("daily")),
            Some(&11)
        );
        // b's report was 6 s old when read: more than half the node TTL.
        assert_eq!(
            flags(&view),
            [
                ("a".into(), true, false),
                ("b".into(), false, false),
                ("c".into(), true, false)
            ]
        );
        assert_eq!(view.node("c").map(|n| n.age), Some(2 * SECOND));
        assert!(view.redis_ok);
        assert_eq!(view.stale_since, None);
    }

    #[test]
    fn a_node_behind_becomes_lagging_after_the_grace_and_recovers_at_once() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        tracker.read(vec![seen("b", Some(11), 0), seen("c", Some(10), 0)], t0);
        let view = tracker.view(report("a", Some(11)), t0);
        assert_eq!(view.consistent_version("daily"), Some(10));
        let view = tracker.view(report("a", Some(11)), t0 + 59 * SECOND);
        assert_eq!(view.consistent_version("daily"), Some(10));
        let view = tracker.view(report("a", Some(11)), t0 + 60 * SECOND);
        assert_eq!(view.node("c").map(|n| n.lagging), Some(true));
        assert_eq!(view.consistent_version("daily"), Some(11));
        // c catches up, then the fleet moves on: c's clock starts afresh.
        tracker.read(
            vec![seen("b", Some(11), 0), seen("c", Some(11), 0)],
            t0 + 61 * SECOND,
        );
        let view = tracker.view(report("a", Some(11)), t0 + 61 * SECOND);
        assert_eq!(view.node("c").map(|n| n.lagging), Some(false));
        tracker.read(
            vec![seen("b", Some(12), 0), seen("c", Some(11), 0)],
            t0 + 62 * SECOND,
        );
        let view = tracker.view(report("a", Some(12)), t0 + 62 * SECOND);
        assert_eq!(view.node("c").map(|n| n.lagging), Some(false));
        assert_eq!(view.consistent_version("daily"), Some(11));
    }

    #[test]
    fn the_own_node_can_lag_and_a_missing_database_counts_as_behind() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        tracker.read(vec![seen("b", Some(11), 0), seen("c", None, 0)], t0);
        tracker.view(report("a", Some(10)), t0);
        let view = tracker.view(report("a", Some(10)), t0 + 60 * SECOND);
        assert_eq!(
            flags(&view),
            [
                ("a".into(), true, true),
                ("b".into(), true, false),
                ("c".into(), true, true)
            ]
        );
        assert_eq!(view.consistent_version("daily"), Some(11));
    }

    #[test]
    fn a_database_published_by_nobody_fresh_makes_no_one_lag() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        // Only b, whose report is old, has version 12.
        tracker.read(vec![seen("b", Some(12), 8), seen("c", Some(11), 0)], t0);
        tracker.view(report("a", Some(11)), t0);
        let view = tracker.view(report("a", Some(11)), t0 + 120 * SECOND);
        assert!(
            view.nodes.iter().all(|node| !node.lagging),
            "{:?}",
            flags(&view)
        );
        assert_eq!(view.consistent_version("daily"), Some(11));
    }

    #[test]
    fn a_node_that_left_loses_its_lag_clock() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        tracker.read(vec![seen("c", Some(10), 0)], t0);
        tracker.view(report("a", Some(11)), t0);
        tracker.read(vec![], t0 + 30 * SECOND);
        tracker.view(report("a", Some(11)), t0 + 30 * SECOND);
        tracker.read(vec![seen("c", Some(10), 0)], t0 + 61 * SECOND);
        let view = tracker.view(report("a", Some(11)), t0 + 61 * SECOND);
        assert_eq!(view.node("c").map(|n| n.lagging), Some(false));
    }

    #[test]
    fn without_redis_the_last_nodes_stay_and_the_view_goes_stale() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(&config(), t0);
        let view = tracker.view(report("a", Some(11)), t0);
        assert_eq!(view.stale_since, Some(t0), "not yet connected");
        tracker.read(vec![seen("b", Some(11), 1)], t0 + SECOND);
        tracker.failed();
        let view = tracker.view(report("a", Some(11)), t0 + 20 * SECOND);
        assert!(!view.redis_ok);
        assert_eq!(view.stale_since, Some(t0 + SECOND));
        let b = view.node("b");
        assert_eq!(b.map(|n| (n.fresh, n.age)), Some((true, 20 * SECOND)));
    }

    #[test]
    fn every_new_holder_or_token_counts_as_a_change() {
        let mut tracker = Tracker::new(&config(), Instant::now());
        let holder = |node: &str, token| {
            Some(LeaseHolder {
                node: node.to_owned(),
                token,
            })
        };
        tracker.lease(holder("b", 1), None);
        tracker.lease(holder("b", 1), None);
        tracker.lease(None, None);
        tracker.lease(holder("c", 2), None);
        tracker.lease(holder("c", 3), None);
        assert_eq!(tracker.lease_view().changes, 3);
        assert_eq!(tracker.lease_view().holder, holder("c", 3));
    }
}
