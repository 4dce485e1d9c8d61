//! Limits shared by the nodes of a fleet: what this node hands out and
//! what it takes back, without knowing how the two travel.
//!
//! Admission never waits for the fleet. Every decision is taken on this
//! node's tables, which hold, besides what this node did, what the rest of
//! the fleet did as of the last exchange. A background task (in
//! `cvdmirror-fleet`) exchanges them every second or so:
//!
//! 1. [`Limits::take_fleet_share`]: the client quota counters charged since
//!    they were last shared (this node's bytes in the period, an absolute
//!    value, so sending one twice is harmless) and the clients that made
//!    requests (how many were admitted, and this node's GCRA state); then,
//!    in turns, the other clients active here recently, so that what this
//!    node knows of them keeps up with the fleet; at most `max_keys` of
//!    each;
//! 2. the task sends them to the fleet in one round trip and gets back, per
//!    counter, the other nodes' bytes and, per client, the fleet's GCRA
//!    state;
//! 3. [`Limits::merge_fleet_totals`] folds that in, so the next decisions
//!    count the other nodes too; or, when the fleet did not answer,
//!    [`Limits::return_fleet_share`] puts everything back for the next try.
//!
//! Without a fleet nothing of this runs and the limits work as on a single
//! node. Site quotas, connection slots and the herd gate always stay per
//! node: they protect this node's link.

use std::time::Duration;

use tokio::time::Instant;

use super::Limits;
use super::gcra::SharedRequests;
use super::usage::{FleetUsage, SharedUsage};

/// What a node hands its fleet in one exchange.
#[derive(Debug, Clone)]
pub struct FleetShare {
    /// When it was taken: what every [`SharedRequests::debt`] and every
    /// answered debt in [`FleetTotals::requests`] are measured from.
    pub taken_at: Instant,
    /// Client quota counters of the current period, this node's bytes.
    pub usage: Vec<SharedUsage>,
    /// Clients that made requests since the last share.
    pub requests: Vec<SharedRequests>,
    /// The request-rate policy's interval (`per / requests`), when a
    /// request rate is configured.
    pub request_interval: Option<Duration>,
}

impl FleetShare {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty() && self.requests.is_empty()
    }
}

/// What the fleet answered to a [`FleetShare`], item by item in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetTotals {
    /// For each of [`FleetShare::usage`].
    pub usage: Vec<FleetUsage>,
    /// For each of [`FleetShare::requests`]: how far the fleet's TAT for
    /// the client lies ahead of [`FleetShare::taken_at`].
    pub requests: Vec<Duration>,
}

impl Limits {
    /// Whether anything is configured that a fleet shares: a client quota
    /// or a request rate.
    pub fn is_shareable(&self) -> bool {
        self.config.client_quota.is_some() || self.requests.is_some()
    }

    /// What to tell the fleet, at most `max_keys` quota counters and
    /// `max_keys` clients' requests: what changed since the last share,
    /// then, in turns, clients charged here within `active_for` (quotas)
    /// or whose request budget is not full again (rates), to refresh what
    /// this node knows of them. The first call turns the bookkeeping on (a
    /// node without a fleet never pays for it) and queues every counter
    /// already held, so a restored state reaches the fleet. Cheap: a few
    /// short locks, no scan of the tables.
    pub fn take_fleet_share(&self, max_keys: usize, active_for: Duration) -> FleetShare {
        let taken_at = self.clock.now();
        FleetShare {
            taken_at,
            usage: self
                .quotas
                .share_usage(self.clock.unix(), max_keys, active_for),
            requests: self
                .requests
                .as_ref()
                .map(|r| r.share_requests(taken_at, max_keys))
                .unwrap_or_default(),
            request_interval: self.requests.as_ref().map(|r| r.policy().interval),
        }
    }

    /// Folds in the fleet's answer to `share`: the bytes the other nodes
    /// sent each client this period count against its quota here, and a
    /// client's request rate continues from the fleet's state. A client
    /// over its quota (or rate) because of the other nodes is refused here
    /// from now on.
    pub fn merge_fleet_totals(&self, share: &FleetShare, totals: &FleetTotals) {
        self.quotas.merge_usage(&share.usage, &totals.usage);
        if let Some(r) = &self.requests {
            r.merge_requests(&share.requests, &totals.requests, share.taken_at);
        }
    }

    /// Puts back a share the fleet did not take (Redis out of reach): it
    /// goes out again, with whatever happened since, on the next share.
    pub fn return_fleet_share(&self, share: FleetShare) {
        self.quotas.unshare_usage(share.usage);
        if let Some(r) = &self.requests {
            r.unshare_requests(share.requests);
        }
    }

    /// Queues every quota counter to be shared again, `max_keys` a share
    /// after what changed: the fleet lost what it knew (its Redis restarted
    /// empty) and rebuilds it from the nodes.
    pub fn reshare_all(&self) {
        self.quotas.reshare_all();
    }

    /// Quota counters waiting to be shared.
    pub fn unshared(&self) -> usize {
        self.quotas.unshared()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use http::StatusCode;

    use super::*;
    use crate::client::{ClientKey, ClientPrefixes};
    use crate::{
        Decision, LimitKind, LimitsConfig, Planned, SeededRandom, TokioClock, TransferVerdict,
    };

    // 2024-01-01T00:00:00Z.
    const T0: Duration = Duration::from_secs(1_704_067_200);
    const MB: u64 = 1 << 20;
    /// How long a client counts as active for the tests' shares.
    const ACTIVE: Duration = Duration::from_secs(60);

    fn limits(toml_text: &str) -> Limits {
        #[derive(serde::Deserialize)]
        struct File {
            limits: LimitsConfig,
        }
        let config = toml::from_str::<File>(toml_text).unwrap().limits;
        Limits::with_env(
            config,
            Arc::new(TokioClock::starting_at(T0)),
            Arc::new(SeededRandom::new(7)),
        )
        .unwrap()
    }

    const QUOTA: &str = "[limits.client_quota]\nlimit = 100_000_000\nperiod = \"1d\"\n\
                         [limits.site_quota]\nlimit = 1_000_000_000\nperiod = \"1d\"";

    fn key(ip: &str) -> ClientKey {
        ClientPrefixes::default().key(ip.parse::<IpAddr>().unwrap())
    }

    fn site() -> Arc<str> {
        Arc::from("mirror")
    }

    /// Admission of a 60 MB CVD for `ip`.
    fn admit_cvd(l: &Limits, ip: &str) -> Decision {
        let site = site();
        l.admit(
            &Planned {
                site: &site,
                client: key(ip),
                path_and_query: "/daily.cvd",
                status: StatusCode::OK,
                is_head: false,
                body_len: 60 * MB,
            },
            || u64::MAX,
        )
    }

    /// Admission of a small response (a header check) for `ip`.
    fn admit_small(l: &Limits, ip: &str) -> Decision {
        let site = site();
        l.admit(
            &Planned {
                site: &site,
                client: key(ip),
                path_and_query: "/daily.cvd",
                status: StatusCode::PARTIAL_CONTENT,
                is_head: false,
                body_len: 512,
            },
            || u64::MAX,
        )
    }

    fn refused_by(d: Decision) -> Option<LimitKind> {
        match d {
            Decision::Serve(_) => None,
            Decision::Refuse(r) => Some(r.limit),
        }
    }

    /// The fleet's answer when the other nodes sent `others` bytes to every
    /// shared counter.
    fn others(share: &FleetShare, others: u64) -> FleetTotals {
        FleetTotals {
            usage: share
                .usage
                .iter()
                .map(|u| FleetUsage {
                    own: u.used,
                    others,
                })
                .collect(),
            requests: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_fleet_quotas_work_alone_and_keep_no_share() {
        let l = limits(QUOTA);
        let a = "192.0.2.1";
        assert_eq!(refused_by(admit_cvd(&l, a)), None);
        l.charge(&site(), key(a), 99_000_000);
        assert_eq!(refused_by(admit_cvd(&l, a)), None);
        l.charge(&site(), key(a), 1_000_000);
        assert_eq!(refused_by(admit_cvd(&l, a)), Some(LimitKind::ClientQuota));
        assert!(!l.quotas().is_sharing());
        assert_eq!(l.unshared(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_carries_what_changed_once_and_absolute_usage() {
        let l = limits(QUOTA);
        let (a, b) = ("192.0.2.1", "2001:db8:1::7");
        assert!(l.take_fleet_share(100, ACTIVE).is_empty());
        l.charge(&site(), key(a), 1_000);
        l.charge(&site(), key(b), 5_000);
        l.charge(&site(), key(a), 500);
        let share = l.take_fleet_share(100, ACTIVE);
        assert_eq!(share.usage.len(), 2);
        assert_eq!(share.usage[0].client, key(a));
        assert_eq!(share.usage[0].used, 1_500);
        assert_eq!(share.usage[1].used, 5_000);
        let day_ms = 86_400_000;
        let start = u64::try_from(T0.as_millis()).unwrap();
        assert_eq!(share.usage[0].period_start_ms, start);
        assert_eq!(share.usage[0].period_end_ms, start + day_ms);
        assert!(share.requests.is_empty() && share.request_interval.is_none());
        l.merge_fleet_totals(&share, &others(&share, 0));
        // Clients charged recently go out again, to learn what the other
        // nodes sent them since...
        let refresh = l.take_fleet_share(100, ACTIVE);
        assert_eq!(refresh.usage, share.usage);
        // ...until they have been quiet here for `active_for`.
        tokio::time::advance(ACTIVE + Duration::from_secs(1)).await;
        assert!(l.take_fleet_share(100, ACTIVE).is_empty());
        l.charge(&site(), key(a), 1);
        let again = l.take_fleet_share(100, ACTIVE);
        assert_eq!(again.usage.len(), 1);
        assert_eq!(again.usage[0].used, 1_501);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_over_its_quota_because_of_other_nodes_is_refused() {
        let l = limits(QUOTA);
        let (a, b) = ("192.0.2.1", "192.0.2.2");
        l.take_fleet_share(100, ACTIVE);
        // Header checks charge both; a is busy elsewhere in the fleet.
        l.charge(&site(), key(a), 512);
        l.charge(&site(), key(b), 512);
        assert_eq!(refused_by(admit_cvd(&l, a)), None);
        let share = l.take_fleet_share(100, ACTIVE);
        let totals = FleetTotals {
            usage: share
                .usage
                .iter()
                .map(|u| FleetUsage {
                    own: u.used,
                    others: if u.client == key(a) { 99_999_488 } else { 0 },
                })
                .collect(),
            requests: Vec::new(),
        };
        l.merge_fleet_totals(&share, &totals);
        assert_eq!(refused_by(admit_cvd(&l, a)), Some(LimitKind::ClientQuota));
        // Small responses are never held to the quota, and other clients
        // are untouched.
        assert_eq!(refused_by(admit_small(&l, a)), None);
        assert_eq!(refused_by(admit_cvd(&l, b)), None);
        let check = l.quotas().check(&site(), key(a), T0);
        assert_eq!(check.client.unwrap().used, 100_000_000);
        // The site quota is this node's alone: only its own bytes count.
        assert_eq!(check.site.unwrap().used, 1_024);
        // A transfer running when the news arrives learns it too.
        assert_eq!(
            l.check_transfer(&site(), key(a)),
            TransferVerdict::Exceeded(LimitKind::ClientQuota)
        );
        // What is persisted is this node's own usage.
        let state = l.state();
        assert_eq!(state.quotas.clients["mirror"][&key(a)].used, 512);

        // A new period starts from zero everywhere.
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(refused_by(admit_cvd(&l, a)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleets_answer_never_lowers_usage_and_restores_a_lost_state() {
        let l = limits(QUOTA);
        let a = "192.0.2.1";
        l.take_fleet_share(100, ACTIVE);
        l.charge(&site(), key(a), 1_000);
        let share = l.take_fleet_share(100, ACTIVE);
        l.merge_fleet_totals(&share, &others(&share, 50_000));
        // Redis came back empty: the answer is smaller, usage stays.
        l.charge(&site(), key(a), 1_000);
        let share = l.take_fleet_share(100, ACTIVE);
        l.merge_fleet_totals(&share, &others(&share, 0));
        let used = |l: &Limits| l.quotas().check(&site(), key(a), T0).client.unwrap().used;
        assert_eq!(used(&l), 52_000);
        // This node restarted without its state file: the fleet knows what
        // it had sent.
        let fresh = limits(QUOTA);
        fresh.take_fleet_share(100, ACTIVE);
        fresh.charge(&site(), key(a), 10);
        let share = fresh.take_fleet_share(100, ACTIVE);
        assert_eq!(share.usage[0].used, 10);
        let totals = FleetTotals {
            usage: vec![FleetUsage {
                own: 2_000,
                others: 50_000,
            }],
            requests: Vec::new(),
        };
        fresh.merge_fleet_totals(&share, &totals);
        assert_eq!(used(&fresh), 52_000);
        assert_eq!(fresh.state().quotas.clients["mirror"][&key(a)].used, 2_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_the_fleet_did_not_take_goes_out_again() {
        let l = limits(QUOTA);
        l.take_fleet_share(100, ACTIVE);
        l.charge(&site(), key("192.0.2.1"), 1_000);
        let share = l.take_fleet_share(100, ACTIVE);
        assert_eq!(share.usage.len(), 1);
        l.charge(&site(), key("192.0.2.1"), 1_000);
        l.return_fleet_share(share);
        let again = l.take_fleet_share(100, ACTIVE);
        assert_eq!(again.usage.len(), 1);
        assert_eq!(again.usage[0].used, 2_000);
    }

    #[tokio::test(start_paused = true)]
    async fn shares_are_bounded_and_restored_counters_follow_what_changed() {
        let l = limits(QUOTA);
        // Charged (or restored from the state file) before the fleet started.
        for n in 0..50u8 {
            l.charge(&site(), key(&format!("198.51.100.{n}")), 100);
        }
        assert!(!l.quotas().is_sharing());
        // Long enough ago that none of those clients is active now.
        tokio::time::advance(ACTIVE + Duration::from_secs(1)).await;
        let first = l.take_fleet_share(20, ACTIVE);
        assert_eq!(first.usage.len(), 20);
        l.charge(&site(), key("192.0.2.1"), 7);
        // What changed goes first, then the rest of the backlog.
        let second = l.take_fleet_share(20, ACTIVE);
        assert_eq!(second.usage[0].client, key("192.0.2.1"));
        assert_eq!(second.usage.len(), 20);
        // The recently charged client is refreshed before the backlog.
        let third = l.take_fleet_share(20, ACTIVE);
        assert_eq!(third.usage.len(), 12);
        assert_eq!(third.usage[0].client, key("192.0.2.1"));
        let fourth = l.take_fleet_share(20, ACTIVE);
        assert_eq!(fourth.usage.len(), 1);
        tokio::time::advance(ACTIVE + Duration::from_secs(1)).await;
        assert!(l.take_fleet_share(20, ACTIVE).is_empty());
        let mut seen: Vec<_> = [first, second, third]
            .iter()
            .flat_map(|s| s.usage.iter().map(|u| u.client))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 51);
        // The fleet lost everything: all go out again.
        l.reshare_all();
        assert_eq!(l.unshared(), 51);
        assert_eq!(l.take_fleet_share(1_000, ACTIVE).usage.len(), 51);
    }

    #[tokio::test(start_paused = true)]
    async fn clients_charged_just_before_the_fleet_started_are_refreshed_too() {
        let l = limits(QUOTA);
        let (a, b) = ("192.0.2.1", "192.0.2.2");
        l.charge(&site(), key(a), 100);
        tokio::time::advance(ACTIVE + Duration::from_secs(1)).await;
        l.charge(&site(), key(b), 100);
        let first = l.take_fleet_share(20, ACTIVE);
        assert_eq!(first.usage.len(), 2);
        // b is active: it keeps learning what the others send it; a is not.
        let second = l.take_fleet_share(20, ACTIVE);
        assert_eq!(second.usage.len(), 1);
        assert_eq!(second.usage[0].client, key(b));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_what_the_other_nodes_used() {
        let l = limits(QUOTA);
        let a = "192.0.2.1";
        l.take_fleet_share(100, ACTIVE);
        l.charge(&site(), key(a), 1_000);
        let share = l.take_fleet_share(100, ACTIVE);
        l.merge_fleet_totals(&share, &others(&share, 99_999_000));
        assert_eq!(refused_by(admit_cvd(&l, a)), Some(LimitKind::ClientQuota));
        let reloaded = l.reconfigured(l.config().clone()).unwrap();
        assert_eq!(
            refused_by(admit_cvd(&reloaded, a)),
            Some(LimitKind::ClientQuota)
        );
        assert!(reloaded.quotas().is_sharing());
        // Its counters go out again soon after the reload.
        assert_eq!(reloaded.take_fleet_share(100, ACTIVE).usage.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn active_clients_are_refreshed_in_turns_within_the_bound() {
        let l = limits(QUOTA);
        l.take_fleet_share(10, ACTIVE);
        for n in 0..25u8 {
            l.charge(&site(), key(&format!("198.51.100.{n}")), 100);
        }
        let mut counts = std::collections::BTreeMap::<ClientKey, u32>::new();
        for _ in 0..10 {
            let share = l.take_fleet_share(10, ACTIVE);
            assert_eq!(share.usage.len(), 10);
            for u in &share.usage {
                *counts.entry(u.client).or_default() += 1;
            }
        }
        // 100 slots over 25 clients: each had its turns, none twice as
        // many as another.
        assert_eq!(counts.len(), 25);
        let (least, most) = (counts.values().min(), counts.values().max());
        assert!(least >= Some(&3) && most <= Some(&5), "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_quiet_here_learns_the_fleets_requests_while_its_budget_is_spent() {
        let l = limits(RATE);
        let a = "192.0.2.1";
        l.take_fleet_share(100, ACTIVE);
        assert_eq!(refused_by(admit_small(&l, a)), None);
        let share = l.take_fleet_share(100, ACTIVE);
        assert_eq!(share.requests[0].admitted, 1);
        l.merge_fleet_totals(
            &share,
            &FleetTotals {
                usage: Vec::new(),
                requests: vec![Duration::from_secs(1)],
            },
        );
        // No request here since; the client is refreshed all the same...
        let refresh = l.take_fleet_share(100, ACTIVE);
        assert_eq!(refresh.requests.len(), 1);
        assert_eq!(refresh.requests[0].admitted, 0);
        assert_eq!(refresh.requests[0].debt, Duration::from_secs(1));
        // ...and learns that the other nodes spent its burst.
        l.merge_fleet_totals(
            &refresh,
            &FleetTotals {
                usage: Vec::new(),
                requests: vec![Duration::from_secs(5)],
            },
        );
        assert_eq!(refused_by(admit_small(&l, a)), Some(LimitKind::RequestRate));
        // Once its TAT lies in the past it leaves the rotation.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(l.take_fleet_share(100, ACTIVE).is_empty());
    }

    const RATE: &str = "[limits.requests]\nrequests = 60\nper = \"1m\"\nburst = 5";

    #[tokio::test(start_paused = true)]
    async fn requests_on_other_nodes_use_up_the_burst_here() {
        let l = limits(RATE);
        let (a, b) = ("192.0.2.1", "192.0.2.2");
        assert!(l.take_fleet_share(100, ACTIVE).is_empty());
        for _ in 0..2 {
            assert_eq!(refused_by(admit_small(&l, a)), None);
        }
        assert_eq!(refused_by(admit_small(&l, b)), None);
        let share = l.take_fleet_share(100, ACTIVE);
        assert_eq!(share.request_interval, Some(Duration::from_secs(1)));
        let mut requests = share.requests.clone();
        requests.sort_by_key(|r| r.client);
        assert_eq!(requests[0].client, key(a));
        assert_eq!(requests[0].admitted, 2);
        assert_eq!(requests[0].debt, Duration::from_secs(2));
        assert_eq!(requests[1].admitted, 1);
        // Another node admitted three more of a's: the fleet's TAT is 5 s
        // ahead, the whole burst. b made no request elsewhere.
        let totals = FleetTotals {
            usage: Vec::new(),
            requests: share
                .requests
                .iter()
                .map(|r| {
                    if r.client == key(a) {
                        Duration::from_secs(5)
                    } else {
                        r.debt
                    }
                })
                .collect(),
        };
        // One more request here while the answer was on its way.
        assert_eq!(refused_by(admit_small(&l, a)), None);
        l.merge_fleet_totals(&share, &totals);
        assert_eq!(refused_by(admit_small(&l, a)), Some(LimitKind::RequestRate));
        assert_eq!(refused_by(admit_small(&l, b)), None);
        // The request made during the exchange is counted on top, and goes
        // out with the next share.
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(refused_by(admit_small(&l, a)), Some(LimitKind::RequestRate));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(refused_by(admit_small(&l, a)), None);
        let next = l.take_fleet_share(100, ACTIVE);
        let of_a = next.requests.iter().find(|r| r.client == key(a)).unwrap();
        assert_eq!(of_a.admitted, 2);
        assert_eq!(of_a.debt, Duration::from_millis(4_900));
    }

    #[tokio::test(start_paused = true)]
    async fn request_counts_the_fleet_did_not_take_go_out_again() {
        let l = limits(RATE);
        l.take_fleet_share(100, ACTIVE);
        let a = "192.0.2.1";
        assert_eq!(refused_by(admit_small(&l, a)), None);
        let share = l.take_fleet_share(100, ACTIVE);
        assert_eq!(share.requests[0].admitted, 1);
        assert_eq!(refused_by(admit_small(&l, a)), None);
        l.return_fleet_share(share);
        let again = l.take_fleet_share(100, ACTIVE);
        assert_eq!(again.requests.len(), 1);
        assert_eq!(again.requests[0].admitted, 2);
        l.merge_fleet_totals(
            &again,
            &FleetTotals {
                usage: Vec::new(),
                requests: vec![Duration::from_secs(2)],
            },
        );
        // Requests that no longer weigh on the budget when they can be
        // shared (Redis was out of reach for a while) count only as far as
        // they still do...
        for _ in 0..3 {
            assert_eq!(refused_by(admit_small(&l, a)), None);
        }
        let share = l.take_fleet_share(100, ACTIVE);
        l.return_fleet_share(share);
        tokio::time::advance(Duration::from_millis(3_500)).await;
        let late = l.take_fleet_share(100, ACTIVE);
        assert_eq!(late.requests[0].admitted, 2);
        assert_eq!(late.requests[0].debt, Duration::from_millis(1_500));
        l.return_fleet_share(late);
        // ...and not at all once the client's budget is full again: it is
        // forgotten as on a single node.
        tokio::time::advance(Duration::from_secs(60)).await;
        l.maintain();
        assert!(l.take_fleet_share(100, ACTIVE).is_empty());
        assert_eq!(l.status().requests.unwrap().keys, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_fleet_request_rates_work_alone() {
        let l = limits(RATE);
        let a = "192.0.2.1";
        for _ in 0..5 {
            assert_eq!(refused_by(admit_small(&l, a)), None);
        }
        assert_eq!(refused_by(admit_small(&l, a)), Some(LimitKind::RequestRate));
        assert!(!l.requests.as_ref().unwrap().is_sharing());
        tokio::time::advance(Duration::from_secs(60)).await;
        l.maintain();
        assert_eq!(l.status().requests.unwrap().keys, 0);
    }
}
