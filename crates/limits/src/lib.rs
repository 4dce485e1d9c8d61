//! Admission control: per request, serve, slow down, refuse (`429`/`503`
//! with a jittered `Retry-After`) or redirect.
//!
//! It exists because of an incident: hundreds of clients fell back from tiny
//! cdiffs to full 60 MB `daily.cvd` downloads at once and saturated a shared
//! link for 96 minutes, and mod_cband's quotas and per-IP speeds did not stop
//! it. [`Limits`] combines, in this order, a request rate per client
//! ([`gcra`]), concurrent requests per client and site ([`conns`]), transfer
//! quotas released in slices ([`quota`]) and the herd gate ([`herd`]) that
//! admits a whole-database download only while every admitted one keeps a
//! minimum rate. Small responses (header checks, `304`, cdiffs, `404`) pass
//! only the first two: they are what keeps clients off the big downloads.
//!
//! The bandwidth scheduler (`shape`) paces what is admitted; this module
//! only decides. The server calls [`Limits::admit`] once per request (from
//! its hook), keeps the returned guard until the exchange ends, charges
//! bytes as they are sent with [`Limits::charge`], and runs
//! [`Limits::run`] for persistence and housekeeping.
//!
//! In a fleet, client quotas and request rates hold across every node:
//! [`shared`] hands a background task what changed and folds in what the
//! other nodes did, while every decision stays local and immediate.

use cvdmirror_exchange::body;
use cvdmirror_formats::state_file;

pub mod action;
pub mod appointments;
pub use cvdmirror_exchange::client;
pub mod clock;
pub mod config;
pub mod conns;
pub mod gcra;
pub mod herd;
pub mod jitter;
pub use cvdmirror_exchange::proxy;
pub mod quota;
pub mod ratelimit;
pub mod shared;
pub mod store;
pub mod usage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Serialize;

pub use action::{Action, Applied, LimitKind, Refusal};
pub use client::{ClientKey, ClientPrefixes};
pub use clock::{Clock, SystemClock, TokioClock};
pub use config::{LimitsConfig, LimitsConfigError};
pub use conns::{Concurrency, ConnGuard, ConnLimitHit, ConnStats};
pub use gcra::{Gcra, RateStats, RequestRate, SharedRequests};
pub use herd::{BulkPermit, BulkRequest, HerdGate, HerdPolicy, HerdStats, is_bulk};
pub use jitter::{Random, SeededRandom, ThreadRandom};
pub use proxy::{ProxyHeader, TrustedProxies};
pub use quota::{QuotaLimit, QuotaState, Usage};
pub use ratelimit::{PolicyReport, RATELIMIT, RATELIMIT_POLICY};
pub use shared::{FleetShare, FleetTotals};
pub use store::{LimitsState, StateStore};
pub use usage::{FleetUsage, QuotaCheck, QuotaScope, QuotaSnapshot, Quotas, SharedUsage};

pub use cvdmirror_formats::mutex::lock;

/// The response the pipeline plans to send, as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Planned<'a> {
    /// The site serving it.
    pub site: &'a Arc<str>,
    /// The client (from [`Limits::client_key`]).
    pub client: ClientKey,
    /// Request path and query, appended to redirect URLs.
    pub path_and_query: &'a str,
    /// Planned status.
    pub status: StatusCode,
    /// Whether the request is a HEAD (no body).
    pub is_head: bool,
    /// Body bytes planned (the range length for `206`).
    pub body_len: u64,
}

/// The verdict on one request.
#[derive(Debug)]
pub enum Decision {
    /// Serve it.
    Serve(Admitted),
    /// Send this response instead.
    Refuse(Refusal),
}

/// A request that may be served.
#[derive(Debug)]
pub struct Admitted {
    /// Judged as a bulk transfer (quotas and herd gate applied).
    pub bulk: bool,
    /// Serve at most this many bytes per second (a `slow` action fired).
    pub slow_to: Option<u64>,
    /// `RateLimit-Policy`/`RateLimit` fields to add to the response.
    pub headers: HeaderMap,
    /// Hold until the exchange ends: it is the connection slot and, for
    /// bulk transfers, the herd gate's reservation.
    pub guard: AdmissionGuard,
}

/// Slots held by an admitted request; dropping releases them.
#[derive(Debug, Default)]
pub struct AdmissionGuard {
    conn: Option<ConnGuard>,
    bulk: Option<BulkPermit>,
}

impl AdmissionGuard {
    /// Whether it holds a herd gate reservation.
    pub fn is_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// Whether it holds a connection slot.
    pub fn holds_connection(&self) -> bool {
        self.conn.is_some()
    }
}

/// What to do with a transfer in progress after charging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferVerdict {
    /// Within every quota.
    Continue,
    /// A quota with a `slow` action is used up: pace to `rate` (bytes per
    /// second); `limit` is the quota that set it.
    Slow {
        /// Bytes per second.
        rate: u64,
        /// The used-up quota whose rate this is.
        limit: LimitKind,
    },
    /// A quota with a refusing action is used up, and none with `slow`.
    /// New transfers are refused; the caller may finish this one or end it.
    Exceeded(LimitKind),
}

const KINDS: [LimitKind; 6] = [
    LimitKind::RequestRate,
    LimitKind::ClientConnections,
    LimitKind::SiteConnections,
    LimitKind::SiteQuota,
    LimitKind::ClientQuota,
    LimitKind::Herd,
];

fn kind_index(kind: LimitKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Everything for status pages and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsStatus {
    /// Request-rate counters, if configured.
    pub requests: Option<RateStats>,
    /// Concurrent requests.
    pub connections: ConnStats,
    /// Site quotas by site (current period).
    pub site_quotas: BTreeMap<String, QuotaState>,
    /// The 20 clients with most usage: (site, client, state).
    pub top_client_quotas: Vec<(String, String, QuotaState)>,
    /// Clients with a quota counter this period.
    pub tracked_quota_clients: usize,
    /// Herd gate, if configured.
    pub herd: Option<HerdStats>,
    /// Responses refused or redirected, by limit.
    pub refused: BTreeMap<&'static str, u64>,
    /// Responses slowed, by limit.
    pub slowed: BTreeMap<&'static str, u64>,
}

/// Admission control for one server.
pub struct Limits {
    config: LimitsConfig,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    requests: Option<RequestRate>,
    conns: Concurrency,
    quotas: Quotas,
    herd: Option<HerdGate>,
    store: Option<StateStore>,
    refused: [AtomicU64; 6],
    slowed: [AtomicU64; 6],
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn quota_limit(q: &config::QuotaConfig) -> QuotaLimit {
    QuotaLimit {
        limit: q.limit,
        period: q.period,
        slices: q.slices,
    }
}

mod admit;
mod persist;

impl Limits {
    /// Limits on the system clock and OS randomness.
    pub fn new(config: LimitsConfig) -> Result<Self, LimitsConfigError> {
        Self::with_env(config, Arc::new(SystemClock), Arc::new(ThreadRandom))
    }

    /// Limits on an injected clock and random source (tests, simulations).
    pub fn with_env(
        config: LimitsConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, LimitsConfigError> {
        config.validate()?;
        let max = config.max_tracked_clients;
        let requests = config
            .requests
            .as_ref()
            .map(|r| RequestRate::new(Gcra::new(r.requests, r.per, r.burst), max, clock.now()));
        let conns = Concurrency::new(
            config.client_connections.as_ref().map(|c| c.max),
            config.site_connections.as_ref().map(|c| c.max),
        );
        let quotas = Quotas::new(
            config.site_quota.as_ref().map(quota_limit),
            config.client_quota.as_ref().map(quota_limit),
            max,
        );
        let herd = config.herd.as_ref().map(|h| {
            HerdGate::new(HerdPolicy {
                min_rate: h.bulk_min_rate,
                retry_min: h.retry_after_min,
                retry_max: h.retry_after_max,
                status: h.status,
            })
        });
        let store = config.state_file.clone().map(StateStore::new);
        Ok(Self {
            config,
            clock,
            random,
            requests,
            conns,
            quotas,
            herd,
            store,
            refused: Default::default(),
            slowed: Default::default(),
        })
    }

    /// New limits for `config` that continue this instance's live state:
    /// transfers admitted through the herd gate, held connection slots,
    /// quota usage (with what other nodes of a fleet used) and the refusal
    /// counters carry over, so a reload
    /// (`SIGHUP`, e.g. from logrotate) neither reopens a closed gate nor
    /// forgets what was sent.
    pub fn reconfigured(&self, config: LimitsConfig) -> Result<Self, LimitsConfigError> {
        let mut next = Self::with_env(config, Arc::clone(&self.clock), Arc::clone(&self.random))?;
        if let (Some(gate), Some(previous)) = (next.herd.as_mut(), self.herd.as_ref()) {
            gate.adopt(previous);
        }
        next.conns.adopt(&self.conns);
        next.restore(&self.state());
        next.quotas.adopt_sharing(&self.quotas);
        if let (Some(rate), Some(previous)) = (&next.requests, &self.requests) {
            rate.adopt_sharing(previous);
        }
        for (next, previous) in next
            .refused
            .iter()
            .zip(&self.refused)
            .chain(next.slowed.iter().zip(&self.slowed))
        {
            next.store(previous.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(next)
    }

    /// The configuration in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// The client behind `peer` (through trusted proxies), as a key.
    pub fn client_key(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientKey {
        self.config
            .clients
            .key(self.config.proxies.client_ip(peer, headers))
    }

    /// Whether `planned` is a bulk transfer under this configuration.
    pub fn is_bulk(&self, planned: &Planned<'_>) -> bool {
        is_bulk(
            planned.status,
            planned.is_head,
            planned.body_len,
            self.config.bulk_threshold,
        )
    }

    /// The herd gate, if configured.
    pub fn herd(&self) -> Option<&HerdGate> {
        self.herd.as_ref()
    }

    /// The herd gate's state now, if configured.
    pub fn herd_stats(&self) -> Option<HerdStats> {
        self.herd.as_ref().map(|h| h.stats(self.clock.now()))
    }

    /// The connection counters.
    pub fn connections(&self) -> &Concurrency {
        &self.conns
    }

    /// The quota counters.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Everything for status pages and metrics.
    pub fn status(&self) -> LimitsStatus {
        let now = self.clock.unix();
        let snap = self.quotas.snapshot(now);
        let site_limit = self.config.site_quota.as_ref().map(quota_limit);
        let client_limit = self.config.client_quota.as_ref().map(quota_limit);
        let site_quotas = site_limit
            .map(|l| {
                snap.sites
                    .iter()
                    .map(|(s, u)| (s.clone(), l.evaluate(*u, now)))
                    .collect()
            })
            .unwrap_or_default();
        let mut top = Vec::new();
        let mut tracked = 0;
        if let Some(l) = client_limit {
            for (site, clients) in &snap.clients {
                tracked += clients.len();
                for (k, u) in clients {
                    top.push((site.clone(), k.to_string(), l.evaluate(*u, now)));
                }
            }
        }
        top.sort_by_key(|t| std::cmp::Reverse(t.2.used));
        top.truncate(20);
        let count = |a: &[AtomicU64; 6]| {
            KINDS
                .iter()
                .map(|k| (k.as_str(), a[kind_index(*k)].load(Ordering::Relaxed)))
                .collect()
        };
        LimitsStatus {
            requests: self.requests.as_ref().map(RequestRate::stats),
            connections: self.conns.stats(),
            site_quotas,
            top_client_quotas: top,
            tracked_quota_clients: tracked,
            herd: self.herd_stats(),
            refused: count(&self.refused),
            slowed: count(&self.slowed),
        }
    }

    /// Forgets idle request-rate entries, counters of past periods and
    /// refused clients long past their appointment.
    pub fn maintain(&self) {
        if let Some(r) = &self.requests {
            r.retain_recent(self.clock.now());
        }
        if let Some(h) = &self.herd {
            h.maintain(self.clock.now());
        }
        self.quotas.retain_current(self.clock.unix());
    }

    fn count_refused(&self, kind: LimitKind) {
        self.refused[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    fn count_slowed(&self, kind: LimitKind) {
        self.slowed[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The duration in whole seconds, rounded up.
fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
