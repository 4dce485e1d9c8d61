//! `cvdmirror serve --fleet` as operators run it: nodes on 127.0.0.x, each
//! with its own root and admin API, one real Redis. A node that joins is in
//! every node's `/fleet.json`; a node killed with SIGKILL leaves within the
//! node TTL; a busy node answers a whole-CVD download with one `302` to a
//! node that publishes the same bytes and has headroom, and never redirects
//! a header check, a redirected request or a file nobody else has; one
//! node (the lease holder) pulls from upstream and the others from it, a
//! push on any node reaches it, and when it dies another takes over.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::cluster::{
    CONVERGE, SYNCED, fleet_json, lease_holder, members, node, node_with, served_version,
    syncing_node, syncing_node_with, wait_redirected, wait_serving,
};

use crate::support::fixture;
use crate::support::freshclam::{Client, Mode, fmt_entries};
use crate::support::redis::Redis;
use crate::support::server::{ADMIN_TOKEN, TestServer};
use crate::support::upstream::show;
use crate::support::wait::check;
use crate::support::wait::wait_until;
use crate::support::world::{CVD_SIZE, DB, World};

/// Nodes `a` (always busy) and `b` (idle) serving the same
/// `bytecode.cvd`, once `a` redirects downloads of it to `b` (until `a`
/// knows `b`'s copy, it serves the download itself); and those bytes.
fn busy_and_idle(redis: &Redis) -> (TestServer, TestServer, Vec<u8>) {
    let cvd = fixture("bytecode-268.cvd");
    let files: &[(&str, &[u8])] = &[("bytecode.cvd", &cvd)];
    let a = node(redis, "a", Ipv4Addr::new(127, 0, 0, 1), files, 0.0);
    let b = node(redis, "b", Ipv4Addr::new(127, 0, 0, 2), files, 0.9);
    wait_redirected(&a, "/bytecode.cvd");
    (a, b, cvd)
}

/// The address and path of an absolute `http://` redirect target.
fn split_location(location: &str) -> (SocketAddr, String) {
    let rest = location.strip_prefix("http://").unwrap_or(location);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (host.parse().unwrap(), path.to_owned())
}

#[test]
fn nodes_join_see_each_others_versions_and_a_killed_node_leaves() {
    let redis = Redis::start();
    let cvd = fixture("bytecode-268.cvd");
    let files: &[(&str, &[u8])] = &[("bytecode.cvd", &cvd)];
    let a = node(&redis, "a", Ipv4Addr::new(127, 0, 0, 1), files, 0.9);
    let b = node(&redis, "b", Ipv4Addr::new(127, 0, 0, 2), files, 0.9);
    let c = node(&redis, "c", Ipv4Addr::new(127, 0, 0, 3), files, 0.9);
    for server in [&a, &b, &c] {
        wait_until(CONVERGE, || {
            let names = members(server);
            check(names == ["a", "b", "c"], || format!("members {names:?}"))
        });
    }
    // Each node reports its files once it has listed and hashed its root.
    let view = wait_until(CONVERGE, || {
        let view = fleet_json(&a);
        let all = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|node| node["versions"]["bytecode"] == 268 && node["files"] == 1);
        check(all, || format!("{view}")).map(|()| view)
    });
    for node in view["nodes"].as_array().unwrap() {
        assert_eq!(node["link"]["capacity"], 12_500_000, "{node}");
        assert_eq!(node["fresh"], true, "{node}");
    }
    assert_eq!(view["consistent_versions"]["bytecode"], 268, "{view}");
    assert_eq!(view["redis_ok"], true);
    // The status page's data and the metrics carry the fleet too.
    let status = a.status();
    assert_eq!(
        status["fleet"]["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let metrics = String::from_utf8(a.admin("GET", "/metrics", &[]).body).unwrap();
    assert!(metrics.contains("cvdmirror_fleet_nodes 3"), "{metrics}");
    assert!(metrics.contains("cvdmirror_fleet_redis_up 1"), "{metrics}");

    c.signal("KILL");
    let left = std::time::Instant::now();
    for server in [&a, &b] {
        wait_until(CONVERGE, || {
            let names = members(server);
            check(names == ["a", "b"], || format!("members {names:?}"))
        });
    }
    // The node TTL is 1 s; the view is read every 100 ms.
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
}

#[test]
fn a_busy_node_sends_whole_cvds_once_to_a_node_with_the_same_bytes() {
    let redis = Redis::start();
    let cvd = fixture("bytecode-268.cvd");
    let other = fixture("bytecode-339.cvd");
    // `a` is always busy (redirect above 0 % of its link); `b` is idle.
    let a = node(
        &redis,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        &[("bytecode.cvd", &cvd), ("daily.cvd", &other)],
        0.0,
    );
    let b = node(
        &redis,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        &[("bytecode.cvd", &cvd), ("daily.cvd", &cvd)],
        0.9,
    );
    let redirected = wait_redirected(&a, "/bytecode.cvd");
    let location = redirected.header("location").unwrap().to_owned();
    assert_eq!(location, format!("http://{}/bytecode.cvd?via=a", b.addr));
    assert_eq!(redirected.header("cache-control"), Some("no-store"));
    assert!(redirected.body.is_empty());

    // The target serves the same bytes, and never sends the client on.
    let path = location.split_once(&b.addr.to_string()).unwrap().1;
    let served = b.get(path, &[]);
    assert_eq!(served.status, 200);
    assert!(served.body == cvd, "the redirect target served other bytes");
    // Nor does the busy node redirect a request that was redirected once.
    assert_eq!(a.get("/bytecode.cvd?via=b", &[]).status, 200);

    // Small requests are answered where they arrive.
    let check_header = a.get("/bytecode.cvd", &[("Range", "bytes=0-511")]);
    assert_eq!(check_header.status, 206);
    assert_eq!(a.request("HEAD", "/bytecode.cvd", &[]).status, 200);
    // A file no other node has byte for byte stays here.
    let own = a.get("/daily.cvd", &[]);
    assert_eq!(own.status, 200);
    assert!(own.body == other);
}

/// Opens a download of `path` from `server` and reads none of it: the
/// transfer stays running (and holds its herd gate slot) while the stream
/// lives.
fn stalled_download(server: &TestServer, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: fleet.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream
}

#[test]
fn a_download_the_herd_gate_would_refuse_goes_to_a_node_that_admits_it() {
    let redis = Redis::start();
    // Larger than what loopback's socket buffers absorb: a download
    // nobody reads keeps running.
    let big: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let files: &[(&str, &[u8])] = &[("daily.cvd", &big)];
    // Two whole downloads at a time (100 Mbit/s, 40 Mbit/s each).
    let gate = "[limits.herd]\nbulk_min_rate = \"40Mbit\"\n";
    let a = node_with(
        &redis,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        files,
        0.9,
        "",
        gate,
    );
    let b = node_with(
        &redis,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        files,
        0.9,
        "",
        gate,
    );
    wait_until(CONVERGE, || {
        let names = members(&a);
        check(names == ["a", "b"], || format!("members {names:?}"))
    });
    // `a`'s two slots taken by clients that stopped reading: its gate is
    // closed while its link is idle again (nothing to redirect for
    // headroom's sake).
    let _held = [
        stalled_download(&a, "/daily.cvd"),
        stalled_download(&a, "/daily.cvd"),
    ];
    wait_until(CONVERGE, || {
        let status = a.status().to_string();
        let closed = status.contains("closed (2 running");
        let view = fleet_json(&a);
        let own = view["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|node| node["node"] == "a"))
            .cloned()
            .unwrap_or_default();
        let idle = own["link"]["load"]
            .as_u64()
            .is_some_and(|load| load < 1_000_000);
        check(closed && idle, || format!("{own}\n{status}"))
    });
    // The third download would be refused at `a`: it goes to `b`, which
    // admits it and sends the same bytes (once each node has hashed its
    // copy and reported the digest: until then it is refused).
    let response = wait_redirected(&a, "/daily.cvd");
    let location = response.header("location").unwrap().to_owned();
    assert_eq!(location, format!("http://{}/daily.cvd?via=a", b.addr));
    let served = b.get("/daily.cvd?via=a", &[]);
    assert_eq!(served.status, 200);
    assert!(served.body == big, "the target served other bytes");
    // A request that came by way of another node is refused as before.
    assert_eq!(a.get("/daily.cvd?via=b", &[]).status, 429);
}

#[test]
fn one_node_pulls_from_upstream_the_other_from_it_and_takes_over_when_it_dies() {
    let redis = Redis::start();
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let keys = tempfile::tempdir().unwrap();
    let a = syncing_node(
        &redis,
        &world,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        keys.path(),
    );
    let b = syncing_node(
        &redis,
        &world,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        keys.path(),
    );
    for server in [&a, &b] {
        wait_until(SYNCED, || {
            let version = served_version(server);
            check(version == Some(271), || format!("serving {version:?}"))
        });
    }
    let holder = wait_until(CONVERGE, || {
        let (seen_a, seen_b) = (lease_holder(&a), lease_holder(&b));
        check(seen_a.is_some() && seen_a == seen_b, || {
            format!("holders {seen_a:?} / {seen_b:?}")
        })
        .map(|()| seen_a.unwrap_or_default())
    });
    // Upstream saw one puller: the whole CVD was downloaded from it once;
    // the other node took it from the holder.
    let cvd_downloads = |log: &[crate::support::upstream::Logged]| {
        log.iter()
            .filter(|l| {
                l.method == "GET" && l.file() == format!("{DB}.cvd") && l.header("range").is_none()
            })
            .count()
    };
    let log = world.up.log();
    assert_eq!(cvd_downloads(&log), 1, "{}", show(&log));

    // An operator's push on the other node reaches the puller: both serve
    // the next release long before their hourly pass, downloaded from
    // upstream once.
    let (puller, other) = if holder == "a" { (a, b) } else { (b, a) };
    let mark = world.up.mark();
    world.release(271, 272, CVD_SIZE);
    let token = format!("Bearer {ADMIN_TOKEN}");
    let pushed = other.admin("POST", "/sync", &[("Authorization", token.as_str())]);
    assert_eq!(pushed.status, 202);
    for server in [&puller, &other] {
        wait_until(SYNCED, || {
            let version = served_version(server);
            check(version == Some(272), || format!("serving {version:?}"))
        });
    }
    let log = world.up.log_since(mark);
    assert_eq!(cvd_downloads(&log), 1, "{}", show(&log));

    // The puller dies; the survivor takes the lease and pulls the next
    // release from upstream itself.
    let (dead, survivor) = (puller, other);
    dead.signal("KILL");
    let mark = world.up.mark();
    world.release(272, 273, CVD_SIZE);
    wait_until(SYNCED, || {
        let now = lease_holder(&survivor);
        let version = served_version(&survivor);
        check(
            now.is_some() && now != Some(holder.clone()) && version == Some(273),
            || format!("holder {now:?} (was {holder}), serving {version:?}"),
        )
    });
    let log = world.up.log_since(mark);
    assert!(
        log.iter()
            .any(|l| l.file() == format!("{DB}.cvd") || l.file().ends_with(".cdiff")),
        "the survivor fetched the new release from upstream:\n{}",
        show(&log)
    );
}

#[test]
fn a_node_syncing_from_the_puller_passes_the_limits_meant_for_clients() {
    let redis = Redis::start();
    let world = World::new();
    // A whole CVD above the bulk threshold (1 MiB): the herd gate judges it.
    world.release(268, 271, 2 << 20);
    let keys = tempfile::tempdir().unwrap();
    // `a` pulls from upstream and admits no whole download from a client
    // at all: each would need more than its link.
    let a = syncing_node_with(
        &redis,
        &world,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        keys.path(),
        &["--link-rate", "100Mbit", "--bulk-min-rate", "1Gbit"],
        "",
    );
    wait_serving(&a, 271);
    assert_eq!(lease_holder(&a).as_deref(), Some("a"));
    assert_eq!(a.get("/bytecode.cvd", &[]).status, 429);
    assert_eq!(
        a.get("/bytecode.cvd", &[("Authorization", "Bearer guessed")])
            .status,
        429
    );
    // `b` starts empty and syncs from `a` with the fleet's peer token: the
    // whole CVD gets through.
    let b = syncing_node(
        &redis,
        &world,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        keys.path(),
    );
    wait_serving(&b, 271);
    // `b`'s requests at `a` (its sync's User-Agent; the test's own have
    // none).
    let entries = a.access_log_entries();
    let from_b: Vec<(String, u16)> = entries
        .iter()
        .filter(|entry| entry.user_agent.starts_with("cvdmirror"))
        .map(|entry| (entry.path.clone(), entry.status))
        .collect();
    assert!(
        from_b.contains(&("/bytecode.cvd".to_owned(), 200)),
        "{from_b:?}\n{}",
        fmt_entries(&entries)
    );
    assert!(
        from_b.iter().all(|(_, status)| *status != 429),
        "{from_b:?}"
    );
    let metrics = String::from_utf8(a.admin("GET", "/metrics", &[]).body).unwrap();
    assert!(metrics.contains("decision=\"peer\""), "{metrics}");
}

#[test]
fn freshclam_follows_a_busy_nodes_redirect_and_installs_the_same_bytes() {
    let redis = Redis::start();
    let (a, b, cvd) = busy_and_idle(&redis);
    let client = Client::new(&format!("http://{}", a.addr), Mode::PrivateMirror, &[]);
    let run = client.run();
    run.assert_ok();
    assert!(
        client.read("bytecode.cvd") == cvd,
        "freshclam installed other bytes"
    );
    let exchanges = run.exchanges();
    let statuses: Vec<(String, Option<u16>)> = exchanges
        .iter()
        .filter(|e| e.path.starts_with("/bytecode.cvd"))
        .map(|e| (e.path.clone(), e.status))
        .collect();
    // The header check at `a`, the download redirected once, served by `b`.
    assert!(
        statuses.contains(&("/bytecode.cvd?via=a".to_owned(), Some(200))),
        "{statuses:?}\n{}",
        run.output()
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|(_, status)| *status == Some(302))
            .count(),
        1,
        "{statuses:?}"
    );
    let served_by_b = b.access_log_containing("/bytecode.cvd?via=a");
    assert!(served_by_b.contains(" 200 "), "{served_by_b}");
}

#[test]
fn redis_dies_and_returns_during_a_herd_and_no_request_fails_or_waits() {
    let mut redis = Redis::start();
    let (a, b, cvd) = busy_and_idle(&redis);
    let (a_addr, b_addr) = (a.addr, b.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let herd: Vec<_> = (0..8)
        .map(|i| {
            let stop = std::sync::Arc::clone(&stop);
            let cvd = cvd.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut slowest = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = if i % 2 == 0 { a_addr } else { b_addr };
                    let started = std::time::Instant::now();
                    let check = crate::support::http::request(
                        at,
                        "GET",
                        "/bytecode.cvd",
                        &[("Range", "bytes=0-511")],
                    );
                    let mut whole = crate::support::http::request(at, "GET", "/bytecode.cvd", &[]);
                    if whole.status == 302 {
                        // To whichever node the redirect names (a busy `b`
                        // sends clients to `a` as well).
                        let location = whole.header("location").unwrap_or_default().to_owned();
                        let (to, path) = split_location(&location);
                        whole = crate::support::http::request(to, "GET", &path, &[]);
                    }
                    slowest = slowest.max(started.elapsed());
                    seen.push((check.status, whole.status, whole.body == cvd));
                }
                (seen, slowest)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    redis.kill();
    // Longer than stale_after (2 s): redirects stop, serving does not.
    std::thread::sleep(Duration::from_millis(2500));
    redis.restart();
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for thread in herd {
        let (seen, slowest) = thread.join().unwrap();
        for (check, whole, same) in &seen {
            assert_eq!(*check, 206, "{seen:?}");
            assert_eq!(*whole, 200, "{seen:?}");
            assert!(same, "a download served other bytes");
        }
        // Nothing on the request path waits for Redis.
        assert!(
            slowest < Duration::from_secs(1),
            "a request took {slowest:?}"
        );
        requests += seen.len();
    }
    assert!(requests > 50, "the herd made only {requests} requests");
    // The fleet converges again on the restarted (empty) Redis.
    for server in [&a, &b] {
        wait_until(CONVERGE, || {
            let view = fleet_json(server);
            let names = members(server);
            check(view["redis_ok"] == true && names == ["a", "b"], || {
                format!("{view}")
            })
        });
    }
}

#[test]
fn a_client_quota_holds_across_two_nodes() {
    let redis = Redis::start();
    let cvd = fixture("bytecode-268.cvd");
    let size = cvd.len() as u64;
    // Room for three and a half downloads an hour, fleet-wide (quotas
    // apply to bulk downloads: make this small CVD one).
    let quota = format!(
        "[limits]\nbulk_threshold = 10000\n\n\
         [limits.client_quota]\nlimit = {}\nperiod = \"1h\"\n",
        size * 7 / 2
    );
    let files: &[(&str, &[u8])] = &[("bytecode.cvd", &cvd)];
    let a = node_with(
        &redis,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        files,
        0.9,
        "",
        &quota,
    );
    let b = node_with(
        &redis,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        files,
        0.9,
        "",
        &quota,
    );
    wait_until(CONVERGE, || {
        let names = members(&a);
        check(names == ["a", "b"], || format!("members {names:?}"))
    });
    // Two downloads on each node: within the quota.
    for server in [&a, &b, &a, &b] {
        let response = server.get("/bytecode.cvd", &[]);
        assert_eq!(response.status, 200);
    }
    // Each node exchanges its totals with Redis every second: two more
    // exchanges on both, and each knows the other's downloads.
    let syncs = |server: &TestServer| fleet_json(server)["shared_limits"]["syncs"].as_u64();
    let before = [syncs(&a), syncs(&b)];
    for (server, before) in [(&a, before[0]), (&b, before[1])] {
        let before = before.expect("/fleet.json shows the shared limits");
        wait_until(CONVERGE, || {
            let now = syncs(server).unwrap_or_default();
            check(now >= before + 2, || {
                format!("{now} exchanges, {before} before")
            })
        });
    }
    // `a` served two and `b` two: alone, each would admit one more whole
    // download (2 of 3.5 used); knowing the other's, both refuse.
    for server in [&a, &b] {
        assert_eq!(server.get("/bytecode.cvd", &[]).status, 429);
    }
}
