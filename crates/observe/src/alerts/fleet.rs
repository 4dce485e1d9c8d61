//! What the fleet alerts look at: this node's view of its fleet
//! ([`FleetSnapshot`], taken every tick) and what this process remembers
//! between views: which nodes it has seen (so that one that leaves the view
//! is noticed), and when the upstream lease changed hands.
//!
//! - `fleet_node_lost`: a node that was in the view is gone from it (its
//!   report expired in Redis: crash, kill, network, or a clean stop) for
//!   longer than [`FleetAlertConfig::node_lost_for`]. It stays lost until
//!   it reports again, the admin API's reset forgets it (a node removed on
//!   purpose), or this process restarts.
//! - `fleet_node_lagging`: a node (this one included) has sat below the
//!   fleet's newest version of a database for longer than the fleet's lag
//!   grace (the fleet marks it `lagging`).
//! - `fleet_redis_unreachable`: this node's heartbeats have not reached
//!   Redis for [`FleetAlertConfig::redis_for`].
//! - `fleet_lease_churn`: the upstream lease changed hands (a new holder or
//!   a new fencing token) more than [`FleetAlertConfig::lease_churn_max`]
//!   times within [`FleetAlertConfig::lease_window`]. The first holder this
//!   process sees is no change.
//!
//! While Redis is out of reach the view keeps the last nodes it read, so
//! nothing is lost then; the lagging flags are those of that last view.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cvdmirror_fleet::FleetSnapshot;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Lease changes remembered at most (the window is pruned every tick; this
/// only bounds a fleet whose lease flaps many times a second).
const KEPT_LEASE_CHANGES: usize = 1024;

/// Thresholds of the fleet rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetAlertConfig {
    /// How long a node must be gone from the view before it counts as
    /// lost: longer than a clean restart takes, and than the heartbeat or
    /// two in which a Redis that restarted empty lacks some reports.
    pub node_lost_for: Duration,
    /// How long Redis must stay out of reach before
    /// `fleet_redis_unreachable` fires.
    pub redis_for: Duration,
    /// Lease changes allowed within `lease_window`; one more fires
    /// `fleet_lease_churn` (a rolling restart of a three-node fleet changes
    /// the holder at most three times).
    pub lease_churn_max: u32,
    /// The window lease changes are counted in.
    pub lease_window: Duration,
}

impl Default for FleetAlertConfig {
    fn default() -> Self {
        Self {
            node_lost_for: Duration::from_secs(15),
            redis_for: Duration::from_secs(30),
            lease_churn_max: 3,
            lease_window: Duration::from_secs(10 * 60),
        }
    }
}

/// A node that left the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostNode {
    /// Its name.
    pub node: String,
    /// Unix time it was first missed.
    pub since: u64,
    /// When it was first missed.
    pub at: Instant,
}

/// A node the fleet marks lagging, and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaggingNode {
    /// Its name.
    pub node: String,
    /// Per database it is behind on: its version (`None`: it lacks the
    /// database) and the newest a fresh node publishes.
    pub behind: BTreeMap<String, (Option<u32>, u32)>,
}

/// What the fleet rules found in one view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFindings {
    /// Nodes gone from the view for longer than `node_lost_for`.
    pub lost: Vec<LostNode>,
    /// Nodes the fleet marks lagging.
    pub lagging: Vec<LaggingNode>,
    /// How long Redis has been out of reach, when it is.
    pub redis_lost: Option<Duration>,
    /// Whether the view is stale (redirects stopped).
    pub stale: bool,
    /// Lease changes within the window.
    pub lease_changes: usize,
    /// The lease holder and its token now.
    pub holder: Option<(String, u64)>,
}

/// The memory behind the fleet rules.
#[derive(Debug, Clone, Default)]
pub struct FleetWatch {
    /// Nodes in the last view.
    present: BTreeSet<String>,
    /// Nodes that left the view: since when.
    lost: BTreeMap<String, (Instant, u64)>,
    /// The lease change counter at the last look.
    lease_counter: Option<u64>,
    /// When each lease change within the window was seen, oldest first.
    lease_changes: VecDeque<Instant>,
}

impl FleetWatch {
    /// Notes `view` at `now` (`unix`: the same instant in Unix seconds) and
    /// says what the rules make of it.
    pub fn update(
        &mut self,
        now: Instant,
        unix: u64,
        view: &FleetSnapshot,
        config: &FleetAlertConfig,
    ) -> FleetFindings {
        let names: BTreeSet<String> = view.nodes.iter().map(|n| n.node.clone()).collect();
        for gone in self.present.difference(&names) {
            self.lost.entry(gone.clone()).or_insert((now, unix));
        }
        self.lost.retain(|name, _| !names.contains(name));
        self.present = names;

        let counter = view.lease.changes;
        let new = match self.lease_counter {
            // The first holder this process sees is nobody's change.
            None => 0,
            Some(before) => counter.saturating_sub(before),
        };
        self.lease_counter = Some(counter);
        for _ in 0..new.min(KEPT_LEASE_CHANGES as u64) {
            if self.lease_changes.len() == KEPT_LEASE_CHANGES {
                self.lease_changes.pop_front();
            }
            self.lease_changes.push_back(now);
        }
        while self
            .lease_changes
            .front()
            .is_some_and(|&at| now.duration_since(at) >= config.lease_window)
        {
            self.lease_changes.pop_front();
        }

        FleetFindings {
            lost: self
                .lost
                .iter()
                .filter(|(_, (at, _))| now.duration_since(*at) >= config.node_lost_for)
                .map(|(node, &(at, since))| LostNode {
                    node: node.clone(),
                    since,
                    at,
                })
                .collect(),
            lagging: lagging(view),
            redis_lost: (!view.redis_ok)
                .then(|| Duration::from_millis(view.redis_lost_ms.unwrap_or(0))),
            stale: view.stale,
            lease_changes: self.lease_changes.len(),
            holder: view.lease.holder.clone().zip(view.lease.token),
        }
    }

    /// Nodes that left the view and have not come back, however recently
    /// (name, Unix time first missed).
    pub fn lost(&self) -> Vec<(String, u64)> {
        self.lost
            .iter()
            .map(|(node, &(_, since))| (node.clone(), since))
            .collect()
    }

    /// Forgets the nodes that left (an operator removed them on purpose).
    pub fn forget_lost(&mut self) {
        self.lost.clear();
    }
}

/// The nodes `view` marks lagging, with the databases they are behind on.
pub fn lagging(view: &FleetSnapshot) -> Vec<LaggingNode> {
    let newest = newest_versions(view);
    view.nodes
        .iter()
        .filter(|n| n.lagging)
        .map(|n| LaggingNode {
            node: n.node.clone(),
            behind: newest
                .iter()
                .filter_map(|(db, &top)| {
                    let has = n.versions.get(db).copied();
                    has.is_none_or(|v| v < top)
                        .then(|| (db.clone(), (has, top)))
                })
                .collect(),
        })
        .collect()
}

/// The newest version of each database a fresh node publishes.
pub fn newest_versions(view: &FleetSnapshot) -> BTreeMap<String, u32> {
    let mut newest = BTreeMap::new();
    for node in view.nodes.iter().filter(|n| n.fresh) {
        for (db, &v) in &node.versions {
            newest
                .entry(db.clone())
                .and_modify(|top: &mut u32| *top = (*top).max(v))
                .or_insert(v);
        }
    }
    newest
}

/// `45 s`, `12 min`, `3.5 h`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{:.1} h", d.as_secs_f64() / 3600.0)
    }
}

/// The summary and values of `fleet_node_lost`.
pub fn lost_alert(lost: &[LostNode]) -> (String, Value) {
    let names: Vec<&str> = lost.iter().map(|l| l.node.as_str()).collect();
    (
        format!(
            "fleet node{} lost: {} (no heartbeat in Redis; gone from this node's view)",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
        json!({"nodes": lost.iter().map(|l| (l.node.clone(), json!({"lost_since": l.since})))
            .collect::<serde_json::Map<_, _>>()}),
    )
}

/// The summary and values of `fleet_node_lagging`.
pub fn lagging_alert(lagging: &[LaggingNode]) -> (String, Value) {
    let what: Vec<String> = lagging
        .iter()
        .map(|n| {
            let dbs: Vec<String> = n
                .behind
                .iter()
                .map(|(db, (has, top))| match has {
                    Some(v) => format!("{db} {v}, fleet has {top}"),
                    None => format!("no {db}, fleet has {top}"),
                })
                .collect();
            if dbs.is_empty() {
                n.node.clone()
            } else {
                format!("{} ({})", n.node, dbs.join("; "))
            }
        })
        .collect();
    (
        format!("fleet node lagging: {}", what.join(", ")),
        json!({"nodes": lagging.iter().map(|n| (n.node.clone(), json!({
            "behind": n.behind.iter().map(|(db, (has, top))| (db.clone(), json!({"version": has, "fleet_newest": top})))
                .collect::<serde_json::Map<_, _>>(),
        }))).collect::<serde_json::Map<_, _>>()}),
    )
}

/// The summary and values of `fleet_redis_unreachable`.
pub fn redis_alert(lost: Duration, stale: bool, hold: Duration) -> (String, Value) {
    (
        format!(
            "Redis unreachable for {}: {}",
            duration(lost),
            if stale {
                "fleet view stale, no redirects, serving on local limits"
            } else {
                "using the last fleet view"
            }
        ),
        json!({"redis_lost_ms": u64::try_from(lost.as_millis()).unwrap_or(u64::MAX), "stale": stale,
               "threshold_ms": u64::try_from(hold.as_millis()).unwrap_or(u64::MAX)}),
    )
}

/// The summary and values of `fleet_lease_churn`.
pub fn churn_alert(
    changes: usize,
    holder: Option<&(String, u64)>,
    config: &FleetAlertConfig,
) -> (String, Value) {
    (
        format!(
            "upstream lease changed hands {changes} times in {} ({})",
            duration(config.lease_window),
            holder.map_or("no holder now".to_owned(), |(node, token)| format!(
                "now {node}, token {token}"
            ))
        ),
        json!({"changes": changes, "window_s": config.lease_window.as_secs(),
               "threshold": config.lease_churn_max,
               "holder": holder.map(|h| &h.0), "token": holder.map(|h| h.1)}),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cvdmirror_fleet::{LeaseSnapshot, LinkLoad, NodeSnapshot, SyncState};

    /// A fresh node `name` publishing `daily` at `daily`.
    pub(crate) fn node(name: &str, daily: u32) -> NodeSnapshot {
        NodeSnapshot {
            node: name.to_owned(),
            public_url: format!("https://{name}.example.org"),
            versions: BTreeMap::from([("daily".to_owned(), daily)]),
            link: LinkLoad::default(),
            sync: SyncState::default(),
            files: 3,
            age_ms: 100,
            fresh: true,
            lagging: false,
        }
    }

    /// A view from `a` with `nodes`, Redis reachable, lease held by `a`
    /// with `changes` changes seen.
    pub(crate) fn view(nodes: Vec<NodeSnapshot>, changes: u64) -> FleetSnapshot {
        FleetSnapshot {
            node: "a".to_owned(),
            redis_ok: true,
            stale: false,
            redis_lost_ms: None,
            lease: LeaseSnapshot {
                holder: Some("a".to_owned()),
                token: Some(changes),
                mine: true,
                changes,
            },
            consistent_versions: BTreeMap::new(),
            nodes,
        }
    }

    fn names(lost: &[LostNode]) -> Vec<&str> {
        lost.iter().map(|l| l.node.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_leaves_is_lost_after_the_hold_until_it_returns() {
        let config = FleetAlertConfig::default();
        let mut w = FleetWatch::default();
        let three = view(vec![node("a", 1), node("b", 1), node("c", 1)], 1);
        let two = view(vec![node("a", 1), node("b", 1)], 1);
        assert!(
            w.update(Instant::now(), 100, &three, &config)
                .lost
                .is_empty()
        );
        assert!(w.update(Instant::now(), 101, &two, &config).lost.is_empty());
        assert_eq!(
            w.lost(),
            vec![("c".to_owned(), 101)],
            "missed, not yet lost"
        );
        tokio::time::advance(config.node_lost_for - Duration::from_millis(1)).await;
        assert!(w.update(Instant::now(), 115, &two, &config).lost.is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        let found = w.update(Instant::now(), 116, &two, &config);
        assert_eq!(names(&found.lost), ["c"]);
        assert_eq!(found.lost[0].since, 101);
        // Still lost much later; back once it reports again.
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(
            names(&w.update(Instant::now(), 0, &two, &config).lost),
            ["c"]
        );
        assert!(w.update(Instant::now(), 0, &three, &config).lost.is_empty());
        assert!(w.lost().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_absence_and_a_never_seen_node_are_not_lost() {
        let config = FleetAlertConfig::default();
        let mut w = FleetWatch::default();
        let two = view(vec![node("a", 1), node("b", 1)], 1);
        let one = view(vec![node("a", 1)], 1);
        // Joining is not leaving.
        w.update(Instant::now(), 0, &one, &config);
        w.update(Instant::now(), 0, &two, &config);
        // Gone for one heartbeat (Redis restarted empty), then back.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(w.update(Instant::now(), 0, &one, &config).lost.is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        w.update(Instant::now(), 0, &two, &config);
        tokio::time::advance(config.node_lost_for).await;
        assert!(w.update(Instant::now(), 0, &two, &config).lost.is_empty());
        // Forgotten on request.
        w.update(Instant::now(), 0, &one, &config);
        w.forget_lost();
        tokio::time::advance(config.node_lost_for).await;
        assert!(w.update(Instant::now(), 0, &one, &config).lost.is_empty());
    }

    #[test]
    fn lagging_nodes_say_what_they_lack() {
        let mut c = node("c", 27479);
        c.lagging = true;
        let mut d = node("d", 27480);
        d.lagging = true;
        d.versions.clear();
        let mut old = node("e", 27481);
        old.fresh = false; // sets no newest version
        let v = view(vec![node("a", 27480), node("b", 27480), c, d, old], 1);
        let lagging = lagging(&v);
        assert_eq!(
            lagging,
            vec![
                LaggingNode {
                    node: "c".into(),
                    behind: BTreeMap::from([("daily".into(), (Some(27479), 27480))]),
                },
                LaggingNode {
                    node: "d".into(),
                    behind: BTreeMap::from([("daily".into(), (None, 27480))]),
                },
            ]
        );
        let (summary, values) = lagging_alert(&lagging);
        assert_eq!(
            summary,
            "fleet node lagging: c (daily 27479, fleet has 27480), d (no daily, fleet has 27480)"
        );
        assert_eq!(values["nodes"]["c"]["behind"]["daily"]["version"], 27479);
        assert_eq!(
            values["nodes"]["d"]["behind"]["daily"]["version"],
            Value::Null
        );
        assert_eq!(
            values["nodes"]["d"]["behind"]["daily"]["fleet_newest"],
            27480
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lease_changes_are_counted_in_their_window_the_first_holder_excluded() {
        let config = FleetAlertConfig::default();
        let mut w = FleetWatch::default();
        let at = |changes| view(vec![node("a", 1)], changes);
        // This process started after five changes: none of them counts.
        assert_eq!(
            w.update(Instant::now(), 0, &at(5), &config).lease_changes,
            0
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            w.update(Instant::now(), 0, &at(7), &config).lease_changes,
            2
        );
        tokio::time::advance(Duration::from_secs(300)).await;
        let found = w.update(Instant::now(), 0, &at(9), &config);
        assert_eq!(found.lease_changes, 4);
        assert_eq!(found.holder, Some(("a".to_owned(), 9)));
        // The first two (seen at 60 s) leave the window ten minutes later.
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(
            w.update(Instant::now(), 0, &at(9), &config).lease_changes,
            4
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            w.update(Instant::now(), 0, &at(9), &config).lease_changes,
            2
        );
        tokio::time::advance(config.lease_window).await;
        assert_eq!(
            w.update(Instant::now(), 0, &at(9), &config).lease_changes,
            0
        );
    }

    #[test]
    fn summaries_read_well() {
        let config = FleetAlertConfig::default();
        let (s, v) = lost_alert(&[LostNode {
            node: "mirror3".into(),
            since: 1_764_288_000,
            at: Instant::now(),
        }]);
        assert_eq!(
            s,
            "fleet node lost: mirror3 (no heartbeat in Redis; gone from this node's view)"
        );
        assert_eq!(v["nodes"]["mirror3"]["lost_since"], 1_764_288_000);
        let (s, v) = redis_alert(Duration::from_secs(45), false, config.redis_for);
        assert_eq!(s, "Redis unreachable for 45 s: using the last fleet view");
        assert_eq!(
            (v["redis_lost_ms"].as_u64(), v["stale"].as_bool()),
            (Some(45_000), Some(false))
        );
        let (s, _) = redis_alert(Duration::from_secs(600), true, config.redis_for);
        assert_eq!(
            s,
            "Redis unreachable for 10 min: fleet view stale, no redirects, serving on local limits"
        );
        let (s, v) = churn_alert(4, Some(&("mirror2".to_owned(), 17)), &config);
        assert_eq!(
            s,
            "upstream lease changed hands 4 times in 10 min (now mirror2, token 17)"
        );
        assert_eq!(
            (v["holder"].as_str(), v["token"].as_u64()),
            (Some("mirror2"), Some(17))
        );
    }
}
