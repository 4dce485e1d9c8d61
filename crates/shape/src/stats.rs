//! What the shaper tells the status page, metrics and the herd gate.
//!
//! Counts are of bytes actually handed to the connection (the flows' own
//! counters), not of grants, so unshaped traffic is counted too. The pacer
//! folds those counters into every node a few times a second and keeps an
//! exponentially weighted rate with a one-second time constant: steady enough
//! to read, quick enough that a herd shows up before it has done harm.

use std::sync::atomic::Ordering;

use serde::Serialize;
use tokio::time::{Duration, Instant};

use super::rate::Rate;
use super::tree::{Level, NodeId, Tree};

/// Time constant of the rate average.
const RATE_TAU: Duration = Duration::from_secs(1);

/// Bytes and average rate of one node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    bytes: u64,
    bytes_at_last_fold: u64,
    rate: f64,
}

/// One node as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    /// Site, class or client name.
    pub name: String,
    /// Average rate over about one second, bytes per second.
    pub rate: f64,
    /// Bytes sent since the node was created.
    pub bytes: u64,
    /// Flows registered below it.
    pub active_flows: u32,
    /// Flows waiting for a grant right now.
    pub waiting_flows: u32,
    /// Its cap.
    pub cap: Option<Rate>,
    /// Its weight among siblings.
    pub weight: u32,
}

/// A class within a site.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStats {
    /// The class itself.
    #[serde(flatten)]
    pub node: NodeStats,
    /// Its priority.
    pub priority: i32,
    /// Clients with flows.
    pub clients: Vec<NodeStats>,
}

/// A site and its classes.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStats {
    /// The site itself.
    #[serde(flatten)]
    pub node: NodeStats,
    /// Its classes.
    pub classes: Vec<ClassStats>,
}

/// The whole tree at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The link: total rate and bytes; `cap` is the cap in force.
    pub link: NodeStats,
    /// The configured link cap.
    pub configured_link_rate: Option<Rate>,
    /// The cap set by the link guard, if any.
    pub guard_link_rate: Option<Rate>,
    /// Sites.
    pub sites: Vec<SiteStats>,
}

/// How busy a class is, for admission decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassLoad {
    /// Flows registered in the class (e.g. bulk transfers in progress).
    pub active_flows: u32,
    /// Of those, flows waiting for a grant right now.
    pub waiting_flows: u32,
    /// Average rate of the class, bytes per second.
    pub rate: f64,
    /// Rate the class could have now, bytes per second: the tightest of its
    /// cap, its site's cap less higher-priority classes, and the link's cap
    /// less other sites. `None`: nothing caps it.
    pub available: Option<f64>,
}

impl Tree {
    /// Adds a flow's newly sent bytes to it and its ancestors.
    pub(crate) fn fold_flow(&mut self, id: NodeId) {
        let Some(flow) = self.node_mut(id).and_then(|n| n.flow.as_mut()) else {
            return;
        };
        let sent = flow.cell.sent.load(Ordering::Relaxed);
        let delta = sent.saturating_sub(flow.folded);
        flow.folded = sent;
        if delta == 0 {
            return;
        }
        let mut up = Some(id);
        while let Some(n) = up.and_then(|u| self.node_mut(u)) {
            n.meter.bytes += delta;
            up = n.parent;
        }
    }

    /// Folds every flow's counter and updates every rate average.
    pub(crate) fn fold(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_fold);
        if dt.is_zero() {
            return;
        }
        self.last_fold = now;
        let ids = self.ids();
        for &id in &ids {
            self.fold_flow(id);
        }
        let secs = dt.as_secs_f64();
        let alpha = 1.0 - (-secs / RATE_TAU.as_secs_f64()).exp();
        for &id in &ids {
            if let Some(n) = self.node_mut(id) {
                let m = &mut n.meter;
                let instant = (m.bytes - m.bytes_at_last_fold) as f64 / secs;
                m.rate += alpha * (instant - m.rate);
                m.bytes_at_last_fold = m.bytes;
            }
        }
    }

    /// Flows waiting for a grant below a node.
    fn waiting_below(&self, id: NodeId) -> u32 {
        let Some(node) = self.node(id) else { return 0 };
        match (&node.flow, node.level) {
            (Some(flow), _) => u32::from(flow.want > 0),
            // Flows are not in `children`; a client's waiting flows are
            // exactly its children with demand.
            (None, Level::Client) => node.pending,
            (None, _) => node.children.values().map(|&c| self.waiting_below(c)).sum(),
        }
    }

    fn node_stats(&self, id: NodeId) -> Option<NodeStats> {
        let n = self.node(id)?;
        Some(NodeStats {
            name: n.key.to_string(),
            rate: n.meter.rate,
            bytes: n.meter.bytes,
            active_flows: n.flows,
            waiting_flows: self.waiting_below(id),
            cap: n.bucket.as_ref().map(|b| b.rate()),
            weight: n.weight,
        })
    }

    fn children_sorted(&self, id: NodeId) -> Vec<NodeId> {
        let mut children: Vec<_> = self
            .node(id)
            .map(|n| n.children.iter().map(|(k, &v)| (k.clone(), v)).collect())
            .unwrap_or_default();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        children.into_iter().map(|(_, v)| v).collect()
    }

    /// The whole tree.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let sites = self
            .children_sorted(self.link)
            .into_iter()
            .filter_map(|site| {
                let classes = self
                    .children_sorted(site)
                    .into_iter()
                    .filter_map(|class| {
                        Some(ClassStats {
                            node: self.node_stats(class)?,
                            priority: self.node(class)?.priority,
                            clients: self
                                .children_sorted(class)
                                .into_iter()
                                .filter_map(|c| self.node_stats(c))
                                .collect(),
                        })
                    })
                    .collect();
                Some(SiteStats {
                    node: self.node_stats(site)?,
                    classes,
                })
            })
            .collect();
        Snapshot {
            link: self.node_stats(self.link).unwrap_or_else(|| NodeStats {
                name: "link".into(),
                rate: 0.0,
                bytes: 0,
                active_flows: 0,
                waiting_flows: 0,
                cap: None,
                weight: 1,
            }),
            configured_link_rate: self.config.link_rate,
            guard_link_rate: self.guard_rate,
            sites,
        }
    }

    /// Load of one class in one site.
    pub(crate) fn class_load(&self, site: &str, class: &str) -> ClassLoad {
        let link = self.node(self.link);
        let site_id = link.and_then(|l| l.children.get(site).copied());
        let site_node = site_id.and_then(|s| self.node(s));
        let class_id = site_node.and_then(|s| s.children.get(class).copied());
        let class_node = class_id.and_then(|c| self.node(c));
        let rate_of = |n: Option<&super::tree::Node>| n.map_or(0.0, |n| n.meter.rate);
        let bytes_per_sec = |r: Option<Rate>| r.map(Rate::bytes_per_sec_f64);
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        };
        let link_room =
            bytes_per_sec(self.link_rate()).map(|cap| cap - (rate_of(link) - rate_of(site_node)));
        let priority = self.classifier.get(class).map_or(0, |c| c.priority);
        let higher: f64 = site_node
            .map(|s| {
                s.children
                    .values()
                    .filter_map(|&c| self.node(c))
                    .filter(|c| c.priority > priority)
                    .map(|c| c.meter.rate)
                    .sum()
            })
            .unwrap_or(0.0);
        let site_room =
            min(link_room, bytes_per_sec(self.config.site(site).rate)).map(|r| r - higher);
        let class_cap = bytes_per_sec(self.classifier.get(class).and_then(|c| c.rate));
        ClassLoad {
            active_flows: class_node.map_or(0, |c| c.flows),
            waiting_flows: class_id.map_or(0, |c| self.waiting_below(c)),
            rate: rate_of(class_node),
            available: min(site_room, class_cap).map(|r| r.max(0.0)),
        }
    }

    /// Flows in a class summed over all sites.
    pub(crate) fn class_flows(&self, class: &str) -> u32 {
        self.node(self.link).map_or(0, |l| {
            l.children
                .values()
                .filter_map(|&s| self.node(s))
                .filter_map(|s| s.children.get(class).and_then(|&c| self.node(c)))
                .map(|c| c.flows)
                .sum()
        })
    }
}
