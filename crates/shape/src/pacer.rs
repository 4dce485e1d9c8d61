//! The one task that hands out budgets, every tick, to flows that wait.
//!
//! A single pacer instead of a timer per connection: ten thousand slow
//! downloads cost one wake-up per tick, not ten thousand. While flows wait it
//! runs on the configured tick (a few milliseconds, so a flow at any rate
//! moves in small steady steps instead of mod_cband's once-a-second pulses);
//! when nothing waits it sleeps until a body asks, waking only to keep the
//! rate averages current. It holds the shaper weakly and ends when the shaper
//! is gone or on shutdown.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant, sleep_until};

use super::Shared;

/// How often byte counters are folded into the rate averages.
pub(crate) const FOLD_INTERVAL: Duration = Duration::from_millis(100);

/// Runs until `shutdown` completes or the shaper is dropped.
pub(crate) async fn run(
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next_tick = Instant::now();
    let mut next_fold = Instant::now() + FOLD_INTERVAL;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (wakers, busy, tick) = {
            let mut tree = strong.lock();
            let wakers = tree.tick(now);
            if now >= next_fold {
                tree.fold(now);
                next_fold = now + FOLD_INTERVAL;
            }
            (wakers, tree.waiting > 0, tree.config.tick)
        };
        drop(strong);
        for waker in wakers {
            waker.wake();
        }
        next_tick = next_deadline(next_tick, now, tick);
        if busy {
            tokio::select! {
                () = &mut shutdown => return,
                () = sleep_until(next_tick) => {}
            }
        } else {
            tokio::select! {
                () = &mut shutdown => return,
                () = wake.notified() => { next_tick = Instant::now(); }
                () = sleep_until(next_fold) => {}
            }
        }
    }
}

/// The deadline after a tick due at `due` that fired at `fired`: one tick
/// later, keeping the schedule through the usual lateness of a timer with
/// 1 ms resolution, so ticks average the configured period. A pacer that
/// fell a whole tick behind (a stalled runtime) restarts the schedule from
/// now instead of catching up in a rush; the buckets let out at most a
/// burst of what the stall earned (see `bucket.rs` for why no more).
pub(crate) fn next_deadline(due: Instant, fired: Instant, tick: Duration) -> Instant {
    let next = due + tick;
    if next < fired { fired + tick } else { next }
}
