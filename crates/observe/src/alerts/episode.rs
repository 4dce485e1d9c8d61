//! One alert's state machine: fire once per episode, resolve once.
//!
//! A condition must hold for `fire_after` before the alert fires (a single
//! busy second is not a saturated link), and must stay clear for
//! `clear_after` before it resolves (a link hovering around the threshold
//! must not page the operator every few seconds). Between the two edges the
//! alert is quiet, however often the condition flickers.

use std::time::Duration;

use tokio::time::Instant;

/// An edge worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition held long enough: the episode begins.
    Fired,
    /// The condition stayed clear long enough: the episode is over.
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Pending {
        since: Instant,
    },
    Firing {
        since: Instant,
        clear_since: Option<Instant>,
    },
}

/// Hysteresis for one alert.
#[derive(Debug, Clone)]
pub struct Episode {
    fire_after: Duration,
    clear_after: Duration,
    state: State,
}

impl Episode {
    /// Fires after the condition held `fire_after`, resolves after it was
    /// clear for `clear_after`.
    pub fn new(fire_after: Duration, clear_after: Duration) -> Self {
        Self {
            fire_after,
            clear_after,
            state: State::Idle,
        }
    }

    /// Feeds the condition's value at `now`.
    pub fn update(&mut self, now: Instant, condition: bool) -> Option<Transition> {
        match (self.state, condition) {
            (State::Idle, true) => {
                self.state = State::Pending { since: now };
                self.update(now, true)
            }
            (State::Pending { since }, true) if now.duration_since(since) >= self.fire_after => {
                self.state = State::Firing {
                    since: now,
                    clear_since: None,
                };
                Some(Transition::Fired)
            }
            (State::Pending { .. }, false) => {
                self.state = State::Idle;
                None
            }
            (State::Firing { since, .. }, true) => {
                self.state = State::Firing {
                    since,
                    clear_since: None,
                };
                None
            }
            (State::Firing { since, clear_since }, false) => {
                let clear_since = clear_since.unwrap_or(now);
                if now.duration_since(clear_since) >= self.clear_after {
                    self.state = State::Idle;
                    Some(Transition::Resolved)
                } else {
                    self.state = State::Firing {
                        since,
                        clear_since: Some(clear_since),
                    };
                    None
                }
            }
            (State::Pending { .. } | State::Idle, _) => None,
        }
    }

    /// Whether an episode is in progress.
    pub fn is_firing(&self) -> bool {
        matches!(self.state, State::Firing { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn step(e: &mut Episode, secs: u64, condition: bool) -> Option<Transition> {
        tokio::time::advance(Duration::from_secs(secs)).await;
        e.update(Instant::now(), condition)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_per_episode_and_resolves_once() {
        let mut e = Episode::new(Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(step(&mut e, 0, true).await, None);
        assert_eq!(step(&mut e, 59, true).await, None);
        assert_eq!(step(&mut e, 1, true).await, Some(Transition::Fired));
        assert!(e.is_firing());
        // Flickering inside the episode stays quiet.
        for _ in 0..10 {
            assert_eq!(step(&mut e, 10, false).await, None);
            assert_eq!(step(&mut e, 10, true).await, None);
        }
        assert_eq!(step(&mut e, 1, false).await, None);
        assert_eq!(step(&mut e, 29, false).await, None);
        assert_eq!(step(&mut e, 1, false).await, Some(Transition::Resolved));
        assert_eq!(step(&mut e, 100, false).await, None);
        assert!(!e.is_firing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_spike_never_fires() {
        let mut e = Episode::new(Duration::from_secs(60), Duration::ZERO);
        assert_eq!(step(&mut e, 0, true).await, None);
        assert_eq!(step(&mut e, 30, true).await, None);
        assert_eq!(step(&mut e, 1, false).await, None);
        assert_eq!(step(&mut e, 1, true).await, None);
        assert_eq!(step(&mut e, 59, true).await, None);
        assert_eq!(step(&mut e, 1, true).await, Some(Transition::Fired));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_durations_fire_and_resolve_on_the_tick() {
        let mut e = Episode::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(step(&mut e, 0, true).await, Some(Transition::Fired));
        assert_eq!(step(&mut e, 1, false).await, Some(Transition::Resolved));
    }
}
