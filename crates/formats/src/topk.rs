//! Bounded heavy-hitter tables ("top clients", "top files", ...), the one
//! top-K of the project: the status page's tables and `analyze`'s reports
//! both use it. A herd is a hundred thousand distinct clients, a scanner
//! asks for a hundred thousand distinct paths, and a log of a billion lines
//! may name millions of addresses: an unbounded map per key is a memory leak
//! an attacker controls, so each table keeps at most `2 × capacity` keys.
//!
//! Method (a batched variant of Metwally et al.'s space-saving algorithm):
//! keys are counted exactly while they are in the table. When it reaches
//! `2 × capacity` keys it is pruned to the `capacity` keys with the largest
//! upper bound, and the largest bound evicted so far becomes the `floor`. A
//! key that enters later starts at zero with `error = floor`: its true value
//! lies in `[value, value + error]`. A key whose true weight exceeds the
//! floor is never lost, and the floor is at most `total / capacity`, so every
//! key carrying more than a `1 / capacity` share of the traffic is listed,
//! and a row with `error == 0` is exact.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// What a table ranks by (and therefore keeps when it must forget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// Body bytes sent.
    Bytes,
    /// Number of requests.
    Requests,
}

/// Counts for one key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    /// Requests counted while the key was in the table.
    pub requests: u64,
    /// Bytes counted while the key was in the table.
    pub bytes: u64,
    /// How much of the ranked quantity may have been missed (0 = exact).
    pub error: u64,
}

/// A bounded top-K table.
#[derive(Debug, Clone)]
pub struct TopK<K> {
    capacity: usize,
    rank: Rank,
    map: HashMap<K, Counter>,
    floor: u64,
    evicted: u64,
}

impl<K: Hash + Eq + Clone> TopK<K> {
    /// A table that reports up to `capacity` keys and holds at most twice that.
    pub fn new(capacity: usize, rank: Rank) -> Self {
        Self {
            capacity: capacity.max(1),
            rank,
            map: HashMap::new(),
            floor: 0,
            evicted: 0,
        }
    }

    /// Counts one request of `bytes` for `key` (allocating only for a new key).
    pub fn add<Q>(&mut self, key: &Q, bytes: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        self.add_n(key, 1, bytes);
    }

    /// Counts `requests` requests totalling `bytes` for `key`.
    pub fn add_n<Q>(&mut self, key: &Q, requests: u64, bytes: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<K>,
    {
        if let Some(c) = self.map.get_mut(key) {
            c.requests += requests;
            c.bytes = c.bytes.saturating_add(bytes);
            return;
        }
        if self.map.len() + 1 >= 2 * self.capacity {
            self.prune();
        }
        self.map.insert(
            key.to_owned().into(),
            Counter {
                requests,
                bytes,
                error: self.floor,
            },
        );
    }

    fn value(&self, c: &Counter) -> u64 {
        match self.rank {
            Rank::Bytes => c.bytes,
            Rank::Requests => c.requests,
        }
    }

    fn prune(&mut self) {
        let mut bounds: Vec<u64> = self
            .map
            .values()
            .map(|c| self.value(c).saturating_add(c.error))
            .collect();
        bounds.sort_unstable_by(|a, b| b.cmp(a));
        let cut = bounds[self.capacity.min(bounds.len() - 1)];
        // Keep strictly above the cut, then fill up to capacity with ties.
        let mut ties = self.capacity - bounds.iter().take_while(|&&b| b > cut).count();
        let (rank, before) = (self.rank, self.map.len());
        let mut evicted_max = 0;
        self.map.retain(|_, c| {
            let v = match rank {
                Rank::Bytes => c.bytes,
                Rank::Requests => c.requests,
            }
            .saturating_add(c.error);
            if v > cut {
                return true;
            }
            if v == cut && ties > 0 {
                ties -= 1;
                return true;
            }
            evicted_max = evicted_max.max(v);
            false
        });
        self.floor = self.floor.max(evicted_max);
        self.evicted += (before - self.map.len()) as u64;
    }

    /// The `n` largest keys by the ranked quantity, largest first.
    pub fn top(&self, n: usize) -> Vec<(K, Counter)> {
        let mut all: Vec<(K, Counter)> = self.map.iter().map(|(k, c)| (k.clone(), *c)).collect();
        all.sort_unstable_by_key(|(_, c)| std::cmp::Reverse(self.value(c)));
        all.truncate(n);
        all
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has been counted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most keys the table will ever hold.
    pub fn max_len(&self) -> usize {
        2 * self.capacity
    }

    /// How many keys were forgotten (0 means every count is exact).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The largest error a count may carry.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Forgets every key and every error.
    pub fn clear(&mut self) {
        self.map.clear();
        self.floor = 0;
        self.evicted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small() {
        let mut t: TopK<String> = TopK::new(4, Rank::Bytes);
        t.add("a", 10);
        t.add("b", 30);
        t.add("a", 10);
        let top = t.top(10);
        assert_eq!(top[0].0, "b");
        assert_eq!(
            top[1].1,
            Counter {
                requests: 2,
                bytes: 20,
                error: 0
            }
        );
        assert_eq!(t.evicted(), 0);
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_singletons() {
        let mut t: TopK<u64> = TopK::new(32, Rank::Requests);
        for i in 0..100_000u64 {
            t.add(&(1_000_000 + i), 1);
            if i % 10 == 0 {
                t.add(&7, 1);
            }
            if i % 25 == 0 {
                t.add(&9, 1);
            }
            assert!(t.len() <= t.max_len());
        }
        let top = t.top(2);
        assert_eq!((top[0].0, top[1].0), (7, 9));
        assert!(top[0].1.requests + top[0].1.error >= 10_000);
        assert!(t.floor() <= 114_000 / 32 + 1);
    }

    #[test]
    fn keeps_heavy_hitters_under_a_herd_of_distinct_keys() {
        let mut top: TopK<u64> = TopK::new(10, Rank::Bytes);
        for round in 0..100u64 {
            // Three heavy clients in every round...
            for heavy in 0..3u64 {
                top.add_n(&heavy, 1, 1_000_000);
            }
            // ...drowned in a thousand one-off clients per round.
            for one_off in 0..1000u64 {
                top.add_n(&(1_000 + round * 1000 + one_off), 1, 512);
            }
            assert!(top.len() <= top.max_len(), "bounded: {}", top.len());
        }
        let best = top.top(3);
        let mut keys: Vec<u64> = best.iter().map(|(k, _)| *k).collect();
        keys.sort();
        assert_eq!(keys, vec![0, 1, 2]);
        // Never evicted, so counted exactly.
        assert!(
            best.iter()
                .all(|(_, c)| c.bytes == 100_000_000 && c.requests == 100 && c.error == 0)
        );
        // No count is off by more than the total over the capacity.
        let total = 100 * (3 * 1_000_000 + 1000 * 512);
        assert!(top.floor() <= total / 10, "{}", top.floor());
    }

    #[test]
    fn ties_at_the_cut_keep_exactly_the_capacity() {
        let mut top: TopK<u32> = TopK::new(3, Rank::Bytes);
        for k in 0..6u32 {
            top.add(&k, 7);
        }
        // The sixth key pruned the table to three, then joined them.
        assert_eq!(top.len(), 4);
        assert_eq!(top.top(1)[0].1.bytes, 7);
        top.clear();
        assert!(top.is_empty());
        assert_eq!((top.floor(), top.evicted()), (0, 0));
    }
}
