//! The scheduling tree: link → site → class → client → flow.
//!
//! Nodes live in a generational slab so that queue entries can be plain
//! copies of ids and go stale harmlessly: removing a flow or client from the
//! middle of a queue of ten thousand is a flag flip, not a scan. Each node
//! keeps the count of children with demand (`pending`), so a node is active
//! exactly while something below it waits, and activation and deactivation
//! walk up only as far as the state actually changes. Clients and flows are
//! freed when their last flow ends; sites and classes stay (they are few and
//! carry the totals the status page shows). How caps and configuration
//! reach the nodes is in [`caps`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

use tokio::time::Instant;

use super::bucket::Bucket;
use super::class::Classifier;
use super::config::ShapeConfig;
use super::rate::Rate;
use super::spec::FlowSpec;
use super::stats::Meter;

mod caps;

/// A slot index with the generation it was allocated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NodeId {
    idx: u32,
    generation: u32,
}

/// A position in a parent's queue, valid while the node's epoch matches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) id: NodeId,
    pub(crate) epoch: u32,
}

/// Depth in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Link,
    Site,
    Class,
    Client,
    Flow,
}

/// Whether a node waits for service, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QState {
    /// Nothing below it waits.
    Idle,
    /// In its parent's queue.
    Queued,
    /// Waits, but a cap below or at it is exhausted until the next tick.
    Blocked,
}

/// What the body and the pacer share without the lock.
#[derive(Debug, Default)]
pub(crate) struct FlowCell {
    /// Body bytes handed on.
    pub(crate) sent: AtomicU64,
    /// No cap anywhere on the path: the body skips the scheduler.
    pub(crate) bypass: AtomicBool,
}

/// The part of a node that only flows have.
#[derive(Debug)]
pub(crate) struct FlowState {
    /// Bytes the body waits for, not yet granted.
    pub(crate) want: u64,
    /// Bytes granted, not yet sent.
    pub(crate) credit: u64,
    pub(crate) waker: Option<Waker>,
    pub(crate) cell: Arc<FlowCell>,
    /// `cell.sent` already added to the meters.
    pub(crate) folded: u64,
}

/// One node of any level.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) level: Level,
    pub(crate) parent: Option<NodeId>,
    pub(crate) key: Arc<str>,
    pub(crate) children: HashMap<Arc<str>, NodeId>,
    pub(crate) weight: u32,
    pub(crate) priority: i32,
    pub(crate) bucket: Option<Bucket>,
    /// Active children by priority, highest first.
    pub(crate) queues: Vec<(i32, VecDeque<Entry>)>,
    /// Children that are queued or blocked.
    pub(crate) pending: u32,
    pub(crate) state: QState,
    pub(crate) epoch: u32,
    pub(crate) deficit: i64,
    /// Registered flows in the subtree.
    pub(crate) flows: u32,
    pub(crate) meter: Meter,
    pub(crate) flow: Option<FlowState>,
    /// For clients: weight and cap asked for by the latest registration.
    pub(crate) client_override: (u32, Option<Rate>),
}

impl Node {
    fn new(level: Level, parent: Option<NodeId>, key: Arc<str>) -> Self {
        Self {
            level,
            parent,
            key,
            children: HashMap::new(),
            weight: 1,
            priority: 0,
            bucket: None,
            queues: Vec::new(),
            pending: 0,
            state: QState::Idle,
            epoch: 0,
            deficit: 0,
            flows: 0,
            meter: Meter::default(),
            flow: None,
            client_override: (1, None),
        }
    }

    /// Appends to the queue of `priority`, keeping levels sorted.
    pub(crate) fn push_back(&mut self, priority: i32, entry: Entry) {
        let pos = self.queues.iter().position(|(p, _)| *p <= priority);
        match pos {
            Some(i) if self.queues[i].0 == priority => self.queues[i].1.push_back(entry),
            Some(i) => self.queues.insert(i, (priority, VecDeque::from([entry]))),
            None => self.queues.push((priority, VecDeque::from([entry]))),
        }
    }
}

struct Slot {
    generation: u32,
    node: Option<Node>,
}

/// The whole scheduler state; guarded by one mutex in [`super::Shaper`].
pub(crate) struct Tree {
    slots: Vec<Slot>,
    free: Vec<u32>,
    pub(crate) link: NodeId,
    pub(crate) blocked: Vec<Entry>,
    pub(crate) config: ShapeConfig,
    pub(crate) classifier: Classifier,
    pub(crate) guard_rate: Option<Rate>,
    /// Flows whose `want` is non-zero.
    pub(crate) waiting: usize,
    pub(crate) last_fold: Instant,
}

impl Tree {
    /// An empty tree; `config` must be validated.
    pub(crate) fn new(config: ShapeConfig, now: Instant) -> Self {
        let classifier = Classifier::new(&config.classes, &config.default_class);
        let mut tree = Self {
            slots: Vec::new(),
            free: Vec::new(),
            link: NodeId {
                idx: 0,
                generation: 0,
            },
            blocked: Vec::new(),
            config,
            classifier,
            guard_rate: None,
            waiting: 0,
            last_fold: now,
        };
        tree.link = tree.alloc(Node::new(Level::Link, None, Arc::from("link")));
        tree.apply_link_rate(now);
        tree
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.node = Some(node);
            NodeId {
                idx,
                generation: slot.generation,
            }
        } else {
            let idx = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.slots.push(Slot {
                generation: 0,
                node: Some(node),
            });
            NodeId { idx, generation: 0 }
        }
    }

    fn release(&mut self, id: NodeId) -> Option<Node> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let node = slot.node.take();
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.idx);
        node
    }

    pub(crate) fn node(&self, id: NodeId) -> Option<&Node> {
        let slot = self.slots.get(id.idx as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.node.as_ref())
            .flatten()
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.node.as_mut())
            .flatten()
    }

    /// Every live node with its id.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node.is_some())
            .map(|(i, s)| NodeId {
                idx: i as u32,
                generation: s.generation,
            })
            .collect()
    }

    /// Live nodes (for leak checks).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The child of `parent` called `key`, created and configured if new.
    fn child(&mut self, parent: NodeId, level: Level, key: &Arc<str>, now: Instant) -> NodeId {
        if let Some(&id) = self.node(parent).and_then(|p| p.children.get(key)) {
            return id;
        }
        let id = self.alloc(Node::new(level, Some(parent), key.clone()));
        if let Some(p) = self.node_mut(parent) {
            p.children.insert(key.clone(), id);
        }
        if level != Level::Client {
            self.configure_node(id, now);
        }
        id
    }

    /// Adds a flow; returns its id and the cell its body reads.
    pub(crate) fn register(&mut self, spec: &FlowSpec, now: Instant) -> (NodeId, Arc<FlowCell>) {
        let site = self.child(self.link, Level::Site, &spec.site, now);
        let class = self.child(site, Level::Class, &spec.class, now);
        let client = self.child(class, Level::Client, spec.client.as_arc(), now);
        if let Some(c) = self.node_mut(client) {
            c.client_override = (spec.client_weight.max(1), spec.client_rate);
        }
        self.configure_node(client, now);
        let cell = Arc::new(FlowCell::default());
        let mut node = Node::new(Level::Flow, Some(client), spec.client.as_arc().clone());
        node.flow = Some(FlowState {
            want: 0,
            credit: 0,
            waker: None,
            cell: cell.clone(),
            folded: 0,
        });
        let id = self.alloc(node);
        let mut up = Some(id);
        while let Some(n) = up.and_then(|u| self.node_mut(u)) {
            n.flows += 1;
            up = n.parent;
        }
        cell.bypass.store(!self.path_capped(id), Ordering::Relaxed);
        (id, cell)
    }

    /// Removes a flow; frees its client when it was the client's last.
    pub(crate) fn deregister(&mut self, id: NodeId) {
        self.fold_flow(id);
        if self
            .node(id)
            .and_then(|n| n.flow.as_ref())
            .is_some_and(|f| f.want > 0)
        {
            self.waiting = self.waiting.saturating_sub(1);
        }
        self.deactivate(id);
        let mut up = self.node(id).and_then(|n| n.parent);
        let Some(client) = up else { return };
        self.release(id);
        while let Some(n) = up.and_then(|u| self.node_mut(u)) {
            n.flows = n.flows.saturating_sub(1);
            up = n.parent;
        }
        let Some(c) = self.node(client) else { return };
        if c.flows == 0 && c.level == Level::Client {
            let (key, parent) = (c.key.clone(), c.parent);
            if let Some(p) = parent.and_then(|p| self.node_mut(p)) {
                p.children.remove(&key);
            }
            self.release(client);
        }
    }

    /// Marks a node as waiting and queues it (and idle ancestors).
    pub(crate) fn activate(&mut self, mut id: NodeId) {
        loop {
            let Some(node) = self.node_mut(id) else {
                return;
            };
            if node.state != QState::Idle {
                return;
            }
            node.state = QState::Queued;
            node.epoch = node.epoch.wrapping_add(1);
            node.deficit = 0;
            let entry = Entry {
                id,
                epoch: node.epoch,
            };
            let priority = node.priority;
            let Some(parent) = node.parent else { return };
            let Some(p) = self.node_mut(parent) else {
                return;
            };
            p.push_back(priority, entry);
            p.pending += 1;
            id = parent;
        }
    }

    /// Marks a node as no longer waiting (and ancestors left without demand).
    /// Its queue entries go stale rather than being searched for.
    pub(crate) fn deactivate(&mut self, mut id: NodeId) {
        loop {
            let Some(node) = self.node_mut(id) else {
                return;
            };
            if node.state == QState::Idle {
                return;
            }
            node.state = QState::Idle;
            node.epoch = node.epoch.wrapping_add(1);
            let Some(parent) = node.parent else { return };
            let Some(p) = self.node_mut(parent) else {
                return;
            };
            p.pending = p.pending.saturating_sub(1);
            if p.pending > 0 {
                return;
            }
            id = parent;
        }
    }
}
