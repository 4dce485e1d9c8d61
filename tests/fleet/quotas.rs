//! Client quotas and request rates shared through a real `redis-server`:
//! two (or three) `Limits`, each synced by its own
//! `shared_limits::spawn` task as a node's would be, decide alone and
//! still hold a client to one allowance across the fleet; without Redis
//! they go on alone, and when Redis returns, even empty, they converge.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cvdmirror::fleet::shared_limits::{self, SharedLimits, SharedLimitsConfig};
use cvdmirror::limits::{
    ClientKey, ClientPrefixes, Decision, LimitKind, Limits, LimitsConfig, Planned, SeededRandom,
    TokioClock,
};
use http::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::node::{config, eventually};
use crate::support::redis::Redis;

const MB: u64 = 1 << 20;
/// How often the test nodes sync.
const INTERVAL: Duration = Duration::from_millis(100);

/// 20 MB a day per client; requests are not limited.
const QUOTA: &str = "[limits.client_quota]\nlimit = 20_971_520\nperiod = \"1d\"";

/// A node's limits and the task that shares them.
struct LimitNode {
    limits: Arc<Limits>,
    shared: SharedLimits,
    shutdown: CancellationToken,
}

impl Drop for LimitNode {
    fn drop(&mut self) {
        self.shared.abort();
    }
}

/// 01:00 UTC tomorrow: no period boundary falls inside a test, and usage
/// keys expire after the day ends, in Redis's (real) time too.
fn t0() -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let day = 86_400;
    Duration::from_secs((now.as_secs() / day + 1) * day + 3_600)
}

fn node(redis: &Redis, name: &str, toml_text: &str) -> LimitNode {
    #[derive(serde::Deserialize)]
    struct File {
        limits: LimitsConfig,
    }
    let settings = toml::from_str::<File>(toml_text).unwrap().limits;
    let limits = Arc::new(
        Limits::with_env(
            settings,
            Arc::new(TokioClock::starting_at(t0())),
            Arc::new(SeededRandom::new(3)),
        )
        .unwrap(),
    );
    let shutdown = CancellationToken::new();
    let source = Arc::clone(&limits);
    let shared = shared_limits::spawn(
        &config(redis, name),
        SharedLimitsConfig {
            interval: INTERVAL,
            max_keys: 100,
            ..SharedLimitsConfig::default()
        },
        move || Arc::clone(&source),
        shutdown.clone(),
    )
    .unwrap();
    LimitNode {
        limits,
        shared,
        shutdown,
    }
}

fn key(ip: &str) -> ClientKey {
    ClientPrefixes::default().key(ip.parse().unwrap())
}

fn site() -> Arc<str> {
    Arc::from("mirror")
}

/// Whether `ip` may download a 60 MB CVD (or, `small`, a header check),
/// and how long the decision took.
fn admit(node: &LimitNode, ip: &str, small: bool) -> (Option<LimitKind>, Duration) {
    let site = site();
    let asked = Instant::now();
    let decision = node.limits.admit(
        &Planned {
            site: &site,
            client: key(ip),
            path_and_query: "/daily.cvd",
            status: if small {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            },
            is_head: false,
            body_len: if small { 512 } else { 60 * MB },
        },
        || u64::MAX,
    );
    let took = asked.elapsed();
    let refused = match decision {
        Decision::Serve(_) => None,
        Decision::Refuse(refusal) => Some(refusal.limit),
    };
    (refused, took)
}

fn refused(node: &LimitNode, ip: &str) -> Option<LimitKind> {
    admit(node, ip, false).0
}

fn charge(node: &LimitNode, ip: &str, bytes: u64) {
    node.limits.charge(&site(), key(ip), bytes);
}

/// The client's usage as `node` judges it: its own and the fleet's.
fn used(node: &LimitNode, ip: &str) -> u64 {
    // The node's clock, as its state is stamped.
    let now = Duration::from_millis(node.limits.state().saved_at_ms);
    node.limits
        .quotas()
        .check(&site(), key(ip), now)
        .client
        .unwrap()
        .used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spending_on_two_nodes_is_refused_once_the_fleet_total_passes_its_quota() {
    let redis = Redis::start();
    let nodes = [node(&redis, "a", QUOTA), node(&redis, "b", QUOTA)];
    eventually("both nodes reach redis", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.shared.status().redis_ok)
    })
    .await;
    let quota = 20 * MB;
    let (x, y) = ("192.0.2.10", "192.0.2.20");

    // x downloads 1 MB every 50 ms, alternating between the nodes: 10 MB/s
    // at each. A node learns of the other's bytes at most two intervals
    // later (one for the other to send them, one to read them), so each
    // may admit what it sees in that time beyond the quota.
    let per_node_rate = 10 * MB; // bytes per second at each node
    let slack_time = 2 * INTERVAL + Duration::from_millis(200);
    let slack = 2 * per_node_rate * u64::try_from(slack_time.as_millis()).unwrap() / 1000;
    let mut admitted = [0u64; 2];
    let mut refused_at = [None::<u64>; 2];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut turn = 0;
    while refused_at.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "never refused: {admitted:?}");
        let i = turn % 2;
        turn += 1;
        let total: u64 = admitted.iter().sum();
        match refused(&nodes[i], x) {
            None => {
                // Once refused, a node never admits x again this period.
                assert_eq!(refused_at[i], None, "node {i} admitted x again");
                charge(&nodes[i], x, MB);
                admitted[i] += MB;
            }
            Some(kind) => {
                assert_eq!(kind, LimitKind::ClientQuota);
                refused_at[i].get_or_insert(total);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total: u64 = admitted.iter().sum();
    // Never refused below the quota, and never past it by more than the
    // slack; without sharing it would have been twice the quota.
    assert!(
        refused_at.iter().all(|at| at.unwrap() >= quota),
        "refused at {refused_at:?}"
    );
    assert!(
        total <= quota + slack,
        "admitted {} MB (a {} MB, b {} MB) for a {} MB quota, slack {} MB",
        total / MB,
        admitted[0] / MB,
        admitted[1] / MB,
        quota / MB,
        slack / MB
    );
    assert!(admitted.iter().all(|&a| a > 0 && a < quota), "{admitted:?}");
    eventually(
        "both nodes count every byte",
        Duration::from_secs(3),
        || nodes.iter().all(|n| used(n, x) == total),
    )
    .await;
    // Another client is untouched on both.
    for n in &nodes {
        assert_eq!(refused(n, y), None);
    }
    // b learns of a client's bytes elsewhere once it served the client
    // itself (here a header check).
    charge(&nodes[0], y, 5 * MB);
    charge(&nodes[1], y, 512);
    eventually("b sees y's bytes on a", Duration::from_secs(3), || {
        used(&nodes[1], y) == 5 * MB + 512
    })
    .await;
    assert_eq!(refused(&nodes[1], y), None);
    assert!(nodes.iter().all(|n| n.shared.status().failures == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_nodes_decide_alone_and_converge_when_it_returns_empty() {
    let mut redis = Redis::start();
    let nodes = [node(&redis, "a", QUOTA), node(&redis, "b", QUOTA)];
    let (x, z) = ("192.0.2.10", "2001:db8:7::1");
    charge(&nodes[0], x, 6 * MB);
    charge(&nodes[1], x, 6 * MB);
    // z used most of its quota on a, and made a header check on b.
    charge(&nodes[0], z, 19 * MB);
    charge(&nodes[1], z, 512);
    eventually(
        "both nodes see the fleet's usage",
        Duration::from_secs(5),
        || {
            nodes
                .iter()
                .all(|n| used(n, x) == 12 * MB && used(n, z) == 19 * MB + 512)
        },
    )
    .await;

    redis.kill();
    eventually("both syncs notice", Duration::from_secs(3), || {
        nodes.iter().all(|n| !n.shared.status().redis_ok)
    })
    .await;
    // Each node goes on with its own bytes and the others' as last known,
    // deciding at once: nothing waits for Redis.
    charge(&nodes[0], x, 6 * MB);
    charge(&nodes[1], x, 6 * MB);
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        for n in &nodes {
            let (refused, took) = admit(n, x, false);
            slowest = slowest.max(took);
            // 12 MB of its own and 6 MB of the other's: under 20 MB.
            assert_eq!(refused, None);
            // Header checks are never held to a quota.
            assert_eq!(admit(n, z, true).0, None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        slowest < Duration::from_millis(20),
        "admit took {slowest:?}"
    );
    assert_eq!(used(&nodes[0], x), 18 * MB);
    charge(&nodes[0], x, 3 * MB);
    // a knows it is over; b cannot know yet, and serves.
    assert_eq!(refused(&nodes[0], x), Some(LimitKind::ClientQuota));
    assert_eq!(refused(&nodes[1], x), None);
    let failures = nodes[0].shared.status().failures;
    assert!(failures >= 3, "{failures} failed syncs in over a second");

    // Redis returns without any data.
    tokio::task::block_in_place(|| redis.restart());
    eventually("the nodes converge on x", Duration::from_secs(5), || {
        nodes.iter().all(|n| used(n, x) == 27 * MB)
    })
    .await;
    assert_eq!(refused(&nodes[1], x), Some(LimitKind::ClientQuota));
    eventually(
        "both found redis had lost the fleet's usage",
        Duration::from_secs(3),
        || nodes.iter().all(|n| n.shared.status().resends == 1),
    )
    .await;
    // A node that joins now learns z's usage on a and b, which they sent
    // again though z did nothing since, once it sent z a megabyte itself.
    let c = node(&redis, "c", QUOTA);
    assert_eq!(refused(&c, z), None);
    charge(&c, z, MB);
    eventually(
        "c learns z's usage on a and b",
        Duration::from_secs(5),
        || used(&c, z) == 20 * MB + 512,
    )
    .await;
    assert_eq!(refused(&c, z), Some(LimitKind::ClientQuota));
    assert!(nodes.iter().all(|n| n.shared.status().redis_ok));

    // A clean stop hands over what changed since the last sync.
    let before = c.shared.rounds();
    charge(&c, z, 1_000);
    c.shutdown.cancel();
    c.shared.stopped().await;
    assert!(c.shared.rounds() > before);
    charge(&nodes[0], z, 1);
    eventually("a sees c's last bytes", Duration::from_secs(3), || {
        used(&nodes[0], z) == 20 * MB + 1 + 512 + 1_000
    })
    .await;
}

/// 10 requests at once, then one every 10 s.
const RATE: &str = "[limits.requests]\nrequests = 10\nper = \"100s\"\nburst = 10";

/// Waits until `node` has synced twice: once surely after now.
async fn synced(node: &LimitNode, what: &str) {
    let seen = node.shared.rounds();
    eventually(what, Duration::from_secs(3), || {
        node.shared.rounds() >= seen + 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_rate_holds_across_nodes_and_falls_back_to_each_node_without_redis() {
    let mut redis = Redis::start();
    let nodes = [node(&redis, "a", RATE), node(&redis, "b", RATE)];
    eventually("both nodes reach redis", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.shared.status().redis_ok)
    })
    .await;
    let x = "192.0.2.10";
    for _ in 0..8 {
        assert_eq!(admit(&nodes[0], x, true).0, None);
    }
    synced(&nodes[0], "a sends x's requests").await;
    // b decides alone until its next sync: x has two requests of its
    // burst left, as far as b can tell the whole burst.
    for _ in 0..2 {
        assert_eq!(admit(&nodes[1], x, true).0, None);
    }
    synced(&nodes[1], "b sends x's requests and reads the fleet's").await;
    // The fleet's state: ten requests, the burst is spent, though b saw
    // two and a eight...
    assert_eq!(admit(&nodes[1], x, true).0, Some(LimitKind::RequestRate));
    // ...on a too, whose next sync refreshed x (its budget there is not
    // full again) though x asked a nothing since.
    synced(&nodes[0], "a reads the fleet's state of x").await;
    assert_eq!(admit(&nodes[0], x, true).0, Some(LimitKind::RequestRate));

    // Without Redis each node holds a client to its own burst.
    redis.kill();
    eventually("both syncs notice", Duration::from_secs(3), || {
        nodes.iter().all(|n| !n.shared.status().redis_ok)
    })
    .await;
    let w = "192.0.2.30";
    for n in &nodes {
        for _ in 0..10 {
            let (refused, took) = admit(n, w, true);
            assert_eq!(refused, None);
            assert!(took < Duration::from_millis(20), "admit took {took:?}");
        }
        assert_eq!(admit(n, w, true).0, Some(LimitKind::RequestRate));
        assert_eq!(admit(n, x, true).0, Some(LimitKind::RequestRate));
    }

    // Redis returns empty and the fleet shares rates again.
    tokio::task::block_in_place(|| redis.restart());
    eventually(
        "both syncs reach redis again",
        Duration::from_secs(5),
        || nodes.iter().all(|n| n.shared.status().redis_ok),
    )
    .await;
    let v = "192.0.2.40";
    for _ in 0..9 {
        assert_eq!(admit(&nodes[0], v, true).0, None);
    }
    synced(&nodes[0], "a sends v's requests").await;
    assert_eq!(admit(&nodes[1], v, true).0, None);
    synced(&nodes[1], "b reads the fleet's state of v").await;
    assert_eq!(admit(&nodes[1], v, true).0, Some(LimitKind::RequestRate));
}
