//! Approximate counting of distinct clients in bounded memory (HyperLogLog).
//!
//! "412 clients refused in the last five minutes" is the sentence an
//! operator needs during a herd, and the herd is exactly when an exact set
//! of client keys would grow to a hundred thousand entries. A HyperLogLog
//! sketch of 1024 one-byte registers counts any number of distinct keys with
//! about 3 % error (and exactly enough for small numbers, where it falls back
//! to linear counting); [`Windowed`] keeps one sketch per minute so the last
//! few minutes can be merged on demand.

use std::hash::{BuildHasher, Hash};

const BITS: u32 = 10;
const REGISTERS: usize = 1 << BITS;
/// The hash seed: any fixed value.
const SEED: u64 = 0x6376_646d_6972_726f;

/// A HyperLogLog sketch.
#[derive(Clone)]
pub struct Distinct {
    registers: Box<[u8; REGISTERS]>,
}

impl Default for Distinct {
    fn default() -> Self {
        Self {
            registers: Box::new([0; REGISTERS]),
        }
    }
}

impl std::fmt::Debug for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distinct(~{})", self.estimate())
    }
}

impl Distinct {
    /// Counts `item`.
    pub fn insert(&mut self, item: &impl Hash) {
        // A fixed seed: the estimate must not depend on the process.
        // foldhash's quality variant mixes every bit into the top ones the
        // register index and rank are taken from.
        let hash = foldhash::quality::FixedState::with_seed(SEED).hash_one(item);
        let index = (hash >> (64 - BITS)) as usize;
        let rest = (hash << BITS) | (1 << (BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(register) = self.registers.get_mut(index) {
            *register = (*register).max(rank);
        }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Distinct) {
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// Estimated number of distinct items counted.
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// One sketch per time slot, the last `slots` kept.
#[derive(Debug)]
pub struct Windowed {
    slots: Vec<(u64, Distinct)>,
    keep: usize,
}

impl Windowed {
    /// Keeps the last `keep` slots.
    pub fn new(keep: usize) -> Self {
        Self {
            slots: Vec::new(),
            keep: keep.max(1),
        }
    }

    /// Counts `item` in slot `slot` (e.g. the minute number).
    pub fn insert(&mut self, slot: u64, item: &impl Hash) {
        if self.slots.last().is_none_or(|(s, _)| *s != slot) {
            self.slots.push((slot, Distinct::default()));
            let excess = self.slots.len().saturating_sub(self.keep);
            self.slots.drain(..excess);
        }
        if let Some((_, sketch)) = self.slots.last_mut() {
            sketch.insert(item);
        }
    }

    /// Distinct items in the slots from `since` on.
    pub fn estimate_since(&self, since: u64) -> u64 {
        let mut merged = Distinct::default();
        for (_, sketch) in self.slots.iter().filter(|(s, _)| *s >= since) {
            merged.merge(sketch);
        }
        merged.estimate()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_exact_and_large_ones_close() {
        let mut d = Distinct::default();
        assert_eq!(d.estimate(), 0);
        for i in 0..5u32 {
            d.insert(&i);
            d.insert(&i);
        }
        assert_eq!(d.estimate(), 5);
        let mut big = Distinct::default();
        for i in 0..100_000u32 {
            big.insert(&i);
        }
        let e = big.estimate() as f64;
        assert!((e - 100_000.0).abs() / 100_000.0 < 0.1, "{e}");
    }

    #[test]
    fn windows_merge_and_expire() {
        let mut w = Windowed::new(5);
        w.insert(1, &"a");
        w.insert(2, &"a");
        w.insert(2, &"b");
        assert_eq!(w.estimate_since(0), 2);
        assert_eq!(w.estimate_since(2), 2);
        w.insert(9, &"c");
        assert_eq!(w.estimate_since(5), 1);
        for slot in 10..20 {
            w.insert(slot, &"d");
        }
        assert_eq!(w.slots.len(), 5);
    }
}
