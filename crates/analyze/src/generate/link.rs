//! A shared link in the generator: every large transfer in flight gets an
//! equal share of the capacity (processor sharing, what TCP flows on one
//! bottleneck roughly converge to), so a 60 MB download takes seconds on an
//! idle 100 Mbit/s link and tens of minutes under a herd — the durations
//! that make a log's time stamps matter.
//!
//! Method: "virtual time" `v` is the service each active flow has received
//! since the start; it grows at `capacity / n` while `n` flows are active. A
//! flow of `size` bytes joining at `v0` finishes when `v` reaches
//! `v0 + size`, so a min-heap of finish values gives the next completion in
//! O(log n) however often flows come and go. The link also books what it
//! delivered per minute: the ground truth a report's rates are checked
//! against.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// A flow in the heap, ordered by finish value (smallest first).
#[derive(Debug, Clone, Copy)]
struct Flow {
    finish: f64,
    id: usize,
}

impl PartialEq for Flow {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Flow {}
impl PartialOrd for Flow {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flow {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        o.finish.total_cmp(&self.finish).then(o.id.cmp(&self.id))
    }
}

/// The link.
#[derive(Debug, Clone)]
pub struct Link {
    capacity: f64,
    now: f64,
    v: f64,
    flows: BinaryHeap<Flow>,
    minutes: BTreeMap<i64, f64>,
}

impl Link {
    /// A link of `bytes_per_sec`, idle, at time `now` (UTC seconds).
    pub fn new(bytes_per_sec: f64, now: f64) -> Self {
        Self {
            capacity: bytes_per_sec.max(1.0),
            now,
            v: 0.0,
            flows: BinaryHeap::new(),
            minutes: BTreeMap::new(),
        }
    }

    /// Flows in flight.
    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// When the next flow completes, if any is in flight.
    pub fn next_completion(&self) -> Option<f64> {
        let f = self.flows.peek()?;
        let n = self.flows.len() as f64;
        Some(self.now + (f.finish - self.v).max(0.0) * n / self.capacity)
    }

    /// Moves the clock to `t`, delivering bytes to the flows in flight.
    /// `t` must not pass [`Link::next_completion`].
    pub fn advance(&mut self, t: f64) {
        if t <= self.now {
            return;
        }
        let n = self.flows.len();
        if n > 0 {
            self.v += (t - self.now) * self.capacity / n as f64;
            self.book(self.now, t, self.capacity);
        }
        self.now = t;
    }

    /// Starts flow `id` of `bytes` now.
    pub fn start(&mut self, id: usize, bytes: u64) {
        self.flows.push(Flow {
            finish: self.v + bytes as f64,
            id,
        });
    }

    /// Advances to the next completion and returns (flow id, time).
    pub fn complete_next(&mut self) -> Option<(usize, f64)> {
        let t = self.next_completion()?;
        self.advance(t);
        let f = self.flows.pop()?;
        Some((f.id, t))
    }

    /// Books `bytes` delivered outside the shared flows (small responses)
    /// at `t`.
    pub fn book_at(&mut self, t: f64, bytes: u64) {
        *self
            .minutes
            .entry((t as i64).div_euclid(60) * 60)
            .or_default() += bytes as f64;
    }

    /// Bytes delivered at `rate` between `from` and `to`, split by minute.
    fn book(&mut self, from: f64, to: f64, rate: f64) {
        let mut t = from;
        while t < to {
            let minute = (t as i64).div_euclid(60) * 60;
            let edge = ((minute + 60) as f64).min(to);
            *self.minutes.entry(minute).or_default() += (edge - t) * rate;
            t = edge;
        }
    }

    /// Bytes delivered per minute (minute start in UTC seconds), rounded.
    pub fn minutes(&self) -> Vec<(i64, u64)> {
        self.minutes
            .iter()
            .map(|(&m, &b)| (m, b.round() as u64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_shares() {
        // 100 bytes/s; a 1000-byte flow alone takes 10 s; two at once 20 s.
        let mut l = Link::new(100.0, 0.0);
        l.start(1, 1000);
        l.start(2, 1000);
        assert_eq!(l.complete_next().map(|(_, t)| t.round()), Some(20.0));
        assert_eq!(l.complete_next().map(|(_, t)| t.round()), Some(20.0));
        l.advance(60.0);
        l.start(3, 1000);
        l.advance(65.0);
        l.start(4, 100);
        // Flow 4 gets half from 65 s: done at 67 s; flow 3 then alone.
        assert_eq!(
            l.complete_next().map(|(id, t)| (id, t.round())),
            Some((4, 67.0))
        );
        assert_eq!(
            l.complete_next().map(|(id, t)| (id, t.round())),
            Some((3, 71.0))
        );
        let total: u64 = l.minutes().iter().map(|m| m.1).sum();
        assert_eq!(total, 3100);
        assert!(l.minutes().iter().all(|&(_, b)| b <= 6000));
    }
}
