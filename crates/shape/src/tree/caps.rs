//! The caps on the tree's nodes and how configuration reaches them: the
//! link's cap (configured, lowered by the link guard), each site's, class's
//! and client's rate, weight and priority, a live reconfiguration that keeps
//! every flow, and which flows may bypass the scheduler because no cap
//! applies to them.

use std::sync::atomic::Ordering;
use std::task::Waker;

use tokio::time::Instant;

use super::{Level, NodeId, QState, Tree};
use crate::bucket::Bucket;
use crate::class::Classifier;
use crate::config::ShapeConfig;
use crate::rate::Rate;

impl Tree {
    /// The cap in force on the link: the configured one, lowered by the guard.
    pub(crate) fn link_rate(&self) -> Option<Rate> {
        Rate::min_cap(self.config.link_rate, self.guard_rate)
    }

    pub(super) fn set_cap(&mut self, id: NodeId, rate: Option<Rate>, now: Instant) {
        let (burst, quantum) = (self.config.burst, self.config.quantum);
        if let Some(node) = self.node_mut(id) {
            match (node.bucket.as_mut(), rate) {
                (Some(b), Some(r)) => b.set_rate(r, burst, quantum, now),
                (None, Some(r)) => node.bucket = Some(Bucket::new(r, burst, quantum, now)),
                (_, None) => node.bucket = None,
            }
        }
    }

    pub(crate) fn apply_link_rate(&mut self, now: Instant) {
        self.set_cap(self.link, self.link_rate(), now);
    }

    /// Applies the configuration to an existing site, class or client node.
    pub(super) fn configure_node(&mut self, id: NodeId, now: Instant) {
        let Some(node) = self.node(id) else { return };
        let (weight, priority, rate) = match node.level {
            Level::Site => {
                let site = self.config.site(&node.key);
                (site.weight, 0, site.rate)
            }
            Level::Class => match self.classifier.get(&node.key) {
                Some(c) => (c.weight, c.priority, c.rate),
                None => (1, 0, None),
            },
            Level::Client => {
                let class_cap = node
                    .parent
                    .and_then(|p| self.node(p))
                    .and_then(|class| self.classifier.get(&class.key))
                    .and_then(|c| c.client_rate);
                let (weight, cap) = node.client_override;
                (weight.max(1), 0, cap.or(class_cap))
            }
            Level::Link | Level::Flow => return,
        };
        if let Some(node) = self.node_mut(id) {
            node.weight = weight;
            node.priority = priority;
        }
        self.set_cap(id, rate, now);
    }

    /// Sets the cap of a flow's client (as if the flow had registered with
    /// it; `None` falls back to the class's `client_rate`) and whether the
    /// flow bypasses the scheduler under it. Returns the flow's waker if the
    /// flow no longer needs a grant it was waiting for.
    pub(crate) fn set_client_rate(
        &mut self,
        flow: NodeId,
        rate: Option<Rate>,
        now: Instant,
    ) -> Option<Waker> {
        let client = self.node(flow)?.parent?;
        self.node_mut(client)?.client_override.1 = rate;
        self.configure_node(client, now);
        let bypass = !self.path_capped(flow);
        let state = self.node_mut(flow)?.flow.as_mut()?;
        state.cell.bypass.store(bypass, Ordering::Relaxed);
        if !bypass || state.want == 0 {
            return None;
        }
        state.want = 0;
        let waker = state.waker.take();
        self.waiting = self.waiting.saturating_sub(1);
        self.deactivate(flow);
        waker
    }

    /// Whether any cap applies to a flow.
    pub(crate) fn path_capped(&self, id: NodeId) -> bool {
        let mut up = Some(id);
        while let Some(n) = up.and_then(|u| self.node(u)) {
            if n.bucket.is_some() {
                return true;
            }
            up = n.parent;
        }
        false
    }

    /// Applies a new configuration to every node without dropping flows;
    /// returns the wakers of flows that no longer need the scheduler.
    pub(crate) fn reconfigure(&mut self, config: ShapeConfig, now: Instant) -> Vec<Waker> {
        self.classifier = Classifier::new(&config.classes, &config.default_class);
        self.config = config;
        self.apply_link_rate(now);
        let ids = self.ids();
        for &id in &ids {
            self.configure_node(id, now);
        }
        // Priorities may have moved: rebuild every queue from the flows' demand.
        self.blocked.clear();
        for &id in &ids {
            if let Some(n) = self.node_mut(id) {
                n.queues.clear();
                n.pending = 0;
                n.state = QState::Idle;
                n.epoch = n.epoch.wrapping_add(1);
            }
        }
        for &id in &ids {
            if self
                .node(id)
                .and_then(|n| n.flow.as_ref())
                .is_some_and(|f| f.want > 0)
            {
                self.activate(id);
            }
        }
        self.refresh_bypass()
    }

    /// Recomputes which flows bypass the scheduler; wakes the ones released.
    pub(crate) fn refresh_bypass(&mut self) -> Vec<Waker> {
        let mut woken = Vec::new();
        for id in self.ids() {
            if self.node(id).is_none_or(|n| n.flow.is_none()) {
                continue;
            }
            let bypass = !self.path_capped(id);
            let Some(flow) = self.node_mut(id).and_then(|n| n.flow.as_mut()) else {
                continue;
            };
            flow.cell.bypass.store(bypass, Ordering::Relaxed);
            if bypass && flow.want > 0 {
                flow.want = 0;
                woken.extend(flow.waker.take());
                self.waiting = self.waiting.saturating_sub(1);
                self.deactivate(id);
            }
        }
        woken
    }
}
