//! Traffic control: the hook that puts admission ([`crate::limits`]) and
//! pacing ([`crate::shape`]) on every response.
//!
//! For each exchange, in order: the client is keyed (IPv4 address, IPv6
//! /64, after trusted proxies); the response is classified (header checks
//! and cdiffs are `small`, whole CVDs `bulk`); the limits decide whether it
//! may be served at all (request rate, connections, quotas, and the herd
//! gate, which admits a whole-CVD download only while the class can still
//! give every admitted one its minimum rate); the body is paced by the
//! shaper under the link, site, class and client caps and charged to the
//! quotas as it is sent (and slowed if a `slow` quota runs out under it);
//! and when the exchange ends, its admission slot is released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Method, Response};
use http_body::Body;
use tokio::time::{Duration, Instant};

use crate::body::{OnData, ResponseBody};
use crate::hooks::{Completion, Hook};
use crate::limits::{
    self, AdmissionGuard, ClientKey, Decision, Limits, LimitsConfig, LimitsConfigError, Planned,
    TransferVerdict,
};
use crate::observe::{Headline, Level, StatusSource};
use crate::pipeline::{Exchange, FileKind};
use crate::shape::{self, FlowRate, FlowSpec, Rate, ShapeConfig, ShapedBody, Shaper};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Admission and pacing for every response.
pub struct Control {
    shaper: Shaper,
    // Shared with bodies in flight, which charge whatever limits are in
    // force when their bytes leave, not those they started under.
    limits: Arc<ArcSwap<Limits>>,
    client_rate: ArcSwap<Option<Rate>>,
    /// False when no cap and no limit is configured: then every response
    /// passes untouched and costs one atomic load.
    active: AtomicBool,
    /// Admission decisions, by outcome and refusing limit.
    decisions: Family<DecisionLabels, Counter>,
    /// Told when a quota refuses a request (the quota-exhausted alert).
    on_quota_exhausted: ArcSwap<Option<QuotaListener>>,
}

/// Called with e.g. `client 192.0.2.7/32 on default` when a quota refuses.
pub type QuotaListener = Box<dyn Fn(String) + Send + Sync>;

/// Labels of `cvdmirror_traffic_control_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    limit: &'static str,
}

/// What `admit` leaves for `wrap_body` and `complete`.
#[derive(Clone)]
struct Admission {
    client: ClientKey,
    class: Arc<str>,
    slow_to: Option<Rate>,
    /// Judged as a bulk transfer: only those are held to the quotas.
    bulk: bool,
    guard: Arc<Mutex<Option<AdmissionGuard>>>,
}

impl Control {
    /// Control with `shaper` (whose pacer the caller runs) and `limits`.
    pub fn new(shaper: Shaper, limits: Arc<Limits>, shape: &ShapeConfig) -> Self {
        let active = AtomicBool::new(is_active(shape, limits.config()));
        Self {
            shaper,
            limits: Arc::new(ArcSwap::new(limits)),
            client_rate: ArcSwap::from_pointee(shape.client_rate),
            active,
            decisions: Family::default(),
            on_quota_exhausted: ArcSwap::from_pointee(None),
        }
    }

    /// Calls `listener` whenever a transfer quota refuses a request.
    pub fn on_quota_exhausted(&self, listener: QuotaListener) {
        self.on_quota_exhausted.store(Arc::new(Some(listener)));
    }

    /// Whether anything is configured that needs the hook.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The shaper, for stats and the link guard.
    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }

    /// The limits in force, for stats and persistence.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// Applies new limits and shaping settings (config reload), continuing
    /// the live state (see [`Limits::reconfigured`]); transfers in flight
    /// keep their slots. The shaper itself is reconfigured by the caller.
    pub fn reconfigure(
        &self,
        config: LimitsConfig,
        shape: &ShapeConfig,
    ) -> Result<(), LimitsConfigError> {
        let limits = Arc::new(self.limits.load().reconfigured(config)?);
        self.active
            .store(is_active(shape, limits.config()), Ordering::Relaxed);
        self.limits.store(limits);
        self.client_rate.store(Arc::new(shape.client_rate));
        Ok(())
    }
}

impl Hook for Control {
    fn admit(
        &self,
        exchange: &mut Exchange,
        planned: &mut Response<ResponseBody>,
    ) -> Option<Response<ResponseBody>> {
        if !self.is_active() {
            // Nothing configured: no admission state, and `wrap_body`
            // leaves the body alone.
            return None;
        }
        let limits = self.limits.load();
        let client = limits.config().clients.key(exchange.client);
        let body_len = if exchange.method == Method::HEAD {
            0
        } else {
            planned.body().size_hint().exact().unwrap_or(0)
        };
        let kind = exchange.file.as_ref().map_or(FileKind::Other, |f| f.kind);
        let class = self.shaper.classify(exchange.target.path(), kind, body_len);
        let path_and_query = exchange.target.path_and_query().map_or("/", |p| p.as_str());
        let request = Planned {
            site: &exchange.site,
            client,
            path_and_query,
            status: planned.status(),
            is_head: exchange.method == Method::HEAD,
            body_len,
        };
        let available = || {
            self.shaper
                .class_load(&exchange.site, &class)
                .available
                .map_or(u64::MAX, |rate| rate as u64)
        };
        match limits.admit(&request, available) {
            Decision::Serve(admitted) => {
                let decision = if admitted.slow_to.is_some() {
                    "slowed"
                } else {
                    "admitted"
                };
                self.decisions
                    .get_or_create(&DecisionLabels {
                        decision,
                        limit: "-",
                    })
                    .inc();
                planned.headers_mut().extend(admitted.headers);
                let slow_to = admitted.slow_to.and_then(Rate::from_bytes_per_sec);
                exchange.extensions.insert(Admission {
                    client,
                    class,
                    slow_to,
                    bulk: admitted.bulk,
                    guard: Arc::new(Mutex::new(Some(admitted.guard))),
                });
                None
            }
            Decision::Refuse(refusal) => {
                let limit = refusal.limit.as_str();
                self.decisions
                    .get_or_create(&DecisionLabels {
                        decision: "refused",
                        limit,
                    })
                    .inc();
                if matches!(
                    refusal.limit,
                    limits::LimitKind::ClientQuota | limits::LimitKind::SiteQuota
                ) && let Some(listener) = &**self.on_quota_exhausted.load()
                {
                    listener(format!("{limit} of {client} on {}", exchange.site));
                }
                tracing::debug!(client = %client, limit = ?refusal.limit, "request refused by a limit");
                Some(refusal.into_response())
            }
        }
    }

    fn wrap_body(&self, exchange: &Arc<Exchange>, body: ResponseBody) -> ResponseBody {
        let Some(admission) = exchange.extensions.get::<Admission>() else {
            // Refusals are a few bytes and must not wait behind anything.
            return body;
        };
        if body.size_hint().exact() == Some(0) {
            // `304`s, `HEAD`s and empty files have nothing to pace or charge.
            return body;
        }
        let mut spec = FlowSpec::new(
            Arc::clone(&exchange.site),
            Arc::clone(&admission.class),
            shape::ClientKey::new(admission.client),
        );
        let base = Rate::min_cap(**self.client_rate.load(), admission.slow_to);
        if let Some(rate) = base {
            spec = spec.with_client_rate(rate);
        }
        let flow = self.shaper.register(&spec);
        let mut watch = QuotaWatch {
            limits: Arc::clone(&self.limits),
            site: Arc::clone(&exchange.site),
            client: admission.client,
            rate: flow.rate_handle(),
            decisions: self.decisions.clone(),
            bulk: admission.bulk,
            base,
            applied: base,
            unchecked: 0,
            checked_at: Instant::now(),
        };
        let shaped = ShapedBody::new(body, flow);
        ResponseBody::boxed(OnData::new(shaped, move |n| watch.sent(n as u64)))
    }

    fn complete(&self, exchange: &Exchange, _completion: &Completion) {
        if let Some(admission) = exchange.extensions.get::<Admission>() {
            drop(limits::lock(&admission.guard).take());
        }
    }
}

/// Re-check a running transfer's quotas after this many bytes...
const CHECK_BYTES: u64 = 256 * 1024;
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
struct QuotaWatch {
    // Shared with the hook: bytes are charged to, and checked against,
    // whatever limits are in force when they leave, so a reload
    // mid-transfer keeps counting.
    limits: Arc<ArcSwap<Limits>>,
    site: Arc<str>,
    client: ClientKey,
    rate: FlowRate,
    /// Where a running transfer's slowing is counted.
    decisions: Family<DecisionLabels, Counter>,
    /// Whether the quotas apply (as at admission, only to bulk transfers).
    bulk: bool,
    /// The client cap the transfer was admitted with.
    base: Option<Rate>,
    /// The client cap in force.
    applied: Option<Rate>,
    /// Bytes charged since the last check.
    unchecked: u64,
    checked_at: Instant,
}

impl QuotaWatch {
    /// Charges `bytes` just handed to the connection; re-checks the quotas
    /// when due.
    fn sent(&mut self, bytes: u64) {
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

/// Whether any cap or limit is configured.
fn is_active(shape: &ShapeConfig, limits: &LimitsConfig) -> bool {
    let shaping = shape.link_rate.is_some()
        || shape.client_rate.is_some()
        || shape.link_guard.is_some()
        || shape.sites.values().any(|s| s.rate.is_some())
        || shape
            .classes
            .iter()
            .any(|c| c.rate.is_some() || c.client_rate.is_some());
    let admission = limits.requests.is_some()
        || limits.client_connections.is_some()
        || limits.site_connections.is_some()
        || limits.site_quota.is_some()
        || limits.client_quota.is_some()
        || limits.herd.is_some();
    shaping || admission
}

/// The herd gate's waiting list, read at scrape time from the limits in
/// force (nothing while no gate is configured).
#[derive(Debug)]
struct HerdCollector {
    limits: Arc<ArcSwap<Limits>>,
}

impl Collector for HerdCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(herd) = self.limits.load().herd_stats() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "herd_active_transfers",
                "Whole-database downloads the herd gate has admitted that are still running.",
                herd.active,
            ),
            (
                "herd_capacity_transfers",
                "Downloads the gate admits at the class's available rate (available / bulk_min_rate).",
                herd.capacity,
            ),
            (
                "herd_open",
                "1 while the herd gate would admit one more download, else 0.",
                u64::from(herd.open),
            ),
            (
                "herd_waiting_clients",
                "Clients the herd gate refused whose Retry-After appointment is still ahead.",
                herd.waiting,
            ),
            (
                "herd_queue_seconds",
                "Seconds until the latest appointment the herd gate handed out (0: nobody waits).",
                herd.queue_secs,
            ),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// Traffic control on the status page and in metrics: the shaper's tree
/// (link, sites, classes, clients: rates, caps, waiting flows) and the
/// limits (herd gate, quotas, request rates, connection slots).
impl StatusSource for Control {
    fn name(&self) -> &str {
        "traffic_control"
    }

    fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let limits = self.limits().status();
        let snapshot = self.shaper.snapshot();
        let cap = |c: Option<Rate>| c.map(|r| r.bytes_per_sec());
        // Flat fields and arrays of rows: the page renders them as cards and tables.
        let mut classes = Vec::new();
        let mut clients = Vec::new();
        for site in &snapshot.sites {
            for class in &site.classes {
                classes.push(json!({
                    "site": site.node.name, "class": class.node.name, "priority": class.priority,
                    "now_bytes_per_s": class.node.rate, "cap_bytes_per_s": cap(class.node.cap),
                    "flows": class.node.active_flows, "waiting": class.node.waiting_flows, "sent_bytes": class.node.bytes,
                }));
                for client in &class.clients {
                    clients.push(json!({
                        "client": client.name, "class": class.node.name, "now_bytes_per_s": client.rate,
                        "cap_bytes_per_s": cap(client.cap), "flows": client.active_flows, "waiting": client.waiting_flows,
                    }));
                }
            }
        }
        clients.sort_by(|a, b| {
            b["now_bytes_per_s"]
                .as_f64()
                .partial_cmp(&a["now_bytes_per_s"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        clients.truncate(20);
        let herd = limits.herd.as_ref().map_or_else(
            || "off".to_owned(),
            |h| {
                format!(
                    "{} ({} running of {} allowed; {} admitted, {} refused; {} waiting, queue {} s)",
                    if h.open { "open" } else { "closed" },
                    h.active,
                    h.capacity,
                    h.admitted,
                    h.denied,
                    h.waiting,
                    h.queue_secs
                )
            },
        );
        let refused: Vec<_> = limits
            .refused
            .iter()
            .map(|(limit, n)| json!({ "limit": limit, "refused": n }))
            .collect();
        let quotas: Vec<_> = limits
            .top_client_quotas
            .iter()
            .map(|(site, client, q)| {
                json!({ "site": site, "client": client, "used_bytes": q.used, "allowed_now_bytes": q.allowed_now, "limit_bytes": q.limit })
            })
            .collect();
        json!({
            "active": self.is_active(),
            "link_cap_bytes_per_s": cap(snapshot.link.cap),
            "link_now_bytes_per_s": snapshot.link.rate,
            "link_guard_cap_bytes_per_s": cap(snapshot.guard_link_rate),
            "waiting_flows": self.shaper.waiting_flows(),
            "herd_gate": herd,
            "classes": classes,
            "busiest_clients": clients,
            "refused_by_limit": refused,
            "client_quotas": quotas,
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Admission decisions: admitted, slowed, or refused by which limit; slowed_running: a running transfer slowed by a quota that ran out",
            self.decisions.clone(),
        );
        registry.register_collector(Box::new(HerdCollector {
            limits: Arc::clone(&self.limits),
        }));
    }

    fn headline(&self) -> Option<Headline> {
        let herd = self.limits().herd_stats()?;
        (!herd.open).then(|| Headline {
            level: Level::Warn,
            text: format!(
                "herd gate closed: {} whole-database downloads running, {} refused so far, {} waiting for a slot",
                herd.active, herd.denied, herd.waiting
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{SeededRandom, TokioClock};
    use crate::observe::class::tests::exchange;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    /// The quota, and the rate its `slow` action asks for.
    const QUOTA: u64 = 1_000_000;
    const SLOW: f64 = 500_000.0;
    const FILE: usize = 3_000_000;
    const CHUNK: usize = 64 * 1024;

    fn control(on_exceed: &str) -> Control {
        #[derive(serde::Deserialize)]
        struct File {
            limits: LimitsConfig,
        }
        let text = format!(
            "[limits.client_quota]\nlimit = {QUOTA}\nperiod = \"1h\"\nslices = 1\n\
             on_exceed = {on_exceed}\n"
        );
        let config = toml::from_str::<File>(&text).unwrap().limits;
        // 2024-01-01T00:00:00Z: the hour does not end during the test.
        let clock = TokioClock::starting_at(Duration::from_secs(1_704_067_200));
        let limits =
            Limits::with_env(config, Arc::new(clock), Arc::new(SeededRandom::new(1))).unwrap();
        let shape = ShapeConfig::default();
        let shaper = Shaper::new(shape.clone()).unwrap();
        shaper.spawn_pacer(std::future::pending());
        Control::new(shaper, Arc::new(limits), &shape)
    }

    /// A body of `len` bytes in `CHUNK`s, as a file body yields them.
    fn chunked(len: usize) -> ResponseBody {
        let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(len - i * CHUNK);
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![0u8; len])))
        });
        ResponseBody::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
    }

    /// A `daily.cvd` download of `len` bytes from `peer`, admitted.
    fn admitted_download(control: &Control, peer: &str, len: usize) -> Arc<Exchange> {
        let mut head = exchange(peer, "/daily.cvd", Some(FileKind::Cvd));
        let mut planned = Response::new(ResponseBody::bytes(vec![0u8; len]));
        assert!(control.admit(&mut head, &mut planned).is_none());
        Arc::new(head)
    }

    /// Sends all of a `len`-byte body for `exchange` through the hook:
    /// bytes received and (paused-clock) time taken.
    async fn send_all(
        control: &Control,
        exchange: &Arc<Exchange>,
        len: usize,
    ) -> (usize, Duration) {
        let start = Instant::now();
        let got = control
            .wrap_body(exchange, chunked(len))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (got.len(), start.elapsed())
    }

    /// A client whose quota runs out in the middle of a download: the
    /// first megabyte goes at full speed (no cap is configured), the rest
    /// at the `slow` action's rate, measured on the paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_quota_used_up_mid_transfer_slows_the_rest() {
        let control = control("{ action = \"slow\", rate = \"4Mbit\" }");
        let first = admitted_download(&control, "192.0.2.7:50000", FILE);
        let mut body = control.wrap_body(&first, chunked(FILE));

        let start = Instant::now();
        let (mut sent, mut at_start, mut slow_from) = (0u64, 0u64, None);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            sent += data.len() as u64;
            if Instant::now() == start {
                at_start = sent;
            }
            if slow_from.is_none() && sent >= 3 * QUOTA / 2 {
                slow_from = Some((Instant::now(), sent));
            }
        }
        let end = Instant::now();
        assert_eq!(sent, FILE as u64);
        // Full speed until the quota is used up and the next check sees it.
        assert!(
            (QUOTA..=QUOTA + CHECK_BYTES + CHUNK as u64).contains(&at_start),
            "{at_start} bytes went at full speed; the quota is {QUOTA}"
        );
        let (from, from_sent) = slow_from.unwrap();
        let rate = (sent - from_sent) as f64 / (end - from).as_secs_f64();
        eprintln!(
            "quota slow mid-transfer: {at_start} B at full speed, then {rate:.0} B/s over {:?}",
            end - from
        );
        assert!(
            (rate - SLOW).abs() / SLOW <= 0.02,
            "after the quota ran out the transfer ran at {rate:.0} B/s, not {SLOW}"
        );

        // A response below the bulk threshold is never held to a quota,
        // neither at admission nor while it runs.
        let small = 900_000;
        let head = admitted_download(&control, "192.0.2.7:50001", small);
        assert_eq!(
            send_all(&control, &head, small).await,
            (small, Duration::ZERO)
        );
    }

    /// A refusing action cannot change a status already sent: the transfer
    /// is finished at its pace (here: at once, nothing caps it).
    #[tokio::test(start_paused = true)]
    async fn a_refusing_quota_used_up_mid_transfer_lets_it_finish() {
        let control = control("{ action = \"reject\" }");
        let first = admitted_download(&control, "192.0.2.7:50000", FILE);
        assert_eq!(
            send_all(&control, &first, FILE).await,
            (FILE, Duration::ZERO)
        );
        // The next whole download is refused.
        let mut again = exchange("192.0.2.7:50001", "/daily.cvd", Some(FileKind::Cvd));
        let mut planned = Response::new(ResponseBody::bytes(vec![0u8; FILE]));
        let refused = control.admit(&mut again, &mut planned);
        assert_eq!(refused.map(|r| r.status().as_u16()), Some(429));
    }
}
