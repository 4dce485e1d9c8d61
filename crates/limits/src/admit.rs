//! The admission sequence: one request through every configured limit.
//!
//! Order matters and is cheapest-first: the request rate (a hash lookup),
//! connection slots, then — for bulk transfers only — the quotas and the
//! herd gate. A `slow` action lets the request continue at the lowest rate
//! any limit asked for; a refusing action ends the sequence and releases
//! whatever slots were taken. The herd gate comes last so a request refused
//! by anything else never holds a reservation.

use std::sync::Arc;

use super::action::{Action, Applied, LimitKind};
use super::conns::ConnLimitHit;
use super::quota::QuotaState;
use super::ratelimit::{PolicyReport, add_ratelimit_headers};
use super::secs_up;
use super::usage::QuotaScope;
use super::{
    AdmissionGuard, Admitted, BulkRequest, ClientKey, Decision, Limits, Planned, TransferVerdict,
};

impl Limits {
    /// Decides on `planned`. `available_rate` is asked (only for bulk
    /// transfers with the herd gate on) for the bytes per second the
    /// scheduler can give the class: its cap, or the link's.
    pub fn admit(&self, planned: &Planned<'_>, available_rate: impl FnOnce() -> u64) -> Decision {
        let mut slow: Option<u64> = None;
        let mut reports = Vec::new();
        let apply = |kind: LimitKind, action: &Action, wait, slow: &mut Option<u64>| match action
            .apply(kind, wait, planned.path_and_query, &*self.random)
        {
            Applied::Slow(rate) => {
                self.count_slowed(kind);
                *slow = Some(slow.map_or(rate, |s| s.min(rate)));
                None
            }
            Applied::Refuse(refusal) => {
                self.count_refused(kind);
                Some(refusal)
            }
        };

        if let (Some(limiter), Some(cfg)) = (&self.requests, &self.config.requests) {
            match limiter.check(&planned.client, self.clock.now()) {
                Ok(allowance) => {
                    let policy = limiter.policy();
                    reports.push(PolicyReport {
                        name: "requests",
                        quota: u64::from(policy.burst),
                        window: secs_up(policy.interval * policy.burst).max(1),
                        unit: None,
                        remaining: u64::from(allowance.remaining),
                        reset: secs_up(allowance.reset),
                    });
                }
                Err(wait) => {
                    if let Some(refusal) =
                        apply(LimitKind::RequestRate, &cfg.on_exceed, wait, &mut slow)
                    {
                        return Decision::Refuse(refusal);
                    }
                }
            }
        }

        let mut guard = AdmissionGuard::default();
        match self.conns.acquire(planned.site, planned.client) {
            Ok(g) => guard.conn = Some(g),
            Err(hit) => {
                let (kind, cfg) = match hit {
                    ConnLimitHit::Client => (
                        LimitKind::ClientConnections,
                        &self.config.client_connections,
                    ),
                    ConnLimitHit::Site => {
                        (LimitKind::SiteConnections, &self.config.site_connections)
                    }
                };
                let action = cfg
                    .as_ref()
                    .map(|c| c.on_exceed.clone())
                    .unwrap_or_default();
                // A slot frees when some transfer ends: no better estimate
                // than "soon", so the jitter alone spreads the retries.
                let wait = std::time::Duration::from_secs(1);
                if let Some(refusal) = apply(kind, &action, wait, &mut slow) {
                    return Decision::Refuse(refusal);
                }
            }
        }

        let bulk = self.is_bulk(planned);
        if self.quotas.is_enabled() {
            let check = self
                .quotas
                .check(planned.site, planned.client, self.clock.unix());
            for (name, state) in [("site-bytes", check.site), ("client-bytes", check.client)] {
                if let Some(s) = state {
                    reports.push(quota_report(name, &s));
                }
            }
            if bulk {
                for (scope, state) in exhausted(&check) {
                    let (kind, action) = self.quota_action(scope);
                    if let Some(refusal) = apply(kind, &action, state.next_release, &mut slow) {
                        return Decision::Refuse(refusal);
                    }
                }
            }
        }

        if let Some(herd) = self.herd.as_ref().filter(|_| bulk) {
            let request = BulkRequest {
                client: planned.client,
                body_len: planned.body_len,
                available: available_rate(),
            };
            match herd.admit(request, self.clock.now(), &*self.random) {
                Ok(permit) => guard.bulk = Some(permit),
                Err(refusal) => {
                    self.count_refused(LimitKind::Herd);
                    return Decision::Refuse(refusal);
                }
            }
        }

        let mut headers = http::HeaderMap::new();
        add_ratelimit_headers(&mut headers, &reports);
        Decision::Serve(Admitted {
            bulk,
            slow_to: slow,
            headers,
            guard,
        })
    }

    /// Charges `bytes` sent to `client` on `site` to the quotas. Cheap (one
    /// lock): call it as chunks go out.
    pub fn charge(&self, site: &Arc<str>, client: ClientKey, bytes: u64) {
        self.quotas.charge(site, client, bytes, self.clock.unix());
    }

    /// Whether a running transfer is still within its quotas. A used-up
    /// quota whose action is `slow` slows it (the lowest such rate wins),
    /// even when a refusing quota is used up too: a refusal can only apply
    /// to the client's next request, slowing applies now.
    pub fn check_transfer(&self, site: &Arc<str>, client: ClientKey) -> TransferVerdict {
        if !self.quotas.is_enabled() {
            return TransferVerdict::Continue;
        }
        let check = self.quotas.check(site, client, self.clock.unix());
        let mut slow: Option<(u64, LimitKind)> = None;
        let mut refused = None;
        for (scope, _) in exhausted(&check) {
            match self.quota_action(scope) {
                (kind, Action::Slow { rate }) => {
                    if slow.is_none_or(|(r, _)| rate < r) {
                        slow = Some((rate, kind));
                    }
                }
                (kind, _) => refused = refused.or(Some(kind)),
            }
        }
        match (slow, refused) {
            (Some((rate, limit)), _) => TransferVerdict::Slow { rate, limit },
            (None, Some(kind)) => TransferVerdict::Exceeded(kind),
            (None, None) => TransferVerdict::Continue,
        }
    }

    fn quota_action(&self, scope: QuotaScope) -> (LimitKind, Action) {
        let (kind, cfg) = match scope {
            QuotaScope::Site => (LimitKind::SiteQuota, &self.config.site_quota),
            QuotaScope::Client => (LimitKind::ClientQuota, &self.config.client_quota),
        };
        (
            kind,
            cfg.as_ref()
                .map(|c| c.on_exceed.clone())
                .unwrap_or_default(),
        )
    }
}

fn exhausted(check: &super::QuotaCheck) -> Vec<(QuotaScope, QuotaState)> {
    [
        (QuotaScope::Site, check.site),
        (QuotaScope::Client, check.client),
    ]
    .into_iter()
    .filter_map(|(scope, s)| s.filter(QuotaState::exhausted).map(|s| (scope, s)))
    .collect()
}

fn quota_report(name: &'static str, s: &QuotaState) -> PolicyReport {
    PolicyReport {
        name,
        quota: s.limit,
        window: s.period_secs,
        unit: Some("content-bytes"),
        remaining: s.remaining(),
        reset: secs_up(s.next_release),
    }
}
