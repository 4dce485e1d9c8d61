//! Observation: what the mirror is doing, live, and a warning before anyone
//! calls.
//!
//! The incident this project answers went unnoticed for an hour and a half
//! and unexplained forever. An [`Observer`] is fed by a [`Hook`] on every
//! exchange (bytes counted as they are sent, requests as they end), samples
//! rates once a second, keeps the last hour in ten-second buckets, and
//! serves it all as `/metrics` (Prometheus), `/status.json` and a live
//! status page on the admin listener (and, read-only, on the public one if
//! configured). Alert rules run on the same tick and post to a webhook.
//!
//! Other subsystems plug in through [`StatusSource`] (their section of the
//! page and JSON, their metrics, a headline) and a few direct feeds:
//! [`Observer::set_link_capacity`] (shaping knows the cap) and
//! [`Observer::quota_exhausted`] (limits knows when a quota runs out).
//! On a fleet node, [`Observer::attach_fleet`] adds the node's view of its
//! fleet to all three: a fleet section, fleet gauges and the fleet alerts.

use cvdmirror_exchange::body;
use cvdmirror_exchange::hooks;
use cvdmirror_sync as sync;

pub mod alerts;
pub mod class;
pub mod client;
pub mod distinct;
pub mod history;
pub mod hook;
pub mod metrics;
pub mod page;
pub mod source;
pub mod status;
pub mod sync_view;
pub mod traffic;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use cvdmirror_fleet::{Fleet, FleetView};

use crate::hooks::Hook;
use crate::sync::SyncStatus;
use crate::sync::schedule::Trigger;
use alerts::deliver::{self, Outbox, WebhookConfig};
use alerts::{AlertConfig, AlertEvent, Alerts, FleetAlertConfig, Inputs};
use class::RequestClass;
use client::ClientKey;
use history::{History, Rates, Totals};
pub use source::{Headline, Level, StatusSource};
use sync_view::SyncView;
use traffic::Traffic;

/// How often rates are sampled and alerts evaluated.
pub const TICK: Duration = Duration::from_secs(1);
/// Clients listed with their live rate.
const LIVE_ROWS: usize = 50;

/// Settings of observation (`[observe]` and `[alerts]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveConfig {
    /// Serve the read-only page and JSON on the public listener at this path.
    pub public_path: Option<String>,
    /// Whether the public view lists client addresses.
    pub public_clients: bool,
    /// Rows in the top-clients and top-files tables.
    pub top: usize,
    /// Alert thresholds.
    pub alerts: AlertConfig,
    /// Thresholds of the fleet alerts (used on a fleet node only).
    pub fleet_alerts: FleetAlertConfig,
    /// Where alerts are posted.
    pub webhook: Option<WebhookConfig>,
    /// This mirror's name in alerts (the host name by default).
    pub name: String,
    /// How addresses group into clients (`[limits] clients`).
    pub clients: client::Grouping,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            public_path: None,
            public_clients: false,
            top: 20,
            alerts: AlertConfig::default(),
            fleet_alerts: FleetAlertConfig::default(),
            webhook: None,
            name: "cvdmirror".into(),
            clients: client::Grouping::default(),
        }
    }
}

/// One client's live rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    /// Who.
    pub client: ClientKey,
    /// Bytes per second over the last tick.
    pub bytes_per_s: f64,
    /// Transfers running.
    pub transfers: u64,
}

/// Everything observed, shared by the hook, the sampler and the admin API.
pub struct Observer {
    config: ObserveConfig,
    traffic: Traffic,
    history: Mutex<History>,
    live: Mutex<(Option<Instant>, Vec<LiveRow>)>,
    sources: RwLock<Vec<Arc<dyn StatusSource>>>,
    registry: Mutex<Registry>,
    /// Bytes/s from shaping; 0 = not provided.
    link_capacity: AtomicU64,
    connections: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
    sync: OnceLock<Arc<SyncView>>,
    fleet: OnceLock<FleetViews>,
    alerts: Mutex<Alerts>,
    outbox: Outbox,
    pending: Mutex<Option<mpsc::Receiver<AlertEvent>>>,
    started: SystemTime,
}

use cvdmirror_formats::mutex::lock;

/// Hands out a fleet's latest view without waiting.
type FleetViews = Box<dyn Fn() -> Arc<FleetView> + Send + Sync>;

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer with `config`; start its tasks with [`Observer::start`].
    pub fn new(config: ObserveConfig) -> Arc<Self> {
        let (outbox, pending) = deliver::outbox();
        Arc::new_cyclic(|weak| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(metrics::ObserverCollector::new(weak.clone())));
            Observer {
                alerts: Mutex::new(
                    Alerts::new(config.alerts.clone(), config.name.clone())
                        .with_fleet_config(config.fleet_alerts.clone()),
                ),
                traffic: Traffic::with_grouping(config.clients),
                config,

                history: Mutex::default(),
                live: Mutex::default(),
                sources: RwLock::default(),
                registry: Mutex::new(registry),
                link_capacity: AtomicU64::new(0),
                connections: OnceLock::new(),
                sync: OnceLock::new(),
                fleet: OnceLock::new(),
                outbox,
                pending: Mutex::new(Some(pending)),
                started: SystemTime::now(),
            }
        })
    }

    /// The hook to add to the server's [`Hooks`](crate::hooks::Hooks).
    pub fn hook(self: &Arc<Self>) -> Arc<dyn Hook> {
        Arc::new(hook::ObserveHook::new(Arc::clone(self)))
    }

    /// Adds a source: its section appears on the page and in the JSON, its
    /// metrics (registered now, prefixed `cvdmirror_<name>_`) in `/metrics`.
    pub fn add_source(&self, source: Arc<dyn StatusSource>) {
        {
            let mut registry = lock(&self.registry);
            let prefixed =
                registry.sub_registry_with_prefix(format!("cvdmirror_{}", source.name()));
            source.register_metrics(prefixed);
        }
        self.sources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(source);
    }

    /// The link capacity in bytes/s as shaping enforces it (`None`: fall
    /// back to `[alerts] link_capacity`).
    pub fn set_link_capacity(&self, bytes_per_second: Option<u64>) {
        self.link_capacity
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// The capacity alerts and the headline use now, bytes/s.
    pub fn link_capacity(&self) -> Option<u64> {
        match self.link_capacity.load(Ordering::Relaxed) {
            0 => self.config.alerts.link_capacity,
            cap => Some(cap),
        }
    }

    /// Raises (or prolongs) the `quota_exhausted` alert; `subject` says
    /// whose quota, e.g. `"site default: 50 GB/day"`.
    pub fn quota_exhausted(&self, subject: impl Into<String>) {
        lock(&self.alerts).quota_exhausted(Instant::now(), subject.into());
    }

    /// Where open client connections are counted (the server, once built).
    pub fn set_connections(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.connections.set(Box::new(count));
    }

    /// Follows the sync engine (call before [`Observer::start`]).
    pub fn attach_sync(&self, status: watch::Receiver<SyncStatus>, trigger: Arc<Trigger>) {
        let _ = self.sync.set(Arc::new(SyncView::new(status, trigger)));
    }

    /// Follows this node's fleet: its view becomes the `fleet` section of
    /// `/status.json` and the page, the `cvdmirror_fleet_*` metrics and the
    /// input of the fleet alerts. Before or after [`Observer::start`];
    /// only the first fleet attached counts.
    pub fn attach_fleet(&self, fleet: Fleet) {
        self.attach_fleet_view(move || fleet.view());
    }

    /// Follows a fleet through `view`, which must hand out its latest view
    /// without waiting ([`Fleet::view`] does): what
    /// [`attach_fleet`](Self::attach_fleet) does, open to views built by
    /// hand (tests, a fleet seen from elsewhere).
    pub fn attach_fleet_view(&self, view: impl Fn() -> Arc<FleetView> + Send + Sync + 'static) {
        let _ = self.fleet.set(Box::new(view));
    }

    /// This node's latest view of its fleet, on a fleet node.
    pub fn fleet(&self) -> Option<Arc<FleetView>> {
        self.fleet.get().map(|view| view())
    }

    /// Fleet nodes that left this node's view and have not come back (name,
    /// Unix time they were first missed).
    pub fn lost_fleet_nodes(&self) -> Vec<(String, u64)> {
        lock(&self.alerts).lost_nodes()
    }

    /// Starts the sampler, alert delivery and the sync follower.
    pub fn start(self: &Arc<Self>, shutdown: &CancellationToken) {
        if let Some(events) = lock(&self.pending).take() {
            tokio::spawn(deliver::run(
                events,
                self.config.webhook.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(sync) = self.sync.get() {
            let sync = Arc::clone(sync);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = sync.follow() => {}
                }
            });
        }
        // The first sample is the baseline of every rate: take it now, before
        // the server announces itself, so no early transfer escapes the rates.
        self.tick(Instant::now(), SystemTime::now());
        let observer = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + TICK, TICK);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    now = ticks.tick() => observer.tick(now, SystemTime::now()),
                }
            }
        });
    }

    /// One sampler tick at `now`: flush, rates, history, alerts.
    pub fn tick(&self, now: Instant, wall: SystemTime) {
        self.traffic.flush();
        let mut totals = Totals {
            cdiff_not_found: self.traffic.cdiff_not_found(),
            ..Totals::default()
        };
        for (site, counters) in self.traffic.sites() {
            let (bytes, requests) = counters.load();
            for i in 0..RequestClass::COUNT {
                totals.bytes[i] += bytes[i];
                totals.requests[i] += requests[i];
            }
            totals.site_bytes.insert(site, bytes.iter().sum());
        }
        let fleet = self.fleet().map(|view| view.snapshot());
        let inputs = {
            let mut history = lock(&self.history);
            history.record(now, wall, totals);
            let minute = history.window(now, Duration::from_secs(60));
            let (buckets, older) = history.before(Duration::from_secs(60));
            let herd =
                |b: &history::Bucket| b.requests[RequestClass::Cvd.index()] + b.cdiff_not_found;
            // A baseline needs at least five minutes of history.
            let baseline = (buckets >= 30).then(|| herd(&older) as f64 * 6.0 / buckets as f64);
            let (behind, sync_failures, signatures, rejections) =
                self.sync.get().map_or_else(Default::default, |s| {
                    let status = s.status.borrow();
                    let behind = status.behind().values().copied().max().unwrap_or(0);
                    let signatures = status.signatures.clone();
                    let rejections = alerts::signatures::pass_rejections(&status);
                    drop(status);
                    (
                        behind,
                        s.tally().consecutive_failures,
                        signatures,
                        rejections,
                    )
                });
            Inputs {
                link_rate: history.rates().total,
                link_capacity: match self.link_capacity.load(Ordering::Relaxed) {
                    0 => None,
                    cap => Some(cap),
                },
                herd_last_minute: herd(&minute),
                herd_baseline: baseline,
                behind,
                sync_failures,
                signatures,
                rejections,
                fleet,
            }
        };
        self.update_live(now);
        let events = lock(&self.alerts).evaluate(now, wall, &inputs);
        for event in events {
            self.outbox.send(event);
        }
    }

    fn update_live(&self, now: Instant) {
        let clients = self.traffic.take_live_clients();
        let mut live = lock(&self.live);
        let secs = live
            .0
            .replace(now)
            .map_or(TICK.as_secs_f64(), |then| {
                now.duration_since(then).as_secs_f64()
            })
            .max(0.001);
        let mut rows: Vec<LiveRow> = clients
            .into_iter()
            .map(|(client, l)| LiveRow {
                client,
                bytes_per_s: l.bytes as f64 / secs,
                transfers: l.transfers,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.bytes_per_s
                .total_cmp(&a.bytes_per_s)
                .then(b.transfers.cmp(&a.transfers))
        });
        rows.truncate(LIVE_ROWS);
        live.1 = rows;
    }

    /// Starts the status page's counters, tables and history afresh, and
    /// forgets fleet nodes that left the view (removed on purpose).
    pub fn reset(&self) {
        self.traffic.reset();
        lock(&self.history).clear();
        lock(&self.live).1.clear();
        lock(&self.alerts).forget_lost_nodes();
        tracing::info!("observation counters reset through the admin API");
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let registry = lock(&self.registry);
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// `/status.json` as text; `public` hides what the public must not see.
    pub fn status_json_text(&self, public: bool) -> String {
        let mut text = status::build(self, public).to_string();
        text.push('\n');
        text
    }

    /// The traffic counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Rates of the last tick.
    pub fn rates(&self) -> Rates {
        lock(&self.history).rates().clone()
    }

    /// Open client connections, if the server is attached.
    pub fn connections(&self) -> Option<usize> {
        self.connections.get().map(|f| f())
    }

    /// The sync engine, if one runs.
    pub fn sync(&self) -> Option<&SyncView> {
        self.sync.get().map(AsRef::as_ref)
    }

    /// Every alert rule and whether it fires (the fleet rules on a fleet
    /// node only).
    pub fn alert_names(&self) -> Vec<(&'static str, bool)> {
        let active = lock(&self.alerts).active();
        let fleet = self.fleet.get().is_some();
        alerts::NAMES
            .into_iter()
            .filter(|name| fleet || !alerts::FLEET_NAMES.contains(name))
            .map(|name| (name, active.iter().any(|a| a.alert == name)))
            .collect()
    }

    /// The public path, when the public page is on.
    pub fn public_path(&self) -> Option<&str> {
        self.config.public_path.as_deref()
    }

    fn config(&self) -> &ObserveConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sync::signatures::{DbSignatures, Rejection, Signer};
    use crate::sync::state::PassRecord;

    fn release() -> Signer {
        Signer {
            signer: "ClamAV_datafiles_release".into(),
            issuer: "Cisco ClamAV CA".into(),
            fingerprint: "6b3d4e1b9a0c7f2100112233445566778899aabbccddeeff0011223344556677".into(),
        }
    }

    /// An observer following a sync engine whose status is `tx`.
    fn observed() -> (Arc<Observer>, watch::Sender<SyncStatus>) {
        let observer = Observer::new(ObserveConfig {
            alerts: AlertConfig {
                clear_for: Duration::ZERO,
                ..AlertConfig::default()
            },
            ..ObserveConfig::default()
        });
        let (tx, rx) = watch::channel(SyncStatus::default());
        observer.attach_sync(rx, Arc::new(Trigger::default()));
        (observer, tx)
    }

    fn status(observer: &Observer) -> serde_json::Value {
        serde_json::from_str(&observer.status_json_text(false)).unwrap()
    }

    fn firing(observer: &Observer, name: &str) -> bool {
        observer
            .alert_names()
            .into_iter()
            .any(|(n, on)| n == name && on)
    }

    #[tokio::test(start_paused = true)]
    async fn signatures_and_rejections_reach_status_metrics_and_alerts() {
        let (observer, tx) = observed();
        tx.send_modify(|s| {
            s.published = BTreeMap::from([("daily".into(), 27780), ("main".into(), 62)]);
            s.signatures = BTreeMap::from([
                (
                    "daily".into(),
                    DbSignatures {
                        version: 27780,
                        legacy: true,
                        sign: Some(release()),
                        sign_missing_since: None,
                    },
                ),
                (
                    "main".into(),
                    DbSignatures {
                        version: 62,
                        legacy: true,
                        sign: None,
                        sign_missing_since: Some(1_764_000_000),
                    },
                ),
            ]);
            for (at, file) in [
                (1_764_288_000, "daily.cvd"),
                (1_764_288_060, "daily-27781.cdiff.sign"),
            ] {
                s.rejections.push(Rejection {
                    at,
                    file: file.into(),
                    reason: "invalid signature: line 1: certificate has expired".into(),
                });
            }
            s.unusable_signs.push(Rejection {
                at: 1_764_288_120,
                file: "daily-27782.cdiff.sign".into(),
                reason: "signature file unusable: line 1: not base64".into(),
            });
        });
        let sync = observer.sync().unwrap();
        sync.note(&tx.borrow());
        observer.tick(Instant::now(), SystemTime::now());

        let j = status(&observer);
        let daily = &j["sync"]["signatures"]["daily"];
        assert_eq!(daily["kinds"], "both");
        assert_eq!(daily["version"], 27780);
        assert_eq!(daily["sign"]["signer"], "ClamAV_datafiles_release");
        assert_eq!(daily["sign"]["issuer"], "Cisco ClamAV CA");
        assert_eq!(daily["sign"]["fingerprint_short"], "6b3d4e1b9a0c7f21");
        assert_eq!(daily["sign_missing_since"], serde_json::Value::Null);
        let main = &j["sync"]["signatures"]["main"];
        assert_eq!(
            (&main["kinds"], &main["sign"]),
            (&"legacy".into(), &serde_json::Value::Null)
        );
        assert_eq!(main["sign_missing_since"], 1_764_000_000);
        let rejections = j["sync"]["rejections"].as_array().unwrap();
        let files: Vec<&str> = rejections
            .iter()
            .map(|r| r["file"].as_str().unwrap())
            .collect();
        assert_eq!(
            files,
            ["daily-27781.cdiff.sign", "daily.cvd"],
            "newest first"
        );
        assert_eq!(
            rejections[0]["reason"],
            "invalid signature: line 1: certificate has expired"
        );
        assert_eq!(j["sync"]["rejections_total"], 2);
        let unusable = &j["sync"]["unusable_signs"][0];
        assert_eq!(unusable["file"], "daily-27782.cdiff.sign");
        assert_eq!(
            unusable["reason"],
            "signature file unusable: line 1: not base64"
        );

        let m = observer.metrics_text();
        for line in [
            "cvdmirror_database_signature{database=\"daily\",kind=\"legacy\"} 1",
            "cvdmirror_database_signature{database=\"daily\",kind=\"sign\"} 1",
            "cvdmirror_database_signature{database=\"main\",kind=\"sign\"} 0",
            "cvdmirror_database_sign_missing_since_timestamp_seconds{database=\"daily\"} 0",
            "cvdmirror_database_sign_missing_since_timestamp_seconds{database=\"main\"} 1764000000",
            "cvdmirror_database_signer_info{database=\"daily\",signer=\"ClamAV_datafiles_release\",issuer=\"Cisco ClamAV CA\",fingerprint=\"6b3d4e1b9a0c7f2100112233445566778899aabbccddeeff0011223344556677\"} 1",
            "cvdmirror_sync_rejections_total{kind=\"cvd\"} 1",
            "cvdmirror_sync_rejections_total{kind=\"sign\"} 1",
            "cvdmirror_sync_last_rejection_timestamp_seconds 1764288060.0",
            "cvdmirror_alert_firing{alert=\"upstream_rejected\"} 1",
            "cvdmirror_alert_firing{alert=\"sign_missing\"} 0",
        ] {
            assert!(m.lines().any(|l| l == line), "no {line} in\n{m}");
        }
        assert!(
            !m.contains("database=\"main\",signer="),
            "main has no signer"
        );
        assert!(firing(&observer, "upstream_rejected"));
        assert!(!firing(&observer, "sign_missing"), "main never had a .sign");

        // A pass that refuses nothing; then daily's next version comes
        // without a `.sign`, and later with one by another certificate.
        tx.send_modify(|s| {
            s.last_pass = Some(PassRecord {
                started: 1_764_289_000,
                finished: 1_764_289_010,
                ok: true,
                error: None,
            });
            s.signatures.insert(
                "daily".into(),
                DbSignatures {
                    version: 27781,
                    legacy: true,
                    sign: None,
                    sign_missing_since: Some(1_764_289_005),
                },
            );
        });
        tokio::time::advance(TICK).await;
        observer.tick(Instant::now(), SystemTime::now());
        assert!(!firing(&observer, "upstream_rejected"));
        assert!(firing(&observer, "sign_missing"));
        assert_eq!(
            status(&observer)["sync"]["signatures"]["daily"]["kinds"],
            "legacy"
        );
        assert!(
            status(&observer)["headline"]["text"]
                .as_str()
                .unwrap()
                .contains("upstream stopped providing .sign files: published without one: daily 27781 (last signed 27780)"),
        );

        tx.send_modify(|s| {
            s.signatures.insert(
                "daily".into(),
                DbSignatures {
                    version: 27782,
                    legacy: true,
                    sign: Some(Signer {
                        fingerprint: "ffee".into(),
                        ..release()
                    }),
                    sign_missing_since: None,
                },
            );
        });
        tokio::time::advance(TICK).await;
        observer.tick(Instant::now(), SystemTime::now());
        assert!(!firing(&observer, "sign_missing"));
        assert!(firing(&observer, "signer_changed"));
    }

    mod fleet {
        use super::*;
        use cvdmirror_fleet::{
            FleetNode, LeaseHolder, LeaseView, LinkLoad, NodeReport, SyncHealth, SyncState,
        };

        fn node(name: &str, daily: u32, capacity: Option<u64>, load: u64) -> FleetNode {
            FleetNode {
                report: NodeReport {
                    node: name.to_owned(),
                    public_url: format!("https://{name}.example.org"),
                    versions: BTreeMap::from([
                        ("daily".to_owned(), daily),
                        ("main".to_owned(), 62),
                    ]),
                    link: LinkLoad { capacity, load },
                    ..NodeReport::default()
                },
                age: Duration::from_millis(400),
                fresh: true,
                lagging: false,
            }
        }

        /// Node a's view: a (holder, token 7), b, and c lagging with a
        /// failing sync.
        fn three() -> FleetView {
            let mut c = node("c", 27479, None, 0);
            c.lagging = true;
            c.report.sync = SyncState {
                health: SyncHealth::Failing {
                    reason: "upstream 503".into(),
                },
                last_success: Some(1_764_000_000),
            };
            FleetView {
                node: "a".into(),
                nodes: vec![
                    node("a", 27480, Some(12_500_000), 8_100_000),
                    node("b", 27480, Some(12_500_000), 100),
                    c,
                ],
                lease: LeaseView {
                    holder: Some(LeaseHolder {
                        node: "a".into(),
                        token: 7,
                    }),
                    mine_until: Some(Instant::now() + Duration::from_secs(3600)),
                    changes: 1,
                },
                redis_ok: true,
                stale_since: None,
                stale_after: Duration::from_secs(30),
                computed_at: Instant::now(),
            }
        }

        /// An observer following a fleet whose view is in the returned slot.
        fn observed() -> (Arc<Observer>, Arc<Mutex<Arc<FleetView>>>) {
            let observer = Observer::new(ObserveConfig {
                alerts: AlertConfig {
                    clear_for: Duration::ZERO,
                    ..AlertConfig::default()
                },
                ..ObserveConfig::default()
            });
            let slot = Arc::new(Mutex::new(Arc::new(three())));
            let views = Arc::clone(&slot);
            observer.attach_fleet_view(move || Arc::clone(&lock(&views)));
            (observer, slot)
        }

        fn lines(observer: &Observer) -> String {
            observer.metrics_text()
        }

        fn has(m: &str, line: &str) -> bool {
            m.lines().any(|l| l == line)
        }

        #[tokio::test(start_paused = true)]
        async fn the_fleet_reaches_status_metrics_and_alerts() {
            let (observer, slot) = observed();
            observer.tick(Instant::now(), SystemTime::now());

            let j = status(&observer);
            let f = &j["fleet"];
            assert_eq!(f["node"], "a");
            assert_eq!(f["redis_ok"], true);
            assert_eq!(f["lease"]["holder"], "a");
            assert_eq!(f["lease"]["token"], 7);
            assert_eq!(f["lease"]["mine"], true);
            assert_eq!(f["consistent_versions"]["daily"], 27480);
            assert_eq!(f["nodes"].as_array().unwrap().len(), 3);
            assert_eq!(f["nodes"][0]["link"]["load"], 8_100_000);
            assert_eq!(f["nodes"][2]["lagging"], true);
            assert_eq!(f["nodes"][2]["sync"]["health"]["reason"], "upstream 503");
            assert_eq!(f["lost"], serde_json::json!([]));
            assert!(firing(&observer, "fleet_node_lagging"));
            assert!(
                j["headline"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("fleet node lagging: c (daily 27479, fleet has 27480)"),
                "{}",
                j["headline"]
            );

            let m = lines(&observer);
            for line in [
                "cvdmirror_fleet_nodes 3.0",
                "cvdmirror_fleet_node_up{node=\"a\"} 1",
                "cvdmirror_fleet_node_up{node=\"c\"} 1",
                "cvdmirror_fleet_node_lagging{node=\"b\"} 0",
                "cvdmirror_fleet_node_lagging{node=\"c\"} 1",
                "cvdmirror_fleet_node_link_load_bytes_per_second{node=\"a\"} 8100000",
                "cvdmirror_fleet_node_link_capacity_bytes_per_second{node=\"a\"} 12500000",
                "cvdmirror_fleet_consistent_version{database=\"daily\"} 27480",
                "cvdmirror_fleet_consistent_version{database=\"main\"} 62",
                "cvdmirror_fleet_redis_up 1.0",
                "cvdmirror_fleet_lease_holder{node=\"a\"} 1",
                "cvdmirror_fleet_lease_holder{node=\"b\"} 0",
                "cvdmirror_fleet_lease_changes_total 1",
                "cvdmirror_alert_firing{alert=\"fleet_node_lagging\"} 1",
                "cvdmirror_alert_firing{alert=\"fleet_node_lost\"} 0",
            ] {
                assert!(has(&m, line), "no {line} in\n{m}");
            }
            assert!(
                !m.contains("capacity_bytes_per_second{node=\"c\"}"),
                "c knows no capacity"
            );

            // c leaves the view and Redis goes away: c is lost once the
            // hold has passed, Redis unreachable once its hold has.
            {
                let mut view = three();
                view.nodes.pop();
                view.redis_ok = false;
                view.stale_since = Some(Instant::now());
                *lock(&slot) = Arc::new(view);
            }
            observer.tick(Instant::now(), SystemTime::now());
            assert_eq!(status(&observer)["fleet"]["lost"][0]["node"], "c");
            assert!(!firing(&observer, "fleet_node_lost"), "not before the hold");
            tokio::time::advance(Duration::from_secs(30)).await;
            observer.tick(Instant::now(), SystemTime::now());
            assert!(firing(&observer, "fleet_node_lost"));
            assert!(firing(&observer, "fleet_redis_unreachable"));
            assert!(!firing(&observer, "fleet_node_lagging"), "c is gone");
            let m = lines(&observer);
            for line in [
                "cvdmirror_fleet_nodes 2.0",
                "cvdmirror_fleet_node_up{node=\"c\"} 0",
                "cvdmirror_fleet_redis_up 0.0",
                "cvdmirror_alert_firing{alert=\"fleet_node_lost\"} 1",
                "cvdmirror_alert_firing{alert=\"fleet_redis_unreachable\"} 1",
            ] {
                assert!(has(&m, line), "no {line} in\n{m}");
            }
            let j = status(&observer);
            assert_eq!(j["fleet"]["redis_ok"], false);
            assert_eq!(j["fleet"]["stale"], false, "stale after 30 s, not at 30 s");
            assert_eq!(j["fleet"]["redis_lost_ms"], 30_000);

            // The operator removed c on purpose.
            observer.reset();
            tokio::time::advance(TICK).await;
            observer.tick(Instant::now(), SystemTime::now());
            assert!(!firing(&observer, "fleet_node_lost"));
            assert_eq!(status(&observer)["fleet"]["lost"], serde_json::json!([]));
            assert!(!lines(&observer).contains("cvdmirror_fleet_node_up{node=\"c\"}"));
        }

        #[test]
        fn without_a_fleet_there_is_no_fleet_anywhere() {
            let observer = Observer::new(ObserveConfig::default());
            observer.tick(Instant::now(), SystemTime::now());
            let j = status(&observer);
            assert!(j.get("fleet").is_none(), "{j}");
            let m = observer.metrics_text();
            assert!(!m.contains("cvdmirror_fleet_"), "{m}");
            assert!(!m.contains("fleet_node_lost"), "{m}");
            assert!(
                observer
                    .alert_names()
                    .iter()
                    .all(|(n, _)| !n.starts_with("fleet_"))
            );
        }
    }
}
