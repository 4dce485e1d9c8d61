//! What observation knows about the sync engine: the status it publishes,
//! and a tally of pass outcomes derived from it.
//!
//! The engine publishes its state in a `watch` channel; it does not count
//! passes. A follower task notes every new `last_pass` so the metrics can
//! say how many passes succeeded and failed, how many failed in a row (the
//! "sync failing" alert), and when the last success was.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::sync::SyncStatus;
use crate::sync::schedule::Trigger;

/// Outcomes of the passes seen since start.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PassTally {
    /// Passes that left the mirror complete and current.
    pub ok: u64,
    /// Passes that did not.
    pub failed: u64,
    /// Failed passes since the last success.
    pub consecutive_failures: u32,
    /// Unix time the last successful pass finished.
    pub last_success: Option<u64>,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// The sync engine as observation sees it.
#[derive(Debug)]
pub struct SyncView {
    /// Its status.
    pub status: watch::Receiver<SyncStatus>,
    /// Where heal requests are counted.
    pub trigger: Arc<Trigger>,
    /// The last pass counted (started, finished) and the tally.
    tally: Mutex<(Option<(u64, u64)>, PassTally)>,
}

impl SyncView {
    /// Watches `status`.
    pub fn new(status: watch::Receiver<SyncStatus>, trigger: Arc<Trigger>) -> Self {
        let view = Self {
            status,
            trigger,
            tally: Mutex::default(),
        };
        let current = view.status.borrow().clone();
        view.note(&current);
        view
    }

    /// Counts the pass in `status` if it is new.
    pub fn note(&self, status: &SyncStatus) {
        let Some(pass) = &status.last_pass else {
            return;
        };
        let mut inner = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = (pass.started, pass.finished);
        if inner.0 == Some(id) {
            return;
        }
        inner.0 = Some(id);
        let tally = &mut inner.1;
        if pass.ok {
            tally.ok += 1;
            tally.consecutive_failures = 0;
            tally.last_success = Some(pass.finished);
        } else {
            tally.failed += 1;
            tally.consecutive_failures += 1;
            tally.last_error.clone_from(&pass.error);
        }
    }

    /// Follows the engine until it stops, counting passes.
    pub async fn follow(self: Arc<Self>) {
        let mut status = self.status.clone();
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            self.note(&now);
        }
    }

    /// The tally so far.
    pub fn tally(&self) -> PassTally {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::state::PassRecord;

    #[test]
    fn passes_are_counted_once_each() {
        let (tx, rx) = watch::channel(SyncStatus::default());
        let view = SyncView::new(rx, Arc::new(Trigger::default()));
        let pass = |started, ok| PassRecord {
            started,
            finished: started + 1,
            ok,
            error: (!ok).then(|| "upstream 503".to_string()),
        };
        for (started, ok) in [(1, false), (1, false), (5, false), (9, true), (12, false)] {
            tx.send_modify(|s| s.last_pass = Some(pass(started, ok)));
            view.note(&tx.borrow());
        }
        let t = view.tally();
        assert_eq!((t.ok, t.failed, t.consecutive_failures), (1, 3, 1));
        assert_eq!(t.last_success, Some(10));
        assert_eq!(t.last_error.as_deref(), Some("upstream 503"));
    }
}
