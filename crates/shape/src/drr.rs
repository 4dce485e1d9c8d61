//! Hierarchical deficit round robin: how one tick's budget is handed out.
//!
//! Every internal node serves its active children highest priority first;
//! within a priority, round robin where a child may take `quantum × weight`
//! bytes per round (its deficit), carried over when the tick's budget runs
//! out mid-round. Only children with demand are in a queue, so an idle one's
//! share goes to the others at once (work conservation). A node whose cap is
//! spent this tick is parked on the blocked list and requeued at the next
//! tick, so capped children are never polled in a loop. A grant is charged
//! to every bucket on the path, and no grant exceeds what the tightest
//! bucket holds (or [`MIN_GRANT`], to keep low caps from trickling in tiny
//! writes), so a bucket's debt is at most one small grant.

use std::mem;
use std::task::Waker;

use tokio::time::Instant;

use super::tree::{Entry, Level, NodeId, QState, Tree};

/// Smallest grant made while a bucket has any tokens at all.
pub(crate) const MIN_GRANT: u64 = 4 * 1024;

impl Tree {
    /// Runs one pacing round at `now`; returns the wakers of flows granted
    /// bytes, to be woken after the lock is released.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Waker> {
        self.unblock();
        let mut woken = Vec::new();
        let link = self.link;
        if self.node(link).is_some_and(|n| n.pending > 0) {
            self.serve(link, u64::MAX, now, &mut woken);
        }
        woken
    }

    /// Puts nodes blocked last tick back at the tail of their parents' queues.
    fn unblock(&mut self) {
        for entry in mem::take(&mut self.blocked) {
            let Some(node) = self.node_mut(entry.id) else {
                continue;
            };
            if node.epoch != entry.epoch || node.state != QState::Blocked {
                continue;
            }
            node.state = QState::Queued;
            node.epoch = node.epoch.wrapping_add(1);
            let requeued = Entry {
                id: entry.id,
                epoch: node.epoch,
            };
            let (priority, parent) = (node.priority, node.parent);
            if let Some(p) = parent.and_then(|p| self.node_mut(p)) {
                p.push_back(priority, requeued);
            }
        }
    }

    fn block(&mut self, id: NodeId) {
        let Some(node) = self.node_mut(id) else {
            return;
        };
        node.state = QState::Blocked;
        node.epoch = node.epoch.wrapping_add(1);
        let entry = Entry {
            id,
            epoch: node.epoch,
        };
        self.blocked.push(entry);
    }

    /// Whether serving the node now could grant anything.
    fn schedulable(&mut self, id: NodeId, now: Instant) -> bool {
        let Some(node) = self.node_mut(id) else {
            return false;
        };
        if node.state != QState::Queued {
            return false;
        }
        if let Some(flow) = &node.flow {
            return flow.want > 0;
        }
        if let Some(b) = node.bucket.as_mut() {
            b.refill(now);
            if !b.has_tokens() {
                return false;
            }
        }
        node.queues.iter().any(|(_, q)| !q.is_empty())
    }

    /// Grants up to `limit` bytes within the subtree of `id`; returns how
    /// many were granted.
    pub(crate) fn serve(
        &mut self,
        id: NodeId,
        limit: u64,
        now: Instant,
        woken: &mut Vec<Waker>,
    ) -> u64 {
        let quantum = self.config.quantum;
        let Some(node) = self.node_mut(id) else {
            return 0;
        };
        if let Some(flow) = node.flow.as_mut() {
            let granted = limit.min(flow.want);
            flow.want -= granted;
            flow.credit += granted;
            if granted > 0 {
                woken.extend(flow.waker.take());
            }
            if granted > 0 && flow.want == 0 {
                self.waiting = self.waiting.saturating_sub(1);
                self.deactivate(id);
            }
            return granted;
        }
        let mut limit = limit;
        if let Some(b) = node.bucket.as_mut() {
            b.refill(now);
            if !b.has_tokens() {
                return 0;
            }
            limit = limit.min(u64::try_from(b.available()).unwrap_or(0).max(MIN_GRANT));
        }
        let mut served = 0u64;
        let mut level = 0;
        while served < limit {
            let Some(node) = self.node_mut(id) else { break };
            let Some((_, queue)) = node.queues.get_mut(level) else {
                break;
            };
            let Some(entry) = queue.front().copied() else {
                level += 1;
                continue;
            };
            let deficit = match self.node_mut(entry.id) {
                Some(child) if child.epoch == entry.epoch && child.state == QState::Queued => {
                    if child.deficit <= 0 {
                        child.deficit += (quantum * u64::from(child.weight)) as i64;
                    }
                    child.deficit
                }
                _ => {
                    self.pop_front(id, level);
                    continue;
                }
            };
            let granted = self.serve(
                entry.id,
                (limit - served).min(deficit.max(0) as u64),
                now,
                woken,
            );
            served += granted;
            let Some(child) = self.node_mut(entry.id) else {
                self.pop_front(id, level);
                continue;
            };
            child.deficit -= granted as i64;
            let (state, deficit) = (child.state, child.deficit);
            if state == QState::Idle {
                self.pop_front(id, level);
            } else if granted == 0 || !self.schedulable(entry.id, now) {
                self.pop_front(id, level);
                self.block(entry.id);
            } else if deficit <= 0 {
                self.pop_front(id, level);
                if let Some(q) = self.node_mut(id).and_then(|n| n.queues.get_mut(level)) {
                    q.1.push_back(entry);
                }
            }
        }
        if let Some(node) = self.node_mut(id) {
            node.queues.retain(|(_, q)| !q.is_empty());
            if served > 0
                && let Some(b) = node.bucket.as_mut()
            {
                b.take(served);
            }
        }
        served
    }

    fn pop_front(&mut self, id: NodeId, level: usize) {
        if let Some(q) = self.node_mut(id).and_then(|n| n.queues.get_mut(level)) {
            q.1.pop_front();
        }
    }

    /// The body's side: takes up to `chunk` bytes of granted credit for a
    /// chunk of that size and records what it still waits for. `waker` is
    /// woken on the next grant. Unknown flows are never held back.
    pub(crate) fn take_credit(
        &mut self,
        id: NodeId,
        chunk: u64,
        waker: Option<&Waker>,
        now: Instant,
    ) -> u64 {
        let Some(flow) = self.node(id).and_then(|n| n.flow.as_ref()) else {
            return chunk;
        };
        if flow.credit == 0 && flow.want == 0 && chunk > 0 {
            let express = self.express_grant(id, chunk, now);
            if let Some(flow) = self.node_mut(id).and_then(|n| n.flow.as_mut()) {
                flow.credit += express;
            }
        }
        let Some(flow) = self.node_mut(id).and_then(|n| n.flow.as_mut()) else {
            return chunk;
        };
        let taken = flow.credit.min(chunk);
        flow.credit -= taken;
        let want = (chunk - taken).saturating_sub(flow.credit);
        let was = flow.want;
        flow.want = want;
        if want > 0
            && let Some(w) = waker
            && !flow.waker.as_ref().is_some_and(|old| old.will_wake(w))
        {
            flow.waker = Some(w.clone());
        }
        match (was > 0, want > 0) {
            (false, true) => {
                self.waiting += 1;
                self.activate(id);
            }
            (true, false) => {
                self.waiting = self.waiting.saturating_sub(1);
                self.deactivate(id);
            }
            _ => {}
        }
        taken
    }

    /// Bytes a flow of the top-priority class may send at once, without
    /// waiting for the next tick: at the next tick it would be served first
    /// anyway, so waiting only adds up to a tick of latency to every header
    /// check, `304` and cdiff. While bulk transfers keep a cap spent, that
    /// wait is every time, so a response that fits may also borrow up to one
    /// burst from each cap on the path ([`Bucket::express_room`]); the debt
    /// is charged like any grant and repaid before the cap serves anything
    /// else, so caps hold. A larger one gets what the caps hold, as the
    /// tick would give it (borrowing for it would only delay its own rest).
    /// `0` for other flows or when nothing is left.
    ///
    /// [`Bucket::express_room`]: super::bucket::Bucket::express_room
    fn express_grant(&mut self, id: NodeId, want: u64, now: Instant) -> u64 {
        // Bulk flows ask for every chunk: they leave before touching a cap.
        if !self.in_top_class(id) {
            return 0;
        }
        // Whole, borrowing if need be, when the response fits every cap's
        // room; otherwise what the caps hold, as a tick would grant it.
        let mut fits = true;
        let mut held = want;
        let mut up = self.node(id).and_then(|n| n.parent);
        while let Some(node) = up.and_then(|u| self.node_mut(u)) {
            if let Some(b) = node.bucket.as_mut() {
                b.refill(now);
                fits &= u64::try_from(b.express_room()).is_ok_and(|room| want <= room);
                held = if b.has_tokens() {
                    held.min(u64::try_from(b.available()).unwrap_or(0).max(MIN_GRANT))
                } else {
                    0
                };
            }
            up = node.parent;
        }
        let limit = if fits { want } else { held };
        if limit == 0 {
            return 0;
        }
        let mut up = self.node(id).and_then(|n| n.parent);
        while let Some(node) = up.and_then(|u| self.node_mut(u)) {
            if let Some(b) = node.bucket.as_mut() {
                b.take(limit);
            }
            up = node.parent;
        }
        limit
    }

    /// Whether the flow's class is the top-priority one.
    fn in_top_class(&self, id: NodeId) -> bool {
        let Some(top) = self.classifier.top_priority() else {
            return false;
        };
        let mut up = self.node(id).and_then(|n| n.parent);
        while let Some(node) = up.and_then(|u| self.node(u)) {
            if node.level == Level::Class {
                return node.priority == top;
            }
            up = node.parent;
        }
        false
    }
}
