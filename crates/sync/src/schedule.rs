//! The sync engine inside `serve`: passes on a jittered interval, on an
//! operator's push (`POST /sync`), and on demand when clients reveal that
//! upstream moved on.
//!
//! Self-healing: a client asking for `daily-N.cdiff` with N above our
//! published version knows a newer version than we serve (from DNS). That is
//! the first sign of the incident this project exists for (clients falling
//! back to whole CVDs), so such a request triggers a pass at once, at most
//! once per `HEAL_COOL_DOWN`, and never while one is running.
//!
//! After a failed pass the next one comes sooner (jittered exponential
//! backoff, at most the interval), unless upstream asked us to wait.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::StatusCode;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use rand::SeedableRng;

use super::backoff::{Backoff, jittered};
use super::demand::Demand;
use super::{Engine, Quiet, SyncError};
use crate::hooks::{Completion, Hook};
use cvdmirror_exchange::{Exchange, FileKind, MissingHere};

/// Minimum time between passes triggered by clients.
pub const HEAL_COOL_DOWN: Duration = Duration::from_secs(5 * 60);
/// First retry after a failed pass.
const RETRY_BASE: Duration = Duration::from_secs(60);

/// Why a pass runs, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Startup or the interval elapsed.
    Schedule,
    /// An operator asked (`POST /sync`).
    Push,
    /// Clients asked for a cdiff newer than the published set.
    Heal,
}

/// Requests passes from outside the schedule.
#[derive(Debug, Default)]
pub struct Trigger {
    push: Notify,
    heal: Notify,
    heal_requests: AtomicU64,
    pushes: AtomicU64,
}

impl Trigger {
    /// An operator's "update now".
    pub fn push(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.push.notify_one();
    }

    /// A pass now for a reason of the mirror's own (in a fleet: the node
    /// that pulls from upstream published something new); not counted as
    /// an operator's push.
    pub fn wake(&self) {
        self.push.notify_one();
    }

    /// Operators' pushes so far.
    pub fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Clients know a newer version than we publish.
    pub fn heal(&self) {
        self.heal_requests.fetch_add(1, Ordering::Relaxed);
        self.heal.notify_one();
    }

    /// Heal requests seen so far.
    pub fn heal_requests(&self) -> u64 {
        self.heal_requests.load(Ordering::Relaxed)
    }
}

/// Runs passes until `shutdown`; `interval` is the regular period.
pub async fn run(
    engine: Arc<Engine>,
    interval: Duration,
    trigger: Arc<Trigger>,
    shutdown: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut failures = Backoff::new(RETRY_BASE, interval);
    let mut heal_gate = HealGate::new(HEAL_COOL_DOWN);
    let mut reason = Reason::Schedule;
    loop {
        tracing::info!(?reason, "sync pass starting");
        let next = match engine.pass(&Quiet).await {
            Ok(_) => {
                failures.reset();
                jittered(interval, 0.1, &mut rng)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync pass failed; previous files still served");
                match e {
                    SyncError::Forbidden { .. } => interval,
                    _ => failures.next_delay(&mut rng).min(interval),
                }
            }
        };
        let deadline = Instant::now() + next;
        reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(deadline) => break Reason::Schedule,
                () = trigger.push.notified() => break Reason::Push,
                () = trigger.heal.notified() => {
                    if heal_gate.try_pass(Instant::now()) {
                        break Reason::Heal;
                    }
                    tracing::debug!("clients want a newer version; a heal pass ran recently, waiting");
                }
            }
        };
    }
}

/// Lets at most one client-triggered pass through per cool-down.
#[derive(Debug)]
struct HealGate {
    cool_down: Duration,
    last: Option<Instant>,
}

impl HealGate {
    fn new(cool_down: Duration) -> Self {
        Self {
            cool_down,
            last: None,
        }
    }

    fn try_pass(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.cool_down)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The hook that notices clients asking for cdiffs we do not have.
pub struct HealHook {
    published: Arc<ArcSwap<BTreeMap<String, u32>>>,
    trigger: Arc<Trigger>,
    demand: Arc<Demand>,
}

impl HealHook {
    /// Watches requests against `published` versions, noting what clients
    /// asked for in `demand`.
    pub fn new(
        published: Arc<ArcSwap<BTreeMap<String, u32>>>,
        trigger: Arc<Trigger>,
        demand: Arc<Demand>,
    ) -> Self {
        Self {
            published,
            trigger,
            demand,
        }
    }
}

impl Hook for HealHook {
    fn complete(&self, exchange: &Exchange, completion: &Completion) {
        let missing = completion.status == StatusCode::NOT_FOUND
            || exchange.extensions.get::<MissingHere>().is_some();
        if !missing {
            return;
        }
        let is_cdiff = exchange
            .file
            .as_ref()
            .is_none_or(|f| f.kind == FileKind::Cdiff);
        if !is_cdiff {
            return;
        }
        let name = exchange.target.path().trim_start_matches('/');
        let Some((db, version)) = parse_cdiff_name(name) else {
            return;
        };
        let published = self.published.load();
        if published.get(db).is_some_and(|&p| version > p) {
            let at = exchange
                .received
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.demand.note(name, at);
            self.trigger.heal();
        }
    }
}

/// `("daily", 27654)` for `daily-27654.cdiff`.
fn parse_cdiff_name(name: &str) -> Option<(&str, u32)> {
    let stem = name.strip_suffix(".cdiff")?;
    let (db, version) = stem.rsplit_once('-')?;
    Some((db, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdiff_names_parse() {
        assert_eq!(
            parse_cdiff_name("daily-27654.cdiff"),
            Some(("daily", 27654))
        );
        assert_eq!(parse_cdiff_name("daily.cvd"), None);
        assert_eq!(parse_cdiff_name("daily-x.cdiff"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn client_triggered_passes_are_limited_to_one_per_cool_down() {
        let mut gate = HealGate::new(HEAL_COOL_DOWN);
        assert!(gate.try_pass(Instant::now()));
        assert!(!gate.try_pass(Instant::now()));
        tokio::time::advance(HEAL_COOL_DOWN - Duration::from_secs(1)).await;
        assert!(!gate.try_pass(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(gate.try_pass(Instant::now()));
    }

    #[test]
    fn only_cdiffs_above_the_published_version_heal() {
        let published = Arc::new(ArcSwap::from_pointee(BTreeMap::from([(
            "daily".to_string(),
            10,
        )])));
        let trigger = Arc::new(Trigger::default());
        let demand = Arc::new(Demand::default());
        let hook = HealHook::new(published, Arc::clone(&trigger), Arc::clone(&demand));
        let exchange = |path: &str| {
            let mut exchange = Exchange::get("192.0.2.1:1".parse().unwrap(), path);
            exchange.client = "192.0.2.7".parse().unwrap();
            exchange
        };
        let not_found = Completion {
            status: StatusCode::NOT_FOUND,
            body_bytes: 0,
            finished: true,
            duration: Duration::ZERO,
        };
        hook.complete(&exchange("/daily-10.cdiff"), &not_found);
        hook.complete(&exchange("/main-99.cdiff"), &not_found);
        assert_eq!(trigger.heal_requests(), 0);
        assert!(!demand.asked_since("daily-10.cdiff", 0));
        hook.complete(&exchange("/daily-11.cdiff"), &not_found);
        assert_eq!(trigger.heal_requests(), 1);
        assert!(demand.asked_since("daily-11.cdiff", 0));
        let ok = Completion {
            status: StatusCode::OK,
            ..not_found
        };
        hook.complete(&exchange("/daily-12.cdiff"), &ok);
        assert_eq!(trigger.heal_requests(), 1);
        // Sent to a fleet node that has it: still missing here.
        let found = Completion {
            status: StatusCode::FOUND,
            ..not_found
        };
        hook.complete(&exchange("/daily-12.cdiff"), &found);
        assert_eq!(trigger.heal_requests(), 1);
        let mut filled_in = exchange("/daily-12.cdiff");
        filled_in.extensions.insert(MissingHere);
        hook.complete(&filled_in, &found);
        assert_eq!(trigger.heal_requests(), 2);
        assert!(demand.asked_since("daily-12.cdiff", 0));
    }
}
