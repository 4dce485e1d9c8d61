//! The one task a node runs for its fleet. Every heartbeat it writes the
//! node's report and reads everyone's in one round trip, keeps or takes the
//! upstream lease, and publishes a new [`FleetView`]. Each Redis call is
//! bounded by the operation timeout, so a beat without Redis ends within
//! it and the view keeps coming, marked `redis_ok = false` with the last
//! known nodes. On shutdown the node hands the lease back and removes its
//! report, so the others need not wait for either to expire.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::report::{NodeReport, unix_now};
use crate::store::Store;
use crate::tracker::{Seen, Tracker};
use crate::view::{FleetView, LeaseHolder};
use crate::{FleetConfig, FleetError, ReportFn};

/// After this many failed beats in a row the connection starts over.
const RECONNECT_AFTER_FAILURES: u32 = 5;

/// The lease as this node holds it.
#[derive(Clone, Copy, Debug)]
struct Mine {
    token: u64,
    /// Redis keeps the lease at least until then.
    until: Instant,
}

pub(crate) struct Heartbeat {
    config: FleetConfig,
    store: Arc<Store>,
    report: ReportFn,
    tracker: Tracker,
    view: Arc<ArcSwap<FleetView>>,
    mine: Option<Mine>,
    /// The largest fencing token seen: a floor for the next one, should
    /// Redis lose its counter.
    highest_token: u64,
    failures: u32,
    /// Nodes whose report did not parse, warned about once.
    unreadable: HashSet<String>,
    /// The fleet's peer token, once read from Redis.
    peer_token: Arc<ArcSwapOption<String>>,
    /// What this node proposes as the peer token when Redis has none.
    token_candidate: String,
}

impl Heartbeat {
    /// A heartbeat whose first view shows this node alone, Redis not yet
    /// reached.
    pub fn new(config: FleetConfig, store: Arc<Store>, report: ReportFn) -> Self {
        let now = Instant::now();
        let mut tracker = Tracker::new(&config, now);
        let mut own = report();
        own.node.clone_from(&config.node);
        own.public_url.clone_from(&config.public_url);
        let view = Arc::new(ArcSwap::from_pointee(tracker.view(own, now)));
        Self {
            config,
            store,
            report,
            tracker,
            view,
            mine: None,
            highest_token: 0,
            failures: 0,
            unreadable: HashSet::new(),
            peer_token: Arc::default(),
            token_candidate: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// Where the peer token is published.
    pub fn peer_tokens(&self) -> Arc<ArcSwapOption<String>> {
        Arc::clone(&self.peer_token)
    }

    /// Where the views are published.
    pub fn views(&self) -> Arc<ArcSwap<FleetView>> {
        Arc::clone(&self.view)
    }

    /// Beats until `shutdown`, then leaves the fleet.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => self.beat().await,
            }
        }
        self.leave().await;
    }

    fn own_report(&self) -> NodeReport {
        let mut report = (self.report)();
        report.node.clone_from(&self.config.node);
        report.public_url.clone_from(&self.config.public_url);
        report.reported_at = unix_now();
        report
    }

    async fn beat(&mut self) {
        let own = self.own_report();
        let exchanged = match serde_json::to_string(&own) {
            Ok(json) => self.store.exchange(&json).await,
            Err(error) => Err(FleetError::Reply(format!("own report: {error}"))),
        };
        match exchanged {
            Ok(exchanged) => {
                if !self.tracker.redis_ok() {
                    tracing::info!(node = %self.config.node, "fleet: redis reached");
                }
                self.failures = 0;
                let seen = self.read_reports(exchanged.reports);
                self.tracker.read(seen, Instant::now());
                self.lease(exchanged.lease).await;
                self.read_peer_token().await;
            }
            Err(error) => {
                if self.tracker.redis_ok() || self.failures == 0 {
                    tracing::warn!(%error, node = %self.config.node, "fleet: redis out of reach");
                }
                self.tracker.failed();
                self.failures += 1;
                if self.failures.is_multiple_of(RECONNECT_AFTER_FAILURES) {
                    self.store.reconnect();
                }
            }
        }
        let view = self.tracker.view(own, Instant::now());
        self.view.store(Arc::new(view));
    }

    /// Reads the peer token (setting this node's candidate when Redis has
    /// none, as after a restart), keeping the last one on failure.
    async fn read_peer_token(&mut self) {
        match self.store.peer_token(&self.token_candidate).await {
            Ok(token) => {
                let changed = self
                    .peer_token
                    .load()
                    .as_deref()
                    .is_none_or(|known| *known != token);
                if changed {
                    self.peer_token.store(Some(Arc::new(token)));
                }
            }
            Err(error) => tracing::debug!(%error, "fleet: cannot read the peer token"),
        }
    }

    fn read_reports(&mut self, reports: Vec<(String, String, i64)>) -> Vec<Seen> {
        let mut seen = Vec::with_capacity(reports.len());
        for (name, json, ttl_ms) in reports {
            match serde_json::from_str::<NodeReport>(&json) {
                Ok(mut report) => {
                    self.unreadable.remove(&name);
                    report.node = name;
                    // The key's remaining TTL tells its age on Redis's own
                    // clock; one without TTL never refreshes by itself.
                    let left = u64::try_from(ttl_ms).map_or(Duration::ZERO, Duration::from_millis);
                    let age = self.config.node_ttl.saturating_sub(left);
                    seen.push(Seen { report, age });
                }
                Err(error) => {
                    if self.unreadable.insert(name.clone()) {
                        tracing::warn!(node = %name, %error, "fleet: unreadable node report");
                    }
                }
            }
        }
        seen
    }

    /// Keeps or takes the lease, given its value in Redis.
    async fn lease(&mut self, value: Option<String>) {
        let mut holder = value.as_deref().and_then(LeaseHolder::parse);
        if let Some(value) = &value
            && holder.is_none()
        {
            tracing::warn!(%value, "fleet: the lease holds a value no node writes");
        }
        if let Some(holder) = &holder {
            self.highest_token = self.highest_token.max(holder.token);
        }
        let sent = Instant::now();
        let ours = self.mine.filter(|mine| {
            holder
                .as_ref()
                .is_some_and(|holder| holder.node == self.config.node && holder.token == mine.token)
        });
        match (ours, &value) {
            (Some(mine), Some(value)) => match self.store.renew(value).await {
                Ok(true) => {
                    self.mine = Some(Mine {
                        until: sent + self.config.lease_ttl,
                        ..mine
                    });
                }
                Ok(false) => self.lost(),
                // Unknown: the lease stays ours until it surely expires.
                Err(error) => tracing::debug!(%error, "fleet: lease renewal failed"),
            },
            // A node that does not sync never takes the lease.
            (None, None) if !self.config.pulls => {}
            (None, None) => match self.store.acquire(self.highest_token).await {
                Ok(Some(token)) => {
                    tracing::info!(node = %self.config.node, token, "fleet: upstream lease taken");
                    self.highest_token = self.highest_token.max(token);
                    self.mine = Some(Mine {
                        token,
                        until: sent + self.config.lease_ttl,
                    });
                    holder = Some(LeaseHolder {
                        node: self.config.node.clone(),
                        token,
                    });
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "fleet: lease acquisition failed"),
            },
            _ => self.lost(),
        }
        self.tracker.lease(holder, self.mine.map(|mine| mine.until));
    }

    fn lost(&mut self) {
        if let Some(mine) = self.mine.take() {
            tracing::warn!(node = %self.config.node, token = mine.token, "fleet: upstream lease lost");
        }
    }

    /// Hands the lease back and removes this node's report.
    async fn leave(&mut self) {
        if let Some(mine) = self.mine.take() {
            let value = LeaseHolder {
                node: self.config.node.clone(),
                token: mine.token,
            }
            .value();
            match self.store.release(&value).await {
                Ok(_) => tracing::info!(node = %self.config.node, "fleet: upstream lease released"),
                Err(error) => tracing::warn!(%error, "fleet: lease not released; it expires"),
            }
        }
        if let Err(error) = self.store.leave().await {
            tracing::warn!(%error, "fleet: report not removed; it expires");
        }
        self.tracker.lease(None, None);
        self.tracker.failed();
        let own = self.own_report();
        let view = self.tracker.view(own, Instant::now());
        self.view.store(Arc::new(view));
    }
}
