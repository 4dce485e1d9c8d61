//! What observation knows about the sync engine: the status it publishes,
//! and a tally of pass outcomes derived from it.
//!
//! The engine publishes its state in a `watch` channel; it does not count
//! passes. A follower task notes every new `last_pass` so the metrics can
//! say how many passes succeeded and failed, how many failed in a row (the
//! "sync failing" alert), and when the last success was. It also counts the
//! upstream files the engine refused: the engine keeps only the last
//! [`KEPT_REJECTIONS`](crate::sync::signatures::KEPT_REJECTIONS), so each
//! status is compared with the previous one and only the new entries are
//! counted (more than that many between two looks are undercounted).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::sync::SyncStatus;
use crate::sync::schedule::Trigger;
use crate::sync::signatures::Rejection;
use cvdmirror_formats::FileKind;

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
    /// Upstream files refused since start, by file kind (`cvd`, `cdiff`,
    /// `sign`, `cld`, `other`).
    pub rejections: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last pass counted (started, finished).
    pass: Option<(u64, u64)>,
    tally: PassTally,
    /// The rejections in the last status seen.
    rejections: Vec<Rejection>,
}

/// How many entries at the end of `now` are new since `before` (both oldest
/// first; the engine drops from the front and adds at the back).
fn new_entries(before: &[Rejection], now: &[Rejection]) -> usize {
    let overlap = (0..=before.len().min(now.len()))
        .rev()
        .find(|&m| now[..m] == before[before.len() - m..])
        .unwrap_or(0);
    now.len() - overlap
}

/// The sync engine as observation sees it.
#[derive(Debug)]
pub struct SyncView {
    /// Its status.
    pub status: watch::Receiver<SyncStatus>,
    /// Where heal requests are counted.
    pub trigger: Arc<Trigger>,
    /// The last pass counted and the tally.
    tally: Mutex<Inner>,
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

    /// Counts the pass in `status` if it is new, and its new rejections.
    pub fn note(&self, status: &SyncStatus) {
        let mut inner = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: Vec<Rejection> = status.rejections.iter().cloned().collect();
        let new = new_entries(&inner.rejections, &now);
        for r in &now[now.len() - new..] {
            *inner
                .tally
                .rejections
                .entry(FileKind::of(Path::new(&r.file)).as_str())
                .or_default() += 1;
        }
        inner.rejections = now;
        let Some(pass) = &status.last_pass else {
            return;
        };
        let id = (pass.started, pass.finished);
        if inner.pass == Some(id) {
            return;
        }
        inner.pass = Some(id);
        let tally = &mut inner.tally;
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
            .tally
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

    #[test]
    fn rejections_are_counted_once_each_even_as_old_ones_drop_off() {
        use crate::sync::signatures::KEPT_REJECTIONS;
        let (tx, rx) = watch::channel(SyncStatus::default());
        let view = SyncView::new(rx, Arc::new(Trigger::default()));
        let reject = |at: u64, file: &str| Rejection {
            at,
            file: file.into(),
            reason: "invalid signature: line 1: certificate has expired".into(),
        };
        // Before any pass ended, two at once.
        tx.send_modify(|s| {
            s.rejections.push(reject(1, "daily.cvd"));
            s.rejections.push(reject(1, "daily.cvd"));
        });
        view.note(&tx.borrow());
        view.note(&tx.borrow());
        assert_eq!(view.tally().rejections, BTreeMap::from([("cvd", 2)]));
        // Enough more to push the first ones out of the engine's list.
        for i in 0..KEPT_REJECTIONS as u64 {
            tx.send_modify(|s| s.rejections.push(reject(10 + i, "daily-9.cdiff.sign")));
            view.note(&tx.borrow());
        }
        tx.send_modify(|s| s.rejections.push(reject(100, "main.cvd")));
        view.note(&tx.borrow());
        assert_eq!(
            view.tally().rejections,
            BTreeMap::from([("cvd", 3), ("sign", KEPT_REJECTIONS as u64)])
        );
    }
}
