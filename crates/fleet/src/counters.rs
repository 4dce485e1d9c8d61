//! Counters every node of the fleet adds to, so that a per-client quota
//! holds across the fleet rather than per node. A charge is one atomic
//! script (`INCRBY`, and `PEXPIRE` when the counter is new) under
//! `{prefix}:quota:`, bounded by the operation timeout; when it fails the
//! caller keeps its local limits.

use std::sync::Arc;
use std::time::Duration;

use crate::FleetError;
use crate::store::Store;

/// The fleet's shared counters.
#[derive(Clone)]
pub struct SharedCounters {
    store: Arc<Store>,
}

impl SharedCounters {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Adds `amount` to the counter `key`, which starts over `period` after
    /// its first charge; the count so far in this period, every node's
    /// charges included. `Err` when Redis did not answer within the
    /// operation timeout.
    pub async fn charge(
        &self,
        key: &str,
        amount: u64,
        period: Duration,
    ) -> Result<u64, FleetError> {
        self.store.charge(key, amount, period).await
    }
}

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounters").finish_non_exhaustive()
    }
}
