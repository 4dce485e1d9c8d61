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

use cvdmirror_exchange::body;
use cvdmirror_exchange::hooks;
use cvdmirror_limits as limits;
use cvdmirror_observe as observe;
use cvdmirror_shape as shape;

mod metrics;
mod quota_watch;
mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Method, Response};
use http_body::Body;
use tokio::time::Instant;

use crate::body::{OnData, ResponseBody};
use crate::hooks::{Completion, Hook};
use crate::limits::{
    AdmissionGuard, ClientKey, Decision, Limits, LimitsConfig, LimitsConfigError, Planned,
};
use crate::shape::{FlowSpec, Rate, ShapeConfig, ShapedBody, Shaper};
use cvdmirror_exchange::{Exchange, FileKind, TrustedPeer};
use metrics::DecisionLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use quota_watch::QuotaWatch;

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

/// What `admit` leaves for `wrap_body` and `complete`.
#[derive(Clone)]
struct Admission {
    client: ClientKey,
    class: Arc<str>,
    slow_to: Option<Rate>,
    /// Judged as a bulk transfer: only those are held to the quotas.
    bulk: bool,
    /// Another node of the fleet: shaped with the link, never charged.
    peer: bool,
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
        if exchange.extensions.get::<TrustedPeer>().is_some() {
            self.decisions
                .get_or_create(&DecisionLabels {
                    decision: "peer",
                    limit: "-",
                })
                .inc();
            exchange.extensions.insert(Admission {
                client,
                class,
                slow_to: None,
                bulk: false,
                peer: true,
                guard: Arc::new(Mutex::new(None)),
            });
            return None;
        }
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
                    peer: false,
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
        if admission.peer {
            // The link's and the class's shares hold; no client cap, no
            // quota.
            return ResponseBody::boxed(ShapedBody::new(body, self.shaper.register(&spec)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{SeededRandom, TokioClock};
    use crate::quota_watch::CHECK_BYTES;
    use bytes::Bytes;
    use cvdmirror_exchange::ServedFileInfo;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::time::Duration;

    /// A `GET` of `path` from `peer`, serving a 1 MB file of `kind` if any.
    fn exchange(peer: &str, path: &str, kind: Option<FileKind>) -> Exchange {
        let mut exchange = Exchange::get(peer.parse().unwrap(), path);
        exchange.file = kind.map(|kind| ServedFileInfo {
            kind,
            size: 1_000_000,
        });
        exchange
    }

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
