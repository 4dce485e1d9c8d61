//! The cdiffs clients asked for and did not find, as the server saw them.
//!
//! A client asking for `daily-N.cdiff` above the published version has
//! learned a newer version from DNS. When upstream itself lacks that cdiff,
//! waiting for it helps nobody: every such client falls back to a whole
//! `daily.cvd` download right away, and should at least get the new one.
//! The sync engine asks [`Demand`] whether that is happening before it
//! waits out `missing_cdiff_grace`.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most names remembered (they come from clients: bounded).
const MAX_NAMES: usize = 256;

/// File name → Unix time a client last asked for it.
#[derive(Debug, Default)]
pub struct Demand {
    asked: Mutex<HashMap<String, u64>>,
}

impl Demand {
    /// A client asked for `name` at `at` and got `404`.
    pub fn note(&self, name: &str, at: u64) {
        let Ok(mut asked) = self.asked.lock() else {
            return;
        };
        if asked.len() >= MAX_NAMES && !asked.contains_key(name) {
            // Forget the stalest name: clients choose names, memory is ours.
            if let Some(oldest) = asked
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone())
            {
                asked.remove(&oldest);
            }
        }
        asked.insert(name.to_owned(), at);
    }

    /// Whether a client asked for `name` at or after `since`.
    pub fn asked_since(&self, name: &str, since: u64) -> bool {
        self.asked
            .lock()
            .is_ok_and(|asked| asked.get(name).is_some_and(|&t| t >= since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_asks_within_a_bound() {
        let demand = Demand::default();
        assert!(!demand.asked_since("daily-2.cdiff", 0));
        demand.note("daily-2.cdiff", 100);
        assert!(demand.asked_since("daily-2.cdiff", 100));
        assert!(!demand.asked_since("daily-2.cdiff", 101));
        for i in 0..MAX_NAMES as u64 * 2 {
            demand.note(&format!("junk-{i}.cdiff"), 200 + i);
        }
        assert!(demand.asked.lock().unwrap().len() <= MAX_NAMES);
        assert!(
            !demand.asked_since("daily-2.cdiff", 0),
            "the stalest goes first"
        );
    }
}
