//! A running transfer's side of the quotas: every byte sent is charged to
//! them, and a transfer whose quota runs out under it is slowed (or, for a
//! refusing quota, finished at its pace) without waiting for its end.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::{Duration, Instant};

use crate::limits::{ClientKey, Limits, TransferVerdict};
use crate::metrics::DecisionLabels;
use crate::shape::{FlowRate, Rate};

/// Re-check a running transfer's quotas after this many bytes...
pub(crate) const CHECK_BYTES: u64 = 256 * 1024;
/// ...or this long, whichever comes first (a slowed transfer sends little).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Charges a running transfer to the quotas and keeps its pace in line
/// with them: a quota whose `on_exceed` is `slow` that runs out mid-transfer
/// slows the transfer to that rate from then on (and a new slice or period
/// restores the pace it was admitted at). A refusing or redirecting
/// `on_exceed` cannot change a response whose status line is sent: such a
/// transfer is finished at its pace, since ending it would only make the
/// client download the whole file again. Checking costs a lock, so it
/// happens every [`CHECK_BYTES`] or [`CHECK_INTERVAL`], not per chunk.
/// Small responses are charged but, as at admission, never held to a quota.
pub(crate) struct QuotaWatch {
    // Shared with the hook: bytes are charged to, and checked against,
    // whatever limits are in force when they leave, so a reload
    // mid-transfer keeps counting.
    pub(crate) limits: Arc<ArcSwap<Limits>>,
    pub(crate) site: Arc<str>,
    pub(crate) client: ClientKey,
    pub(crate) rate: FlowRate,
    /// Where a running transfer's slowing is counted.
    pub(crate) decisions: Family<DecisionLabels, Counter>,
    /// Whether the quotas apply (as at admission, only to bulk transfers).
    pub(crate) bulk: bool,
    /// The client cap the transfer was admitted with.
    pub(crate) base: Option<Rate>,
    /// The client cap in force.
    pub(crate) applied: Option<Rate>,
    /// Bytes charged since the last check.
    pub(crate) unchecked: u64,
    pub(crate) checked_at: Instant,
}

impl QuotaWatch {
    /// Charges `bytes` just handed to the connection; re-checks the quotas
    /// when due.
    pub(crate) fn sent(&mut self, bytes: u64) {
        let limits = self.limits.load();
        limits.charge(&self.site, self.client, bytes);
        if !self.bulk {
            return;
        }
        self.unchecked = self.unchecked.saturating_add(bytes);
        if self.unchecked < CHECK_BYTES && self.checked_at.elapsed() < CHECK_INTERVAL {
            return;
        }
        self.unchecked = 0;
        self.checked_at = Instant::now();
        let (wanted, slowed_by) = match limits.check_transfer(&self.site, self.client) {
            TransferVerdict::Slow { rate, limit } => (
                Rate::min_cap(self.base, Rate::from_bytes_per_sec(rate)),
                Some(limit),
            ),
            // Finished at the admitted pace (see above).
            TransferVerdict::Continue | TransferVerdict::Exceeded(_) => (self.base, None),
        };
        if wanted != self.applied {
            if let Some(limit) = slowed_by
                && self.applied == self.base
            {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        decision: "slowed_running",
                        limit: limit.as_str(),
                    })
                    .inc();
            }
            tracing::debug!(client = %self.client, site = %self.site, rate = ?wanted, "quota changed the pace of a running transfer");
            self.rate.set(wanted);
            self.applied = wanted;
        }
    }
}
