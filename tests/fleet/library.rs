//! The fleet library against a real `redis-server`: nodes joining and leaving, the
//! consistent version while a node lags, the upstream lease through kills
//! and clean shutdowns, redirect targets, Redis itself dying and coming
//! back, and shared counters. Each test starts its own Redis on a free
//! loopback port; timings are a tenth of the defaults or less, so the file
//! runs in seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use super::node::{config, eventually, names, report, start};
use crate::support::redis::Redis;
use tokio::time::Instant;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn abc() -> Vec<String> {
    ["a", "b", "c"].map(String::from).to_vec()
}

/// Draws `count` redirect targets for `file` from `view`, with random
/// numbers spread evenly over the range, and counts them by node.
fn draws(
    view: &cvdmirror::fleet::FleetView,
    file: &str,
    sha256: &str,
    from: &str,
    count: u64,
) -> BTreeMap<Option<String>, u64> {
    let mut counts = BTreeMap::new();
    for step in 0..count {
        let random = step * (u64::MAX / count) + u64::MAX / (2 * count);
        let target = view
            .redirect_target(file, sha256, from, random)
            .map(|target| target.node);
        *counts.entry(target).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_a_killed_node_leaves_within_the_node_ttl() {
    let redis = Redis::start();
    let nodes: Vec<_> = ["a", "b", "c"]
        .map(|name| start(config(&redis, name), report(11, &[], None, 0)))
        .into();
    eventually("every node sees all three", Duration::from_secs(5), || {
        nodes.iter().all(|node| {
            let view = node.view();
            view.redis_ok && names(&view) == abc() && view.nodes.iter().all(|n| n.fresh)
        })
    })
    .await;
    let view = nodes[0].view();
    let b = view.node("b").unwrap();
    assert_eq!(b.report.public_url, "http://b.test");
    assert!(b.age < Duration::from_secs(1), "{:?}", b.age);
    assert!(b.report.reported_at > 1_700_000_000);

    nodes[2].kill();
    let node_ttl = config(&redis, "c").node_ttl;
    let gone = eventually("c leaves a's and b's views", node_ttl * 3, || {
        nodes[..2]
            .iter()
            .all(|node| node.view().node("c").is_none())
    })
    .await;
    assert!(
        gone <= node_ttl + Duration::from_millis(500),
        "c left after {gone:?}"
    );
    assert_eq!(names(&nodes[0].view()), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_holds_the_consistent_version_back_until_the_lag_grace_passes() {
    let redis = Redis::start();
    let lag_grace = Duration::from_secs(2);
    let node = |name: &str, daily| {
        let mut config = config(&redis, name);
        config.lag_grace = lag_grace;
        start(config, report(daily, &[("main.cvd", SHA_A)], Some(1000), 0))
    };
    let nodes = [node("a", 11), node("b", 11), node("c", 10)];
    let joined = Instant::now();
    eventually("every node sees all three", Duration::from_secs(5), || {
        nodes.iter().all(|node| names(&node.view()) == abc())
    })
    .await;
    let view = nodes[0].view();
    assert!(joined.elapsed() < lag_grace, "too slow to see the grace");
    for node in &nodes {
        assert_eq!(
            node.view().consistent_version("daily"),
            Some(10),
            "{}",
            node.name
        );
    }
    // Before the grace, c still takes redirected clients.
    assert!(draws(&view, "main.cvd", SHA_A, "a", 100).contains_key(&Some("c".to_owned())));

    eventually("c lags in every view", lag_grace * 3, || {
        nodes.iter().all(|node| {
            let view = node.view();
            view.node("c").is_some_and(|c| c.lagging)
                && view.consistent_version("daily") == Some(11)
        })
    })
    .await;
    assert!(joined.elapsed() >= lag_grace);
    let view = nodes[0].view();
    assert!(!view.node("b").unwrap().lagging);
    assert_eq!(
        draws(&view, "main.cvd", SHA_A, "a", 100),
        BTreeMap::from([(Some("b".to_owned()), 100)])
    );
    assert!(view.snapshot().nodes[2].lagging);

    nodes[2].set(|report| {
        report.versions.insert("daily".to_owned(), 11);
    });
    eventually("c catches up in every view", Duration::from_secs(3), || {
        nodes.iter().all(|node| {
            let view = node.view();
            view.nodes.iter().all(|n| !n.lagging) && view.consistent_version("daily") == Some(11)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_the_lease_a_killed_holder_is_replaced_and_a_clean_stop_hands_it_over() {
    let redis = Redis::start();
    let lease_ttl = Duration::from_secs(2);
    let nodes: Vec<_> = ["a", "b", "c"]
        .map(|name| {
            let mut config = config(&redis, name);
            config.lease_ttl = lease_ttl;
            start(config, report(11, &[], None, 0))
        })
        .into();
    let holders = |nodes: &[super::node::Node]| -> Vec<usize> {
        (0..nodes.len())
            .filter(|&i| nodes[i].view().is_lease_holder())
            .collect()
    };
    eventually(
        "a node holds the lease and all agree",
        Duration::from_secs(5),
        || {
            let views: Vec<_> = nodes.iter().map(|node| node.view()).collect();
            holders(&nodes).len() == 1
                && views.iter().all(|view| {
                    view.lease.holder.is_some() && view.lease.holder == views[0].lease.holder
                })
        },
    )
    .await;
    // Exactly one holder, the same one, for a while.
    let first = holders(&nodes)[0];
    let token = nodes[first].view().lease.holder.clone().unwrap().token;
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(holders(&nodes), [first]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The holder dies: never two holders, and another takes over within
    // the lease TTL with a larger token.
    nodes[first].kill();
    let killed = Instant::now();
    let second = loop {
        let now = holders(&nodes);
        assert!(now.len() <= 1, "two holders: {now:?}");
        if let Some(&holder) = now.first()
            && holder != first
        {
            break holder;
        }
        assert!(killed.elapsed() < lease_ttl * 3, "no new holder");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let taken_over = killed.elapsed();
    assert!(
        taken_over <= lease_ttl + Duration::from_millis(600),
        "taken over after {taken_over:?}"
    );
    let second_token = nodes[second].view().lease.holder.clone().unwrap().token;
    assert!(second_token > token, "{second_token} after {token}");

    let third = 3 - first - second;
    eventually(
        "the last node sees the new holder",
        Duration::from_secs(2),
        || {
            nodes[third]
                .view()
                .lease
                .holder
                .as_ref()
                .map(|holder| holder.token)
                == Some(second_token)
        },
    )
    .await;

    // A clean stop hands the lease over at once, well within its TTL.
    nodes[second].stop().await;
    assert!(!nodes[second].view().is_lease_holder());
    let stopped = Instant::now();
    let handed_over = eventually("the last node takes the lease", lease_ttl * 2, || {
        nodes[third].view().is_lease_holder()
    })
    .await;
    assert!(
        handed_over < lease_ttl / 2,
        "handed over after {handed_over:?}"
    );
    let third_view = nodes[third].view();
    assert!(third_view.lease.holder.as_ref().unwrap().token > second_token);
    assert!(third_view.lease.changes >= 3, "{:?}", third_view.lease);
    assert!(
        third_view.node(&nodes[second].name).is_none(),
        "{:?}",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_go_to_other_nodes_with_headroom_and_identical_bytes_weighted_by_free_capacity() {
    let redis = Redis::start();
    let file = [("daily.cvd", SHA_A)];
    let nodes = [
        start(config(&redis, "a"), report(11, &file, Some(1000), 990)),
        start(config(&redis, "b"), report(11, &file, Some(1000), 100)),
        start(config(&redis, "c"), report(11, &file, Some(1000), 700)),
        start(config(&redis, "d"), report(11, &file, Some(1000), 950)),
        start(
            config(&redis, "e"),
            report(11, &[("daily.cvd", SHA_B)], Some(1000), 0),
        ),
        start(config(&redis, "f"), report(11, &file, None, 0)),
    ];
    eventually("a sees all six", Duration::from_secs(5), || {
        nodes[0]
            .view()
            .nodes
            .iter()
            .filter(|node| node.fresh)
            .count()
            == 6
    })
    .await;
    let view = nodes[0].view();
    // b has 900 free, c 300.
    assert_eq!(
        draws(&view, "daily.cvd", SHA_A, "a", 1000),
        BTreeMap::from([(Some("b".to_owned()), 750), (Some("c".to_owned()), 250)])
    );
    assert_eq!(
        draws(&view, "daily.cvd", SHA_A, "b", 1000),
        BTreeMap::from([(Some("c".to_owned()), 1000)])
    );
    assert_eq!(
        draws(&view, "daily.cvd", SHA_B, "a", 10),
        BTreeMap::from([(Some("e".to_owned()), 10)])
    );
    assert_eq!(view.redirect_target("main.cvd", SHA_A, "a", 0), None);
    let target = view.redirect_target("daily.cvd", SHA_A, "a", 0).unwrap();
    assert_eq!(target.location("/daily.cvd"), "http://b.test/daily.cvd");

    // b gets busy: all redirects go to c.
    nodes[1].set(|report| report.link.load = 950);
    eventually("b's load reaches a", Duration::from_secs(3), || {
        draws(&nodes[0].view(), "daily.cvd", SHA_A, "a", 100)
            == BTreeMap::from([(Some("c".to_owned()), 100)])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_view_stays_then_goes_stale_and_the_fleet_converges_after_a_restart() {
    let mut redis = Redis::start();
    let file = [("daily.cvd", SHA_A)];
    let nodes: Vec<_> = ["a", "b", "c"]
        .map(|name| start(config(&redis, name), report(11, &file, Some(1000), 0)))
        .into();
    let settings = config(&redis, "a");
    let converged = |nodes: &[super::node::Node]| {
        nodes.iter().all(|node| {
            let view = node.view();
            view.redis_ok && !view.stale() && names(&view) == abc()
        }) && nodes
            .iter()
            .filter(|node| node.view().is_lease_holder())
            .count()
            == 1
    };
    eventually("the fleet converges", Duration::from_secs(5), || {
        converged(&nodes)
    })
    .await;
    let token = nodes[0].view().lease.holder.clone().unwrap().token;
    assert!(
        nodes[0]
            .view()
            .redirect_target("daily.cvd", SHA_A, "a", 0)
            .is_some()
    );

    redis.kill();
    let killed = Instant::now();
    eventually("every view notices", Duration::from_secs(2), || {
        nodes.iter().all(|node| !node.view().redis_ok)
    })
    .await;
    // Beats go on within the op timeout each, the view is read at once,
    // and the nodes stay until the view is stale.
    let beat_bound = settings.heartbeat + settings.op_timeout + Duration::from_millis(300);
    let mut last = nodes[0].view().computed_at;
    let mut last_change = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut slowest_read = Duration::ZERO;
    while killed.elapsed() < settings.stale_after / 2 {
        let asked = Instant::now();
        let view = nodes[0].view();
        slowest_read = slowest_read.max(asked.elapsed());
        if view.computed_at != last {
            longest_gap = longest_gap.max(last_change.elapsed());
            last = view.computed_at;
            last_change = Instant::now();
        }
        assert_eq!(names(&view), abc());
        assert!(!view.redis_ok);
        assert!(view.stale_since.is_some());
        assert!(view.redirect_target("daily.cvd", SHA_A, "a", 0).is_some());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    longest_gap = longest_gap.max(last_change.elapsed());
    assert!(longest_gap <= beat_bound, "a beat took {longest_gap:?}");
    assert!(
        slowest_read < Duration::from_millis(50),
        "view() took {slowest_read:?}"
    );

    eventually("the views go stale", settings.stale_after * 2, || {
        nodes.iter().all(|node| {
            let view = node.view();
            view.stale() && view.redirect_target("daily.cvd", SHA_A, "a", 0).is_none()
        })
    })
    .await;
    // Stale counts from the last heartbeat that reached Redis, at most a
    // beat before the kill.
    let stale_at = killed.elapsed();
    assert!(
        stale_at + settings.heartbeat + Duration::from_millis(50) >= settings.stale_after,
        "stale {stale_at:?} after the kill"
    );
    assert!(nodes.iter().all(|node| !node.view().is_lease_holder()));
    assert!(nodes[0].view().snapshot().stale);

    tokio::task::block_in_place(|| redis.restart());
    eventually("the fleet converges again", Duration::from_secs(5), || {
        converged(&nodes)
    })
    .await;
    let holder = nodes[0].view().lease.holder.clone().unwrap();
    assert!(
        holder.token > token,
        "token {} after {token}: fencing went back",
        holder.token
    );
    assert!(
        nodes[0]
            .view()
            .redirect_target("daily.cvd", SHA_A, "a", 0)
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_counters_add_up_across_nodes_and_fail_fast_without_redis() {
    let mut redis = Redis::start();
    let a = start(config(&redis, "a"), report(11, &[], None, 0));
    let b = start(config(&redis, "b"), report(11, &[], None, 0));
    let (on_a, on_b) = (a.fleet.counters(), b.fleet.counters());
    let minute = Duration::from_secs(60);
    assert_eq!(on_a.charge("198.51.100.7", 10, minute).await.unwrap(), 10);
    assert_eq!(on_b.charge("198.51.100.7", 5, minute).await.unwrap(), 15);
    assert_eq!(on_a.charge("198.51.100.7", 1, minute).await.unwrap(), 16);
    assert_eq!(on_b.charge("2001:db8::/64", 1, minute).await.unwrap(), 1);

    let period = Duration::from_millis(300);
    assert_eq!(on_a.charge("short", 1, period).await.unwrap(), 1);
    assert_eq!(on_b.charge("short", 1, period).await.unwrap(), 2);
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    assert_eq!(on_b.charge("short", 1, period).await.unwrap(), 1);

    redis.kill();
    let op_timeout = config(&redis, "a").op_timeout;
    for counters in [&on_a, &on_b, &on_a] {
        let asked = Instant::now();
        let result = counters.charge("198.51.100.7", 1, minute).await;
        let took = asked.elapsed();
        assert!(result.is_err(), "{result:?}");
        assert!(
            took <= op_timeout + Duration::from_millis(100),
            "charge took {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_each_call_at_most_the_op_timeout() {
    let redis = Redis::start();
    let nodes: Vec<_> = ["a", "b"]
        .map(|name| start(config(&redis, name), report(11, &[], None, 0)))
        .into();
    let settings = config(&redis, "a");
    eventually("the fleet converges", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|node| node.view().redis_ok && node.view().nodes.len() == 2)
    })
    .await;

    // A stopped Redis accepts connections and never answers.
    redis.pause();
    let paused = Instant::now();
    eventually("every view notices", Duration::from_secs(3), || {
        nodes.iter().all(|node| !node.view().redis_ok)
    })
    .await;
    let asked = Instant::now();
    let result = nodes[0]
        .fleet
        .counters()
        .charge("k", 1, Duration::from_secs(1))
        .await;
    let took = asked.elapsed();
    assert!(result.is_err(), "{result:?}");
    assert!(
        took <= settings.op_timeout + Duration::from_millis(100),
        "charge took {took:?}"
    );
    let beat_bound = settings.heartbeat + settings.op_timeout + Duration::from_millis(300);
    let mut last = nodes[0].view().computed_at;
    let mut last_change = Instant::now();
    let mut longest_gap = Duration::ZERO;
    while paused.elapsed() < settings.lease_ttl + settings.op_timeout {
        let view = nodes[0].view();
        if view.computed_at != last {
            longest_gap = longest_gap.max(last_change.elapsed());
            last = view.computed_at;
            last_change = Instant::now();
        }
        assert_eq!(view.nodes.len(), 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    longest_gap = longest_gap.max(last_change.elapsed());
    assert!(longest_gap <= beat_bound, "a beat took {longest_gap:?}");
    // Nobody can renew, so nobody believes it holds the lease.
    assert!(nodes.iter().all(|node| !node.view().is_lease_holder()));

    redis.resume();
    eventually("the fleet converges again", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|node| node.view().redis_ok && node.view().nodes.len() == 2)
            && nodes
                .iter()
                .filter(|node| node.view().is_lease_holder())
                .count()
                == 1
    })
    .await;
}
