//! Bounded "top N by bytes" tables for clients and files.
//!
//! A herd is a hundred thousand distinct clients, and a scanner can ask for a
//! hundred thousand distinct paths: an unbounded map per client or per file
//! is a memory leak an attacker controls. [`TopK`] keeps at most twice its
//! capacity; when it fills up it keeps the heaviest `capacity` entries and
//! forgets the rest in one pass (amortized O(1) per insert). Heavy hitters,
//! the ones an operator needs to see, survive every pruning; an entry that
//! was forgotten and comes back starts again from zero, so the table's
//! counts are lower bounds, and [`TopK::forgotten_max`] says by how much at
//! most a forgotten entry could have been undercounted.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Totals of one entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes sent.
    pub bytes: u64,
    /// Requests (the observer counts one when its response starts).
    pub requests: u64,
}

/// A bounded table of the heaviest keys by bytes.
#[derive(Debug)]
pub struct TopK<K> {
    capacity: usize,
    entries: HashMap<K, Usage>,
    forgotten_max: u64,
}

impl<K: Eq + Hash + Clone> TopK<K> {
    /// A table that reliably keeps the `capacity` heaviest keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            entries: HashMap::with_capacity(capacity * 2),
            forgotten_max: 0,
        }
    }

    /// Adds `bytes` and `requests` to `key` (borrowed: a key already in
    /// the table costs no allocation).
    pub fn add<Q>(&mut self, key: &Q, bytes: u64, requests: u64)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        if let Some(usage) = self.entries.get_mut(key) {
            usage.bytes += bytes;
            usage.requests += requests;
            return;
        }
        if self.entries.len() >= self.capacity * 2 {
            self.prune();
        }
        self.entries
            .insert(key.to_owned().into(), Usage { bytes, requests });
    }

    /// The `n` heaviest keys, heaviest first (ties in no particular order).
    pub fn top(&self, n: usize) -> Vec<(K, Usage)> {
        let mut all: Vec<(K, Usage)> = self.entries.iter().map(|(k, u)| (k.clone(), *u)).collect();
        all.sort_unstable_by(|a, b| {
            b.1.bytes
                .cmp(&a.1.bytes)
                .then(b.1.requests.cmp(&a.1.requests))
        });
        all.truncate(n);
        all
    }

    /// Entries held now (at most twice the capacity).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most bytes any forgotten entry had: the counts shown may be low
    /// by at most this much.
    pub fn forgotten_max(&self) -> u64 {
        self.forgotten_max
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.forgotten_max = 0;
    }

    fn prune(&mut self) {
        let mut weights: Vec<u64> = self.entries.values().map(|u| u.bytes).collect();
        let cut = weights.len() - self.capacity;
        // The capacity-th heaviest weight: keep strictly heavier entries, then
        // fill up to capacity with entries of exactly this weight.
        let (_, &mut threshold, _) = weights.select_nth_unstable(cut);
        let mut at_threshold = self.capacity
            - self
                .entries
                .values()
                .filter(|u| u.bytes > threshold)
                .count();
        let mut forgotten = self.forgotten_max;
        self.entries.retain(|_, u| {
            let keep = u.bytes > threshold
                || (u.bytes == threshold && at_threshold > 0 && {
                    at_threshold -= 1;
                    true
                });
            if !keep {
                forgotten = forgotten.max(u.bytes);
            }
            keep
        });
        self.forgotten_max = forgotten;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_heavy_hitters_under_a_herd_of_distinct_keys() {
        let mut top: TopK<u64> = TopK::new(10);
        for round in 0..100u64 {
            // Three heavy clients in every round...
            for heavy in 0..3u64 {
                top.add(&heavy, 1_000_000, 1);
            }
            // ...drowned in a thousand one-off clients per round.
            for one_off in 0..1000u64 {
                top.add(&(1_000 + round * 1000 + one_off), 512, 1);
            }
            assert!(top.len() <= 20, "bounded: {}", top.len());
        }
        let best = top.top(3);
        let keys: Vec<u64> = best.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            {
                let mut k = keys.clone();
                k.sort();
                k
            },
            vec![0, 1, 2]
        );
        assert!(
            best.iter()
                .all(|(_, u)| u.bytes == 100_000_000 && u.requests == 100)
        );
        assert_eq!(top.forgotten_max(), 512);
    }

    #[test]
    fn ties_at_the_cut_keep_exactly_the_capacity() {
        let mut top: TopK<u32> = TopK::new(3);
        for k in 0..6u32 {
            top.add(&k, 7, 1);
        }
        top.add(&99, 1, 1);
        assert_eq!(top.len(), 4);
        assert_eq!(top.top(1)[0].1.bytes, 7);
        top.clear();
        assert!(top.is_empty());
    }
}
