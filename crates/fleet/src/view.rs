//! What a node knows about its fleet at one heartbeat, and the decisions
//! the rest of cvdmirror asks of it: which database versions every healthy
//! node publishes (what the DNS beacon, `/status.json` and redirects may
//! advertise), which other node may take a client this node is too busy
//! for, and whether the view is still fit for either. A view is an
//! immutable snapshot: [`Fleet::view`](crate::Fleet::view) hands out the
//! latest one without locking or touching Redis.
//!
//! A node counts for the decisions when it is *fresh* (its report was
//! recent when Redis was last read) and not *lagging* (it has not sat below
//! the fleet's newest version of a database for longer than the lag grace).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::report::{LinkLoad, NodeReport, SyncState};

/// A node's picture of its fleet.
#[derive(Clone, Debug)]
pub struct FleetView {
    /// The name of the node that holds this view.
    pub node: String,
    /// Every known node, this one included, sorted by name.
    pub nodes: Vec<FleetNode>,
    /// The upstream lease.
    pub lease: LeaseView,
    /// Whether the last heartbeat reached Redis.
    pub redis_ok: bool,
    /// Since when Redis has been out of reach (the last successful
    /// heartbeat, or the start), `None` while it answers.
    pub stale_since: Option<Instant>,
    /// How long the view may be used after Redis was lost.
    pub stale_after: Duration,
    /// When the view was computed.
    pub computed_at: Instant,
}

/// One node as a view sees it.
#[derive(Clone, Debug)]
pub struct FleetNode {
    /// Its last report.
    pub report: NodeReport,
    /// How old that report was when the view was computed.
    pub age: Duration,
    /// Whether the report was recent when Redis was last read.
    pub fresh: bool,
    /// Whether the node has been behind the fleet's newest version of a
    /// database for longer than the lag grace.
    pub lagging: bool,
}

impl FleetNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.report.node
    }

    /// Whether the node counts for consistent versions and redirects.
    pub fn counts(&self) -> bool {
        self.fresh && !self.lagging
    }
}

/// The upstream lease as a view sees it.
#[derive(Clone, Debug, Default)]
pub struct LeaseView {
    /// The last holder seen in Redis.
    pub holder: Option<LeaseHolder>,
    /// Until when this node surely holds the lease: its last successful
    /// acquisition or renewal was sent at `mine_until - lease_ttl`, so Redis
    /// lets the lease expire no earlier than this.
    pub mine_until: Option<Instant>,
    /// How many times a new holder (or a new token) was seen, the first
    /// included: what a lease-churn alert watches.
    pub changes: u64,
}

impl LeaseView {
    /// Whether this node holds the lease now.
    pub fn is_mine(&self) -> bool {
        self.mine_until.is_some_and(|until| Instant::now() < until)
    }
}

/// Who holds the lease, with its fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's node name.
    pub node: String,
    /// The fencing token: larger for every later acquisition.
    pub token: u64,
}

impl LeaseHolder {
    /// The lease's value in Redis: `"{node} {token}"`.
    pub(crate) fn value(&self) -> String {
        format!("{} {}", self.node, self.token)
    }

    /// Reads a lease value; `None` for anything the fleet never writes.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let (node, token) = value.rsplit_once(' ')?;
        if node.is_empty() {
            return None;
        }
        Some(Self {
            node: node.to_owned(),
            token: token.parse().ok()?,
        })
    }
}

/// Where a redirected client goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTarget {
    /// The node's name.
    pub node: String,
    /// Its public URL.
    pub public_url: String,
}

impl NodeTarget {
    /// The URL of `path` (which starts with `/`) on the target.
    pub fn location(&self, path: &str) -> String {
        let base = self.public_url.trim_end_matches('/');
        if path.starts_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }
}

impl FleetView {
    /// Whether Redis has been lost for longer than `stale_after`: the view
    /// no longer vouches for the other nodes, and redirects must stop.
    pub fn stale(&self) -> bool {
        self.stale_since
            .is_some_and(|since| since.elapsed() > self.stale_after)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&FleetNode> {
        self.nodes.iter().find(|node| node.name() == name)
    }

    /// Whether this node holds the upstream lease now.
    pub fn is_lease_holder(&self) -> bool {
        self.lease.is_mine()
    }

    /// The newest version of `database` that every fresh, non-lagging node
    /// publishing it has: the minimum over them. `None` when no such node
    /// publishes it.
    pub fn consistent_version(&self, database: &str) -> Option<u32> {
        self.nodes
            .iter()
            .filter(|node| node.counts())
            .filter_map(|node| node.report.versions.get(database).copied())
            .min()
    }

    /// [`consistent_version`](Self::consistent_version) of every database
    /// a counting node publishes.
    pub fn consistent_versions(&self) -> BTreeMap<String, u32> {
        let mut versions = BTreeMap::new();
        for node in self.nodes.iter().filter(|node| node.counts()) {
            for (database, &version) in &node.report.versions {
                versions
                    .entry(database.clone())
                    .and_modify(|least: &mut u32| *least = (*least).min(version))
                    .or_insert(version);
            }
        }
        versions
    }

    /// A node other than `from_node` that can take a client asking for
    /// `file`: fresh, not lagging, publishing the byte-identical file (the
    /// same SHA-256) and with headroom on its link, so it would not redirect
    /// the client on. Among those, one is drawn with a weight of its free
    /// capacity; `random` is a uniformly random number (`rand::random()`),
    /// a parameter so that tests can fix it. `None` when the view is stale
    /// or no node qualifies.
    pub fn redirect_target(
        &self,
        file: &str,
        sha256: &str,
        from_node: &str,
        random: u64,
    ) -> Option<NodeTarget> {
        self.redirect_target_preferring(file, sha256, from_node, random, None)
    }

    /// [`redirect_target`](Self::redirect_target), but `preferred` (the
    /// node a client's prefix is assigned to) is taken whenever it
    /// qualifies.
    pub fn redirect_target_preferring(
        &self,
        file: &str,
        sha256: &str,
        from_node: &str,
        random: u64,
        preferred: Option<&str>,
    ) -> Option<NodeTarget> {
        // A file not hashed yet (empty digest) is the same as nothing.
        if self.stale() || sha256.is_empty() {
            return None;
        }
        let candidates: Vec<(&FleetNode, u64)> = self
            .nodes
            .iter()
            .filter(|node| node.counts() && node.name() != from_node)
            .filter(|node| node.report.link.has_headroom())
            .filter(|node| {
                node.report
                    .files
                    .get(file)
                    .is_some_and(|published| published.sha256.eq_ignore_ascii_case(sha256))
            })
            .map(|node| (node, node.report.link.free()))
            .filter(|&(_, free)| free > 0)
            .collect();
        let target = |node: &FleetNode| NodeTarget {
            node: node.name().to_owned(),
            public_url: node.report.public_url.clone(),
        };
        if let Some((node, _)) = candidates
            .iter()
            .find(|(node, _)| Some(node.name()) == preferred)
        {
            return Some(target(node));
        }
        weighted(&candidates, random).map(target)
    }

    /// A node other than `from_node` that publishes `file`, for a request
    /// this node cannot answer with what the fleet announces: a file it
    /// lacks (a cdiff of a version it has not synced), or, with
    /// `newer_than`, a CVD of a version above that. Only counting nodes
    /// qualify, and a node with headroom is preferred (drawn with a weight
    /// of its free capacity, `preferred` first); without one, the counting
    /// node with the most room takes the client anyway: a busy node's
    /// herd gate is a better answer than a file this node does not have.
    /// `None` when the view is stale or no other node has it.
    pub fn fill_in_target(
        &self,
        file: &str,
        from_node: &str,
        newer_than: Option<u32>,
        random: u64,
        preferred: Option<&str>,
    ) -> Option<NodeTarget> {
        if self.stale() {
            return None;
        }
        let holders: Vec<&FleetNode> = self
            .nodes
            .iter()
            .filter(|node| node.counts() && node.name() != from_node)
            .filter(|node| {
                node.report.files.get(file).is_some_and(|published| {
                    newer_than.is_none_or(|ours| published.version.is_some_and(|v| v > ours))
                })
            })
            .collect();
        let target = |node: &FleetNode| NodeTarget {
            node: node.name().to_owned(),
            public_url: node.report.public_url.clone(),
        };
        let with_room: Vec<(&FleetNode, u64)> = holders
            .iter()
            .filter(|node| node.report.link.has_headroom())
            .map(|node| (*node, node.report.link.free()))
            .collect();
        if let Some((node, _)) = with_room
            .iter()
            .find(|(node, _)| Some(node.name()) == preferred)
        {
            return Some(target(node));
        }
        if let Some(node) = weighted(&with_room, random) {
            return Some(target(node));
        }
        holders
            .iter()
            .max_by_key(|node| node.report.link.free())
            .map(|node| target(node))
    }

    /// What `/fleet.json` shows.
    pub fn snapshot(&self) -> FleetSnapshot {
        FleetSnapshot {
            node: self.node.clone(),
            redis_ok: self.redis_ok,
            stale: self.stale(),
            redis_lost_ms: self.stale_since.map(|since| millis(since.elapsed())),
            lease: LeaseSnapshot {
                holder: self.lease.holder.as_ref().map(|holder| holder.node.clone()),
                token: self.lease.holder.as_ref().map(|holder| holder.token),
                mine: self.lease.is_mine(),
                changes: self.lease.changes,
            },
            consistent_versions: self.consistent_versions(),
            nodes: self
                .nodes
                .iter()
                .map(|node| NodeSnapshot {
                    node: node.report.node.clone(),
                    public_url: node.report.public_url.clone(),
                    versions: node.report.versions.clone(),
                    link: node.report.link,
                    sync: node.report.sync.clone(),
                    files: node.report.files.len(),
                    age_ms: millis(node.age),
                    fresh: node.fresh,
                    lagging: node.lagging,
                })
                .collect(),
        }
    }
}

/// One of `candidates`, drawn with the weight beside it; `random` is
/// uniform over `u64`. `None` when every weight is zero.
fn weighted<'a>(candidates: &[(&'a FleetNode, u64)], random: u64) -> Option<&'a FleetNode> {
    let total: u128 = candidates.iter().map(|&(_, free)| u128::from(free)).sum();
    // A point in [0, total), scaled from the whole u64 range so that no
    // candidate is favoured by a modulo.
    let mut point = (u128::from(random) * total) >> 64;
    for &(node, free) in candidates {
        let free = u128::from(free);
        if point < free {
            return Some(node);
        }
        point -= free;
    }
    None
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The fleet as `/fleet.json` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FleetSnapshot {
    /// The node that answers.
    pub node: String,
    /// Whether its last heartbeat reached Redis.
    pub redis_ok: bool,
    /// Whether Redis has been lost for too long to redirect.
    pub stale: bool,
    /// How long Redis has been out of reach, in milliseconds.
    pub redis_lost_ms: Option<u64>,
    /// The upstream lease.
    pub lease: LeaseSnapshot,
    /// What every counting node publishes, by database.
    pub consistent_versions: BTreeMap<String, u32>,
    /// Every known node.
    pub nodes: Vec<NodeSnapshot>,
}

/// The lease in [`FleetSnapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct LeaseSnapshot {
    /// The holder's node name.
    pub holder: Option<String>,
    /// The holder's fencing token.
    pub token: Option<u64>,
    /// Whether the answering node holds it.
    pub mine: bool,
    /// How many holder changes the answering node has seen.
    pub changes: u64,
}

/// One node in [`FleetSnapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct NodeSnapshot {
    /// The node's name.
    pub node: String,
    /// Where clients reach it.
    pub public_url: String,
    /// Its version of each database.
    pub versions: BTreeMap<String, u32>,
    /// Its link capacity and load, in bytes per second.
    pub link: LinkLoad,
    /// Its sync's health.
    pub sync: SyncState,
    /// How many files it publishes.
    pub files: usize,
    /// The age of its report, in milliseconds.
    pub age_ms: u64,
    /// Whether its report is recent.
    pub fresh: bool,
    /// Whether it is behind for longer than the lag grace.
    pub lagging: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::PublishedFile;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn node(name: &str, daily: u32, capacity: Option<u64>, load: u64) -> FleetNode {
        let mut report = NodeReport {
            node: name.to_owned(),
            public_url: format!("https://{name}.example.org/"),
            link: LinkLoad { capacity, load },
            ..NodeReport::default()
        };
        report.versions.insert("daily".to_owned(), daily);
        report.files.insert(
            "daily.cvd".to_owned(),
            PublishedFile {
                size: 10,
                sha256: SHA.to_owned(),
                version: Some(daily),
            },
        );
        FleetNode {
            report,
            age: Duration::ZERO,
            fresh: true,
            lagging: false,
        }
    }

    fn view(nodes: Vec<FleetNode>) -> FleetView {
        FleetView {
            node: "a".to_owned(),
            nodes,
            lease: LeaseView::default(),
            redis_ok: true,
            stale_since: None,
            stale_after: Duration::from_secs(30),
            computed_at: Instant::now(),
        }
    }

    fn target(view: &FleetView, random: u64) -> Option<String> {
        view.redirect_target("daily.cvd", SHA, "a", random)
            .map(|target| target.node)
    }

    #[test]
    fn the_consistent_version_is_the_least_among_counting_nodes() {
        let mut nodes = vec![
            node("a", 11, None, 0),
            node("b", 11, None, 0),
            node("c", 10, None, 0),
        ];
        nodes[1].report.versions.insert("main".to_owned(), 62);
        let mut fleet = view(nodes);
        assert_eq!(fleet.consistent_version("daily"), Some(10));
        assert_eq!(fleet.consistent_version("main"), Some(62));
        assert_eq!(fleet.consistent_version("bytecode"), None);
        fleet.nodes[2].lagging = true;
        assert_eq!(fleet.consistent_version("daily"), Some(11));
        fleet.nodes[0].fresh = false;
        fleet.nodes[1]
            .report
            .versions
            .insert("daily".to_owned(), 12);
        assert_eq!(fleet.consistent_version("daily"), Some(12));
        let versions = fleet.consistent_versions();
        assert_eq!(versions.get("daily"), Some(&12));
        assert_eq!(versions.get("main"), Some(&62));
    }

    #[test]
    fn redirects_go_only_to_other_counting_nodes_with_headroom_and_the_same_bytes() {
        let mut nodes = vec![
            node("a", 11, Some(1000), 0),   // the asking node
            node("b", 11, Some(1000), 950), // no headroom
            node("c", 11, None, 0),         // capacity unknown
            node("d", 11, Some(1000), 0),   // lagging
            node("e", 11, Some(1000), 0),   // not fresh
            node("f", 11, Some(1000), 0),   // other bytes
            node("g", 11, Some(1000), 100), // the only one
        ];
        nodes[3].lagging = true;
        nodes[4].fresh = false;
        nodes[5]
            .report
            .files
            .get_mut("daily.cvd")
            .into_iter()
            .for_each(|file| {
                file.sha256 = "ff".repeat(32);
            });
        let fleet = view(nodes);
        for random in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(target(&fleet, random).as_deref(), Some("g"));
        }
        assert_eq!(fleet.redirect_target("main.cvd", SHA, "a", 0), None);
        // A copy not hashed yet matches nothing, not even another such copy.
        assert_eq!(fleet.redirect_target("daily.cvd", "", "a", 0), None);
        assert_eq!(
            fleet
                .redirect_target("daily.cvd", &SHA.to_uppercase(), "a", 0)
                .map(|t| t.node),
            Some("g".to_owned())
        );
        assert_eq!(
            fleet
                .redirect_target("daily.cvd", SHA, "g", 0)
                .map(|t| t.node),
            Some("a".to_owned())
        );
    }

    #[test]
    fn redirects_are_weighted_by_free_capacity() {
        // b has 200 free, c 600: a quarter of the range goes to b.
        let fleet = view(vec![
            node("a", 11, Some(1000), 1000),
            node("b", 11, Some(1000), 800),
            node("c", 11, Some(1000), 400),
        ]);
        let at = |fraction: f64| target(&fleet, (u64::MAX as f64 * fraction) as u64);
        assert_eq!(at(0.0).as_deref(), Some("b"));
        assert_eq!(at(0.24).as_deref(), Some("b"));
        assert_eq!(at(0.26).as_deref(), Some("c"));
        assert_eq!(at(1.0).as_deref(), Some("c"));
        let mut counts = BTreeMap::new();
        for step in 0..1000u64 {
            let random = step * (u64::MAX / 1000) + u64::MAX / 2000;
            *counts.entry(target(&fleet, random)).or_insert(0) += 1;
        }
        assert_eq!(counts.get(&Some("b".to_owned())), Some(&250), "{counts:?}");
        assert_eq!(counts.get(&Some("c".to_owned())), Some(&750), "{counts:?}");
    }

    #[test]
    fn a_preferred_node_is_taken_whenever_it_qualifies() {
        let mut fleet = view(vec![
            node("a", 11, Some(1000), 1000),
            node("b", 11, Some(1000), 0),
            node("c", 11, Some(1000), 800),
        ]);
        let prefer = |fleet: &FleetView, preferred| {
            fleet
                .redirect_target_preferring("daily.cvd", SHA, "a", 0, Some(preferred))
                .map(|target| target.node)
        };
        // `c` has the least room but is the clients' node.
        assert_eq!(prefer(&fleet, "c").as_deref(), Some("c"));
        // Without headroom it is passed over, as is an unknown node.
        fleet.nodes[2].report.link.load = 950;
        assert_eq!(prefer(&fleet, "c").as_deref(), Some("b"));
        assert_eq!(prefer(&fleet, "z").as_deref(), Some("b"));
        // The asking node is never a target, preferred or not.
        assert_eq!(prefer(&fleet, "a").as_deref(), Some("b"));
    }

    #[test]
    fn a_missing_or_newer_file_is_found_on_another_counting_node() {
        let mut nodes = vec![
            node("a", 11, Some(1000), 0),   // the asking node, behind
            node("b", 12, Some(1000), 950), // newer, but no headroom
            node("c", 12, Some(1000), 0),   // newer, lagging (excluded)
            node("d", 11, Some(1000), 0),   // same version as a
        ];
        nodes[2].lagging = true;
        for node in &mut nodes[1..3] {
            node.report.files.insert(
                "daily-12.cdiff".to_owned(),
                PublishedFile {
                    size: 1,
                    sha256: String::new(),
                    version: None,
                },
            );
        }
        let mut fleet = view(nodes);
        let fill = |fleet: &FleetView, file: &str, newer: Option<u32>| {
            fleet
                .fill_in_target(file, "a", newer, 0, None)
                .map(|target| target.node)
        };
        // Only b has the cdiff and counts: taken even without headroom.
        assert_eq!(fill(&fleet, "daily-12.cdiff", None).as_deref(), Some("b"));
        // A newer whole CVD: b (d's is no newer).
        assert_eq!(fill(&fleet, "daily.cvd", Some(11)).as_deref(), Some("b"));
        assert_eq!(fill(&fleet, "daily.cvd", Some(12)), None);
        // Nobody publishes it: nowhere.
        assert_eq!(fill(&fleet, "daily-13.cdiff", None), None);
        // With room on a holder, the holder with room is taken.
        fleet.nodes[2].lagging = false;
        assert_eq!(fill(&fleet, "daily-12.cdiff", None).as_deref(), Some("c"));
        assert_eq!(
            fleet
                .fill_in_target("daily-12.cdiff", "a", None, 0, Some("b"))
                .map(|t| t.node)
                .as_deref(),
            Some("c"),
            "a preferred node without headroom is passed over"
        );
        fleet.stale_after = Duration::ZERO;
        fleet.stale_since = Instant::now().checked_sub(Duration::from_millis(10));
        assert_eq!(fill(&fleet, "daily-12.cdiff", None), None);
    }

    #[test]
    fn a_stale_view_redirects_nowhere() {
        let mut fleet = view(vec![
            node("a", 11, Some(1000), 0),
            node("b", 11, Some(1000), 0),
        ]);
        assert!(target(&fleet, 0).is_some());
        fleet.redis_ok = false;
        fleet.stale_since = Some(Instant::now());
        assert!(!fleet.stale());
        assert!(target(&fleet, 0).is_some());
        fleet.stale_after = Duration::ZERO;
        fleet.stale_since = Instant::now().checked_sub(Duration::from_millis(10));
        assert!(fleet.stale());
        assert_eq!(target(&fleet, 0), None);
        assert!(fleet.snapshot().stale);
    }

    #[test]
    fn lease_values_read_back() {
        let holder = LeaseHolder {
            node: "a".to_owned(),
            token: 42,
        };
        assert_eq!(holder.value(), "a 42");
        assert_eq!(LeaseHolder::parse("a 42"), Some(holder));
        assert_eq!(LeaseHolder::parse("a"), None);
        assert_eq!(LeaseHolder::parse(" 42"), None);
        assert_eq!(LeaseHolder::parse("a x"), None);
    }

    #[test]
    fn a_target_joins_its_url_and_the_path() {
        let target = NodeTarget {
            node: "b".to_owned(),
            public_url: "https://b.example.org/".to_owned(),
        };
        assert_eq!(
            target.location("/daily.cvd"),
            "https://b.example.org/daily.cvd"
        );
        assert_eq!(
            target.location("daily.cvd"),
            "https://b.example.org/daily.cvd"
        );
    }

    #[test]
    fn the_snapshot_shows_nodes_lease_and_versions() {
        let mut fleet = view(vec![node("a", 11, Some(1000), 10), node("b", 10, None, 0)]);
        fleet.lease = LeaseView {
            holder: Some(LeaseHolder {
                node: "b".to_owned(),
                token: 7,
            }),
            mine_until: None,
            changes: 2,
        };
        let json = serde_json::to_value(fleet.snapshot()).unwrap();
        assert_eq!(json["node"], "a");
        assert_eq!(json["redis_ok"], true);
        assert_eq!(json["stale"], false);
        assert_eq!(json["lease"]["holder"], "b");
        assert_eq!(json["lease"]["token"], 7);
        assert_eq!(json["lease"]["mine"], false);
        assert_eq!(json["consistent_versions"]["daily"], 10);
        assert_eq!(json["nodes"][0]["link"]["capacity"], 1000);
        assert_eq!(json["nodes"][0]["link"]["load"], 10);
        assert_eq!(json["nodes"][1]["versions"]["daily"], 10);
        assert_eq!(json["nodes"][1]["sync"]["health"]["state"], "ok");
        assert_eq!(json["nodes"][1]["files"], 1);
    }
}
