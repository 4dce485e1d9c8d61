//! Saving and restoring quota usage, periodically and on shutdown.
//!
//! The housekeeping task also forgets idle clients, so one timer bounds
//! both memory and how much usage a crash can lose (one save interval).

use std::future::Future;
use std::io;

use super::Limits;
use super::store::LimitsState;

impl Limits {
    /// The state to persist now.
    pub fn state(&self) -> LimitsState {
        let now = self.clock.unix();
        LimitsState {
            saved_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            quotas: self.quotas.snapshot(now),
        }
    }

    /// Restores saved usage; counters of an earlier period are dropped.
    pub fn restore(&self, state: &LimitsState) {
        self.quotas.restore(&state.quotas, self.clock.unix());
    }

    /// Loads the configured state file, if any (a corrupt one is set aside).
    pub fn load(&self) -> io::Result<()> {
        if let Some(store) = &self.store {
            let state = store.load()?;
            self.restore(&state);
        }
        Ok(())
    }

    /// Writes the configured state file, if any (blocking).
    pub fn save(&self) -> io::Result<()> {
        match &self.store {
            Some(store) => store.save(&self.state()),
            None => Ok(()),
        }
    }

    async fn save_in_background(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let state = self.state();
        let result = tokio::task::spawn_blocking(move || store.save(&state)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "saving limits state failed"),
            Err(e) => tracing::warn!(error = %e, "saving limits state panicked"),
        }
    }

    /// Every `save_interval`: forgets idle clients and saves usage; saves
    /// once more when `shutdown` completes, then returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.save_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.maintain();
                    self.save_in_background().await;
                }
                () = &mut shutdown => break,
            }
        }
        self.save_in_background().await;
    }
}
