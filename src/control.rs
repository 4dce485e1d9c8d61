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
//! quotas as it is sent; and when the exchange ends, its admission slot is
//! released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Method, Response};
use http_body::Body;

use crate::body::{OnData, ResponseBody};
use crate::hooks::{Completion, Hook};
use crate::limits::{
    self, AdmissionGuard, ClientKey, Decision, Limits, LimitsConfig, LimitsConfigError, Planned,
};
use crate::observe::{Headline, Level, StatusSource};
use crate::pipeline::{Exchange, FileKind};
use crate::shape::{self, FlowSpec, Rate, ShapeConfig, Shaper};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        if let Some(rate) = Rate::min_cap(**self.client_rate.load(), admission.slow_to) {
            spec = spec.with_client_rate(rate);
        }
        let shaped = self.shaper.wrap(body, &spec);
        // Charge whatever limits are in force when the bytes leave, so a
        // reload mid-transfer keeps counting.
        let (limits, site, client) = (
            Arc::clone(&self.limits),
            Arc::clone(&exchange.site),
            admission.client,
        );
        ResponseBody::boxed(OnData::new(shaped, move |n| {
            limits.load().charge(&site, client, n as u64)
        }))
    }

    fn complete(&self, exchange: &Exchange, _completion: &Completion) {
        if let Some(admission) = exchange.extensions.get::<Admission>() {
            drop(limits::lock(&admission.guard).take());
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
            "Admission decisions: admitted, slowed, or refused by which limit",
            self.decisions.clone(),
        );
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
