//! Waiting for something another process or thread does, the one way the
//! tests do it: poll a probe until it succeeds or a deadline passes, then
//! fail with what the probe last saw. Nothing sleeps a fixed time to wait
//! for readiness; the polls start 1 ms apart and back off to 10 ms, so a
//! fast event is seen at once and a slow one costs little CPU (a probe
//! that is a request to the server may ask for longer pauses).
//!
//! Deadlines are wall-clock time: a paused tokio clock does not reach the
//! child processes the tests wait on.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long any wait in a test may take before it fails, unless the test
/// promises a tighter bound.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The longest pause between two polls.
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// Calls `probe` until it returns `Ok`, or until `within` has passed:
/// then its last `Err` (what it saw instead).
pub fn poll<T, E>(within: Duration, probe: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    poll_every(within, MAX_PAUSE, probe)
}

/// [`poll`] with pauses of up to `every` between probes (for a probe that
/// is itself a request the server answers or logs).
pub fn poll_every<T, E>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1).min(every);
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() >= within => return Err(last),
            Err(_) => {}
        }
        std::thread::sleep(pause.min(within.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(every);
    }
}

/// [`poll`], failing the test with the probe's last `Err` at the deadline.
#[track_caller]
pub fn wait_until<T, E: Display>(within: Duration, probe: impl FnMut() -> Result<T, E>) -> T {
    wait_until_every(within, MAX_PAUSE, probe)
}

/// [`poll_every`], failing the test with the probe's last `Err` at the
/// deadline.
#[track_caller]
pub fn wait_until_every<T, E: Display>(
    within: Duration,
    every: Duration,
    probe: impl FnMut() -> Result<T, E>,
) -> T {
    match poll_every(within, every, probe) {
        Ok(value) => value,
        Err(last) => panic!("{last} (waited {within:?})"),
    }
}

/// `Ok(())` if `done`, else `Err(why())`: a condition as a probe for
/// [`wait_until`].
pub fn check<E>(done: bool, why: impl FnOnce() -> E) -> Result<(), E> {
    if done { Ok(()) } else { Err(why()) }
}
