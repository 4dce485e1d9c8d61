//! Alerts: the mirror warns before anyone calls.
//!
//! Twelve rules, each with its own [`Episode`] (fire once, resolve once):
//!
//! - `link_saturated`: throughput at or above a share of the link capacity
//!   for longer than a duration. The capacity comes from the shaping module
//!   when it runs (it knows the configured cap), else from
//!   `[alerts] link_capacity`; without either the rule is off.
//! - `herd`: whole-CVD requests plus cdiff `404`s in the last minute reach
//!   a multiple of the per-minute baseline of the hour before (and at least
//!   a floor, so a quiet mirror's first busy minute is not a herd).
//! - `mirror_behind`: some database lags upstream by N versions or more for
//!   longer than a duration.
//! - `sync_failing`: N sync passes in a row failed.
//! - `quota_exhausted`: raised by the limits module through
//!   [`Alerts::quota_exhausted`]; resolves after a quiet hold time.
//! - `sign_missing`: a database seen published with a verified ClamAV 1.5
//!   `.sign` is now published without one and upstream offers none
//!   (`sign_missing_since` set): FIPS-mode clients cannot update it.
//! - `signer_changed`: the `.sign` of a database names another signer,
//!   issuer or certificate fingerprint than the one seen last; holds for
//!   [`SIGNER_CHANGED_HOLD`] after the last change.
//! - `upstream_rejected`: the engine refused upstream files (bad signature,
//!   bad header) in the pass running now or the last one; resolves after a
//!   pass refuses nothing. Complements `sync_failing`, which needs several
//!   failed passes in a row and misses a refused `.sign` in a pass that
//!   otherwise succeeds.
//! - `fleet_node_lost`, `fleet_node_lagging`, `fleet_redis_unreachable`,
//!   `fleet_lease_churn`: on a fleet node only, from its view of the fleet
//!   (see [`fleet`]); thresholds in [`FleetAlertConfig`].
//!
//! Rules are evaluated on the sampler's tick with the time passed in, so the
//! state machine is tested on a paused clock. Transitions become
//! [`AlertEvent`]s, delivered by [`deliver`] (log line, webhook).

pub mod deliver;
pub mod episode;
pub mod fleet;
pub mod signatures;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use cvdmirror_fleet::FleetSnapshot;
pub use episode::{Episode, Transition};
pub use fleet::FleetAlertConfig;
use fleet::FleetWatch;
use signatures::SignWatch;

use crate::sync::signatures::{DbSignatures, Rejection};

/// Every rule, in evaluation and display order.
pub const NAMES: [&str; 12] = [
    "link_saturated",
    "herd",
    "mirror_behind",
    "sync_failing",
    "quota_exhausted",
    "sign_missing",
    "signer_changed",
    "upstream_rejected",
    "fleet_node_lost",
    "fleet_node_lagging",
    "fleet_redis_unreachable",
    "fleet_lease_churn",
];

/// The fleet rules, a subset of [`NAMES`].
pub const FLEET_NAMES: [&str; 4] = [
    "fleet_node_lost",
    "fleet_node_lagging",
    "fleet_redis_unreachable",
    "fleet_lease_churn",
];

/// How long `signer_changed` keeps firing after the last change seen (a
/// certificate rotation is worth a look, not an open alert forever).
pub const SIGNER_CHANGED_HOLD: Duration = Duration::from_secs(60 * 60);

/// Thresholds of the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Link capacity in bytes/s when shaping does not provide one.
    pub link_capacity: Option<u64>,
    /// Share of the capacity (0–1) that counts as saturated.
    pub link_threshold: f64,
    /// How long the link must stay saturated.
    pub link_for: Duration,
    /// Herd: last minute's count over the baseline per minute.
    pub herd_factor: f64,
    /// Herd: fewest requests per minute that can be a herd.
    pub herd_min_per_minute: u64,
    /// Behind: versions behind upstream that count.
    pub behind_versions: u32,
    /// Behind: for how long.
    pub behind_for: Duration,
    /// Consecutive failed sync passes that fire `sync_failing`.
    pub sync_failures: u32,
    /// How long `quota_exhausted` stays firing after the last event.
    pub quota_hold: Duration,
    /// How long every condition must stay clear before it resolves.
    pub clear_for: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            link_capacity: None,
            link_threshold: 0.9,
            link_for: Duration::from_secs(120),
            herd_factor: 5.0,
            herd_min_per_minute: 60,
            behind_versions: 2,
            behind_for: Duration::from_secs(30 * 60),
            sync_failures: 3,
            quota_hold: Duration::from_secs(5 * 60),
            clear_for: Duration::from_secs(60),
        }
    }
}

/// What the rules look at, gathered by the sampler each tick.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Bytes per second sent now.
    pub link_rate: f64,
    /// Capacity from shaping, if it runs (overrides the configured one).
    pub link_capacity: Option<u64>,
    /// Whole-CVD requests plus cdiff `404`s in the last minute.
    pub herd_last_minute: u64,
    /// The same per minute over the hour before (None: no history yet).
    pub herd_baseline: Option<f64>,
    /// Largest number of versions any database lags upstream.
    pub behind: u32,
    /// Consecutive failed sync passes.
    pub sync_failures: u32,
    /// Per database, the signatures the published CVD carries.
    pub signatures: BTreeMap<String, DbSignatures>,
    /// Upstream files refused in the pass running now or the last one
    /// ([`signatures::pass_rejections`]).
    pub rejections: Vec<Rejection>,
    /// This node's view of its fleet, on a fleet node.
    pub fleet: Option<FleetSnapshot>,
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The episode began.
    Firing,
    /// The episode ended.
    Resolved,
}

/// One notification: the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Rule name, e.g. `link_saturated`.
    pub alert: &'static str,
    /// Firing or resolved.
    pub state: AlertState,
    /// One sentence for a person.
    pub summary: String,
    /// The numbers behind it.
    pub values: serde_json::Value,
    /// Unix time the episode began.
    pub started_at: u64,
    /// Unix time of this event.
    pub at: u64,
    /// Which mirror (host name) sent it.
    pub source: String,
}

/// An alert that is firing now, for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// Rule name.
    pub alert: &'static str,
    /// Its last summary.
    pub summary: String,
    /// Unix time it fired.
    pub since: u64,
}

struct Rule {
    name: &'static str,
    episode: Episode,
    started_at: u64,
    summary: String,
    values: serde_json::Value,
}

/// The rules and their episodes.
pub struct Alerts {
    config: AlertConfig,
    rules: Vec<Rule>,
    last_quota: Option<(Instant, String)>,
    signs: SignWatch,
    /// The last signer change seen: when, its summary and values.
    last_signer_change: Option<(Instant, String, serde_json::Value)>,
    fleet_config: FleetAlertConfig,
    fleet: FleetWatch,
    source: String,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Alerts {
    /// Rules with `config`'s thresholds; `source` names this mirror in events.
    pub fn new(config: AlertConfig, source: String) -> Self {
        let clear = config.clear_for;
        let rule = |name, fire_after| Rule {
            name,
            episode: Episode::new(fire_after, clear),
            started_at: 0,
            summary: String::new(),
            values: serde_json::Value::Null,
        };
        let rules = NAMES
            .iter()
            .map(|&name| match name {
                "link_saturated" => rule(name, config.link_for),
                "mirror_behind" => rule(name, config.behind_for),
                _ => rule(name, Duration::ZERO),
            })
            .collect();
        Self {
            config,
            rules,
            last_quota: None,
            signs: SignWatch::default(),
            last_signer_change: None,
            fleet_config: FleetAlertConfig::default(),
            fleet: FleetWatch::default(),
            source,
        }
    }

    /// The same rules with `config`'s thresholds for the fleet rules.
    #[must_use]
    pub fn with_fleet_config(mut self, config: FleetAlertConfig) -> Self {
        self.fleet_config = config;
        self
    }

    /// Fleet nodes that left this node's view and have not come back
    /// (name, Unix time first missed), however recently they left.
    pub fn lost_nodes(&self) -> Vec<(String, u64)> {
        self.fleet.lost()
    }

    /// Forgets the fleet nodes that left (removed on purpose): the
    /// `fleet_node_lost` condition clears.
    pub fn forget_lost_nodes(&mut self) {
        self.fleet.forget_lost();
    }

    /// The limits module reports an exhausted quota (`subject`: whose).
    pub fn quota_exhausted(&mut self, now: Instant, subject: String) {
        self.last_quota = Some((now, subject));
    }

    /// Evaluates every rule at `now`; returns the transitions.
    pub fn evaluate(&mut self, now: Instant, wall: SystemTime, inputs: &Inputs) -> Vec<AlertEvent> {
        let c = &self.config;
        let capacity = inputs.link_capacity.or(c.link_capacity);
        let share = capacity
            .filter(|&cap| cap > 0)
            .map(|cap| inputs.link_rate / cap as f64);
        let herd_bar = inputs
            .herd_baseline
            .map_or(0.0, |b| b * c.herd_factor)
            .max(c.herd_min_per_minute as f64);
        let quota = self
            .last_quota
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < c.quota_hold);
        let changes = self.signs.update(&inputs.signatures);
        if !changes.is_empty() {
            let (summary, values) = signatures::change_alert(&changes);
            self.last_signer_change = Some((now, summary, values));
        }
        let signer_change = self
            .last_signer_change
            .as_ref()
            .filter(|(at, _, _)| now.duration_since(*at) < SIGNER_CHANGED_HOLD);
        let missing = self.signs.missing(&inputs.signatures);
        let (missing_summary, missing_values) = signatures::missing_alert(&missing);
        let (rejected_summary, rejected_values) = signatures::rejection_alert(&inputs.rejections);
        let fc = &self.fleet_config;
        let found = inputs
            .fleet
            .as_ref()
            .map(|view| self.fleet.update(now, unix(wall), view, fc))
            .unwrap_or_default();
        let (lost_summary, lost_values) = fleet::lost_alert(&found.lost);
        let (lagging_summary, lagging_values) = fleet::lagging_alert(&found.lagging);
        let redis_lost = found.redis_lost.unwrap_or_default();
        let (redis_summary, redis_values) =
            fleet::redis_alert(redis_lost, found.stale, fc.redis_for);
        let (churn_summary, churn_values) =
            fleet::churn_alert(found.lease_changes, found.holder.as_ref(), fc);
        let checks: [(bool, String, serde_json::Value); NAMES.len()] = [
            (
                share.is_some_and(|s| s >= c.link_threshold),
                format!(
                    "link at {:.0} % of its capacity ({} of {})",
                    share.unwrap_or(0.0) * 100.0,
                    bits(inputs.link_rate),
                    bits(capacity.unwrap_or(0) as f64)
                ),
                json!({"rate_bps": inputs.link_rate * 8.0, "capacity_bps": capacity.map(|c| c * 8), "share": share, "threshold": c.link_threshold}),
            ),
            (
                inputs.herd_last_minute > 0 && inputs.herd_last_minute as f64 >= herd_bar,
                format!(
                    "herd: {} whole-CVD downloads and cdiff 404s in the last minute (baseline {:.1}/min)",
                    inputs.herd_last_minute,
                    inputs.herd_baseline.unwrap_or(0.0)
                ),
                json!({"last_minute": inputs.herd_last_minute, "baseline_per_minute": inputs.herd_baseline, "threshold": herd_bar}),
            ),
            (
                inputs.behind >= c.behind_versions && c.behind_versions > 0,
                format!("mirror is {} version(s) behind upstream", inputs.behind),
                json!({"behind": inputs.behind, "threshold": c.behind_versions}),
            ),
            (
                inputs.sync_failures >= c.sync_failures && c.sync_failures > 0,
                format!("{} sync passes in a row failed", inputs.sync_failures),
                json!({"consecutive_failures": inputs.sync_failures, "threshold": c.sync_failures}),
            ),
            (
                quota.is_some(),
                format!("quota exhausted: {}", quota.map_or("", |(_, s)| s.as_str())),
                json!({"subject": quota.map(|(_, s)| s)}),
            ),
            (!missing.is_empty(), missing_summary, missing_values),
            (
                signer_change.is_some(),
                signer_change.map_or(String::new(), |(_, s, _)| s.clone()),
                signer_change.map_or(serde_json::Value::Null, |(_, _, v)| v.clone()),
            ),
            (
                !inputs.rejections.is_empty(),
                rejected_summary,
                rejected_values,
            ),
            (!found.lost.is_empty(), lost_summary, lost_values),
            (!found.lagging.is_empty(), lagging_summary, lagging_values),
            (
                found.redis_lost.is_some_and(|lost| lost >= fc.redis_for),
                redis_summary,
                redis_values,
            ),
            (
                found.lease_changes > fc.lease_churn_max as usize,
                churn_summary,
                churn_values,
            ),
        ];
        let at = unix(wall);
        let mut events = Vec::new();
        for (rule, (condition, summary, values)) in self.rules.iter_mut().zip(checks) {
            if condition {
                rule.summary = summary;
                rule.values = values;
            }
            let state = match rule.episode.update(now, condition) {
                Some(Transition::Fired) => {
                    rule.started_at = at;
                    AlertState::Firing
                }
                Some(Transition::Resolved) => AlertState::Resolved,
                None => continue,
            };
            events.push(AlertEvent {
                alert: rule.name,
                state,
                summary: match state {
                    AlertState::Firing => rule.summary.clone(),
                    AlertState::Resolved => format!("resolved: {}", rule.summary),
                },
                values: rule.values.clone(),
                started_at: rule.started_at,
                at,
                source: self.source.clone(),
            });
        }
        events
    }

    /// Alerts firing now.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.rules
            .iter()
            .filter(|r| r.episode.is_firing())
            .map(|r| ActiveAlert {
                alert: r.name,
                summary: r.summary.clone(),
                since: r.started_at,
            })
            .collect()
    }

    /// The configured link capacity in bytes/s.
    pub fn configured_capacity(&self) -> Option<u64> {
        self.config.link_capacity
    }
}

pub use cvdmirror_formats::rate::human_bits as bits;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertConfig {
        AlertConfig {
            link_capacity: Some(12_500_000),
            link_for: Duration::from_secs(60),
            clear_for: Duration::from_secs(30),
            behind_for: Duration::from_secs(600),
            ..AlertConfig::default()
        }
    }

    async fn tick(a: &mut Alerts, secs: u64, inputs: &Inputs) -> Vec<(&'static str, AlertState)> {
        tokio::time::advance(Duration::from_secs(secs)).await;
        a.evaluate(Instant::now(), SystemTime::now(), inputs)
            .into_iter()
            .map(|e| (e.alert, e.state))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_link_fires_after_its_duration_and_resolves() {
        let mut a = Alerts::new(config(), "test".into());
        let busy = Inputs {
            link_rate: 12_000_000.0,
            ..Inputs::default()
        };
        assert!(tick(&mut a, 0, &busy).await.is_empty());
        for _ in 0..59 {
            assert!(tick(&mut a, 1, &busy).await.is_empty());
        }
        assert_eq!(
            tick(&mut a, 1, &busy).await,
            vec![("link_saturated", AlertState::Firing)]
        );
        assert_eq!(a.active()[0].alert, "link_saturated");
        assert!(a.active()[0].summary.contains("96 %"), "{:?}", a.active());
        for _ in 0..100 {
            assert!(tick(&mut a, 1, &busy).await.is_empty());
        }
        let quiet = Inputs::default();
        assert!(tick(&mut a, 1, &quiet).await.is_empty());
        assert!(tick(&mut a, 29, &quiet).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &quiet).await,
            vec![("link_saturated", AlertState::Resolved)]
        );
        assert!(a.active().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shaping_capacity_overrides_the_configured_one() {
        let mut a = Alerts::new(
            AlertConfig {
                link_for: Duration::ZERO,
                ..config()
            },
            "test".into(),
        );
        let inputs = Inputs {
            link_rate: 1_000_000.0,
            link_capacity: Some(1_000_000),
            ..Inputs::default()
        };
        assert_eq!(
            tick(&mut a, 1, &inputs).await,
            vec![("link_saturated", AlertState::Firing)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn herd_needs_a_surge_over_baseline_and_the_floor() {
        let mut a = Alerts::new(config(), "test".into());
        let herd = |n, baseline| Inputs {
            herd_last_minute: n,
            herd_baseline: baseline,
            ..Inputs::default()
        };
        // Below the floor of 60/min: no herd, even without a baseline.
        assert!(tick(&mut a, 1, &herd(59, None)).await.is_empty());
        // 100/min against a baseline of 30/min is not five times more.
        assert!(tick(&mut a, 1, &herd(100, Some(30.0))).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &herd(150, Some(30.0))).await,
            vec![("herd", AlertState::Firing)]
        );
        assert!(tick(&mut a, 1, &herd(400, Some(30.0))).await.is_empty());
        assert!(tick(&mut a, 30, &herd(0, Some(30.0))).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &herd(0, Some(30.0))).await,
            vec![("herd", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn behind_sync_failures_and_quota() {
        let mut a = Alerts::new(config(), "test".into());
        let behind = Inputs {
            behind: 2,
            sync_failures: 3,
            ..Inputs::default()
        };
        assert_eq!(
            tick(&mut a, 0, &behind).await,
            vec![("sync_failing", AlertState::Firing)]
        );
        assert_eq!(
            tick(&mut a, 600, &behind).await,
            vec![("mirror_behind", AlertState::Firing)]
        );
        a.quota_exhausted(Instant::now(), "site default: 10 GB/day".into());
        let events = tick(&mut a, 1, &behind).await;
        assert_eq!(events, vec![("quota_exhausted", AlertState::Firing)]);
        assert!(tick(&mut a, 299, &behind).await.is_empty());
        assert!(tick(&mut a, 29, &behind).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &behind).await,
            vec![("quota_exhausted", AlertState::Resolved)]
        );
    }

    fn signed(version: u32, fingerprint: &str) -> Inputs {
        Inputs {
            signatures: signatures::tests::daily(
                version,
                Some(signatures::tests::signer(
                    "ClamAV_datafiles_release",
                    "Cisco ClamAV CA",
                    fingerprint,
                )),
                None,
            ),
            ..Inputs::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_that_upstream_stops_providing_fires_sign_missing() {
        let mut a = Alerts::new(config(), "test".into());
        let unsigned = |version, since| Inputs {
            signatures: signatures::tests::daily(version, None, Some(since)),
            ..Inputs::default()
        };
        // An upstream that never had `.sign`s is not an alert.
        assert!(tick(&mut a, 1, &unsigned(27779, 500)).await.is_empty());
        assert!(tick(&mut a, 1, &signed(27780, "aa")).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &unsigned(27781, 1_764_288_000)).await,
            vec![("sign_missing", AlertState::Firing)]
        );
        let active = a.active();
        assert_eq!(active[0].alert, "sign_missing");
        assert!(
            active[0]
                .summary
                .contains("daily 27781 (last signed 27780)"),
            "{active:?}"
        );
        assert!(
            tick(&mut a, 600, &unsigned(27782, 1_764_288_000))
                .await
                .is_empty()
        );
        // Upstream signs again: resolves once clear for `clear_for`.
        assert!(tick(&mut a, 1, &signed(27783, "aa")).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &signed(27783, "aa")).await,
            vec![("sign_missing", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_signer_fires_signer_changed_for_an_hour() {
        let mut a = Alerts::new(config(), "test".into());
        // The first signer seen is nobody's change.
        assert!(tick(&mut a, 1, &signed(27780, "aa")).await.is_empty());
        assert!(tick(&mut a, 60, &signed(27781, "aa")).await.is_empty());
        let rotated = signed(27782, "bb");
        tokio::time::advance(Duration::from_secs(1)).await;
        let events = a.evaluate(Instant::now(), SystemTime::now(), &rotated);
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!((e.alert, e.state), ("signer_changed", AlertState::Firing));
        assert_eq!(e.values["databases"]["daily"]["from"]["fingerprint"], "aa");
        assert_eq!(e.values["databases"]["daily"]["to"]["fingerprint"], "bb");
        assert!(
            e.summary.starts_with(".sign signer changed: daily 27782: "),
            "{}",
            e.summary
        );
        // The same new signer is no new change; the alert holds, then resolves.
        assert!(tick(&mut a, 3599, &rotated).await.is_empty());
        assert!(tick(&mut a, 1, &rotated).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &rotated).await,
            vec![("signer_changed", AlertState::Resolved)]
        );
        assert!(tick(&mut a, 3600, &rotated).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn refused_upstream_files_fire_until_a_pass_refuses_nothing() {
        let mut a = Alerts::new(config(), "test".into());
        let refused = Inputs {
            rejections: vec![Rejection {
                at: 1_764_288_000,
                file: "daily.cvd".into(),
                reason: "invalid signature: line 1: certificate has expired".into(),
            }],
            ..Inputs::default()
        };
        assert_eq!(
            tick(&mut a, 1, &refused).await,
            vec![("upstream_rejected", AlertState::Firing)]
        );
        assert_eq!(
            a.active()[0].summary,
            "upstream file refused: daily.cvd: invalid signature: line 1: certificate has expired"
        );
        assert!(tick(&mut a, 3600, &refused).await.is_empty());
        assert!(tick(&mut a, 1, &Inputs::default()).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &Inputs::default()).await,
            vec![("upstream_rejected", AlertState::Resolved)]
        );
    }

    fn fleet(view: FleetSnapshot) -> Inputs {
        Inputs {
            fleet: Some(view),
            ..Inputs::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_leaves_the_fleet_fires_fleet_node_lost() {
        use fleet::tests::{node, view};
        let mut a = Alerts::new(config(), "test".into());
        let all = fleet(view(vec![node("a", 1), node("b", 1), node("c", 1)], 1));
        let without_c = fleet(view(vec![node("a", 1), node("b", 1)], 1));
        assert!(tick(&mut a, 1, &all).await.is_empty());
        assert!(tick(&mut a, 1, &without_c).await.is_empty());
        assert!(tick(&mut a, 14, &without_c).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &without_c).await,
            vec![("fleet_node_lost", AlertState::Firing)]
        );
        assert_eq!(
            a.active()[0].summary,
            "fleet node lost: c (no heartbeat in Redis; gone from this node's view)"
        );
        assert_eq!(a.lost_nodes().len(), 1);
        assert!(tick(&mut a, 3600, &without_c).await.is_empty());
        // Back: resolves once clear for `clear_for`.
        assert!(tick(&mut a, 1, &all).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &all).await,
            vec![("fleet_node_lost", AlertState::Resolved)]
        );
        // Lost again, then forgotten by the operator.
        assert!(tick(&mut a, 1, &without_c).await.is_empty());
        assert_eq!(
            tick(&mut a, 15, &without_c).await,
            vec![("fleet_node_lost", AlertState::Firing)]
        );
        a.forget_lost_nodes();
        assert!(a.lost_nodes().is_empty());
        assert!(tick(&mut a, 1, &without_c).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &without_c).await,
            vec![("fleet_node_lost", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_node_fires_fleet_node_lagging_at_once() {
        use fleet::tests::{node, view};
        let mut a = Alerts::new(config(), "test".into());
        let mut c = node("c", 10);
        c.lagging = true;
        let lagging = fleet(view(vec![node("a", 11), node("b", 11), c], 1));
        let fine = fleet(view(vec![node("a", 11), node("b", 11), node("c", 11)], 1));
        assert!(tick(&mut a, 1, &fine).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &lagging).await,
            vec![("fleet_node_lagging", AlertState::Firing)]
        );
        assert_eq!(
            a.active()[0].summary,
            "fleet node lagging: c (daily 10, fleet has 11)"
        );
        assert!(tick(&mut a, 1, &fine).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &fine).await,
            vec![("fleet_node_lagging", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn redis_out_of_reach_for_longer_than_the_hold_fires() {
        use fleet::tests::{node, view};
        let mut a = Alerts::new(config(), "test".into()).with_fleet_config(FleetAlertConfig {
            redis_for: Duration::from_secs(20),
            ..FleetAlertConfig::default()
        });
        let lost = |ms: u64, stale: bool| {
            let mut v = view(vec![node("a", 1), node("b", 1)], 1);
            v.redis_ok = false;
            v.redis_lost_ms = Some(ms);
            v.stale = stale;
            fleet(v)
        };
        assert!(tick(&mut a, 1, &lost(2_000, false)).await.is_empty());
        assert!(tick(&mut a, 1, &lost(19_999, false)).await.is_empty());
        let events = {
            tokio::time::advance(Duration::from_secs(1)).await;
            a.evaluate(Instant::now(), SystemTime::now(), &lost(20_000, false))
        };
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].alert, events[0].state),
            ("fleet_redis_unreachable", AlertState::Firing)
        );
        assert_eq!(events[0].values["redis_lost_ms"], 20_000);
        assert_eq!(
            events[0].summary,
            "Redis unreachable for 20 s: using the last fleet view"
        );
        // Nodes kept in the last view are not lost while Redis is away.
        assert!(tick(&mut a, 60, &lost(80_000, true)).await.is_empty());
        assert!(a.active()[0].summary.contains("stale"), "{:?}", a.active());
        let back = fleet(view(vec![node("a", 1), node("b", 1)], 1));
        assert!(tick(&mut a, 1, &back).await.is_empty());
        assert_eq!(
            tick(&mut a, 30, &back).await,
            vec![("fleet_redis_unreachable", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_changes_hands_too_often_fires_fleet_lease_churn() {
        use fleet::tests::{node, view};
        let mut a = Alerts::new(config(), "test".into());
        let changes = |n| fleet(view(vec![node("a", 1)], n));
        // The first holder seen, then three changes in ten minutes: a
        // rolling restart, not churn.
        assert!(tick(&mut a, 1, &changes(1)).await.is_empty());
        for n in 2..=4 {
            assert!(tick(&mut a, 120, &changes(n)).await.is_empty());
        }
        assert_eq!(
            tick(&mut a, 120, &changes(5)).await,
            vec![("fleet_lease_churn", AlertState::Firing)]
        );
        assert!(
            a.active()[0]
                .summary
                .starts_with("upstream lease changed hands 4 times in 10 min (now a, token 5)"),
            "{:?}",
            a.active()
        );
        // The first change counted (at 121 s) leaves the window ten
        // minutes after it came.
        assert!(tick(&mut a, 239, &changes(5)).await.is_empty());
        assert!(a.active().iter().any(|x| x.alert == "fleet_lease_churn"));
        assert!(tick(&mut a, 1, &changes(5)).await.is_empty());
        assert!(tick(&mut a, 29, &changes(5)).await.is_empty());
        assert_eq!(
            tick(&mut a, 1, &changes(5)).await,
            vec![("fleet_lease_churn", AlertState::Resolved)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_fleet_the_fleet_rules_stay_quiet() {
        let mut a = Alerts::new(config(), "test".into());
        for _ in 0..5 {
            assert!(tick(&mut a, 3600, &Inputs::default()).await.is_empty());
        }
        assert!(a.lost_nodes().is_empty());
    }

    #[test]
    fn bit_rates_read_well() {
        assert_eq!(bits(12_500_000.0), "100.0 Mbit/s");
        assert_eq!(bits(125.0), "1.0 kbit/s");
    }
}
