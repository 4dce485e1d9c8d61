//! What the fleet tells DNS clients while one node lags: the beacon of any
//! node announces the newest version that every healthy node publishes, so
//! a client that reaches the lagging node is never sent for a version that
//! node lacks; once the node has lagged past the grace it is drained, the
//! beacon moves on, and the drained node sends what it lacks to a node
//! that has it (one `302`). Checked with our resolver, then with ClamAV
//! 1.5.3's freshclam in DNS mode asking the beacon through the system
//! resolver, as every client of a mirror with a beacon does.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::cluster::{
    CONVERGE, SYNCED, fleet_json, node_with, served_version, syncing_node_with, wait_serving,
};
use crate::support::freshclam::{Client, Mode, Run, fmt_entries};
use crate::support::redis::Redis;
use crate::support::server::{ADMIN_TOKEN, TestServer};
use crate::support::wait::{check, wait_until};
use crate::support::world::{CVD_SIZE, DB, World, cdiff_name, release_340, sign};
use crate::support::{access_log::LogLine, fixture};

/// The beacon's record name in these tests.
const NAME: &str = "current.cvd.fleet.test";

/// The version of `bytecode` the beacon at `beacon` announces now.
fn announced(beacon: SocketAddr) -> Option<u32> {
    crate::support::beacon::announced(beacon, NAME)
}

/// Waits until the beacon at `beacon` announces `version`.
fn announces(beacon: SocketAddr, version: u32, within: Duration) {
    wait_until(within, || {
        let now = announced(beacon);
        check(now == Some(version), || {
            format!("the beacon announces {now:?}, not {version}")
        })
    });
}

/// Waits until `server`'s view has node `name` publishing `version`.
fn knows(server: &TestServer, name: &str, version: u32) {
    wait_until(CONVERGE, || {
        let view = fleet_json(server);
        let has = view["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|node| node["node"] == name))
            .map(|node| node["versions"][DB].clone());
        check(has == Some(serde_json::json!(version)), || {
            format!("{view}")
        })
    });
}

/// `POST /sync` on `server`, then waits until it serves `version`.
fn push_and_wait(server: &TestServer, version: u32) {
    let token = format!("Bearer {ADMIN_TOKEN}");
    let pushed = server.admin("POST", "/sync", &[("Authorization", token.as_str())]);
    assert_eq!(pushed.status, 202);
    wait_serving(server, version);
}

/// The nodes in `server`'s view marked lagging.
fn lagging(server: &TestServer) -> Vec<String> {
    fleet_json(server)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["lagging"] == true)
        .filter_map(|node| node["node"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_beacon_announces_only_what_every_healthy_node_publishes() {
    // Reports that stay fresh through a busy second, and a lag grace
    // longer than the wait for `a`'s pass.
    const SLOW: &str =
        "node_ttl = \"4s\"\nlease_ttl = \"4s\"\nstale_after = \"8s\"\nlag_grace = \"8s\"\n";
    let redis = Redis::start();
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let keys = tempfile::tempdir().unwrap();
    // `a` syncs and answers DNS; `b` serves 271 from a root nobody updates
    // (no sync engine: it never pulls, and it lags once `a` moves on).
    let a = syncing_node_with(
        &redis,
        &world,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        keys.path(),
        &["--beacon-listen", "127.0.0.1:0", "--beacon-name", NAME],
        SLOW,
    );
    let cvd_271 = crate::support::world::cvd(271, CVD_SIZE);
    let _b = node_with(
        &redis,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        &[("bytecode.cvd", cvd_271.as_slice())],
        0.9,
        SLOW,
        "",
    );
    let beacon = crate::support::beacon::address(&a);
    announces(beacon, 271, SYNCED);
    // `a` knows that `b` publishes 271 (a node's versions are in its very
    // first report).
    knows(&a, "b", 271);

    // `a` publishes 272; `b` still has 271: the beacon keeps announcing
    // 271, so no client reaching `b` is sent for a version it lacks.
    world.release(271, 272, CVD_SIZE);
    push_and_wait(&a, 272);
    assert_eq!(announced(beacon), Some(271), "{}", fleet_json(&a));
    let view = fleet_json(&a);
    assert_eq!(view["consistent_versions"]["bytecode"], 271, "{view}");

    // Past the lag grace `b` is drained: it no longer holds the fleet back.
    announces(beacon, 272, SYNCED);
    assert_eq!(lagging(&a), ["b"], "{}", fleet_json(&a));
}

/// The requests of `run` as (path, status), for messages.
fn requests(run: &Run) -> Vec<(String, Option<u16>)> {
    run.exchanges()
        .into_iter()
        .map(|exchange| (exchange.path, exchange.status))
        .collect()
}

/// Whether `entries` show a whole `bytecode.cvd` sent.
fn whole_cvd_served(entries: &[LogLine]) -> bool {
    entries
        .iter()
        .any(|entry| entry.path.starts_with("/bytecode.cvd") && entry.status == 200)
}

#[test]
fn freshclam_in_dns_mode_is_never_sent_for_a_version_its_node_lacks() {
    // freshclam asks the system resolver, which asks port 53: the beacon
    // answers there, on a loopback address no other test uses.
    const NAMESERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 53, 1);
    // A lag grace that outlasts the first freshclam run by far.
    const FLEET: &str =
        "node_ttl = \"4s\"\nlease_ttl = \"4s\"\nstale_after = \"8s\"\nlag_grace = \"15s\"\n";
    let redis = Redis::start();
    // Upstream at 340 (a cdiff from ClamAV's genuine 339, signed by the
    // test PKI, which ClamAV 1.5.3 in FIPS mode accepts on its `.sign`).
    let r340 = release_340();
    let r341 = r340.next();
    let world = World::new();
    world.put_signed(&cdiff_name(340), &r340.cdiff);
    world.put_cvd(&r340.cvd);
    world.advertise(DB, 340);
    let keys = tempfile::tempdir().unwrap();
    let beacon_listen = format!("{NAMESERVER}:53");
    let a = syncing_node_with(
        &redis,
        &world,
        "a",
        Ipv4Addr::new(127, 0, 0, 1),
        keys.path(),
        &["--beacon-listen", &beacon_listen, "--beacon-name", NAME],
        FLEET,
    );
    // `b` serves 340 (whole CVD and cdiff, with their `.sign`s) from a root
    // nobody updates: it lags once `a` has 341.
    let b = node_with(
        &redis,
        "b",
        Ipv4Addr::new(127, 0, 0, 2),
        &[
            ("bytecode.cvd", r340.cvd.as_slice()),
            ("bytecode-340.cvd.sign", sign(&r340.cvd).as_slice()),
            ("bytecode-340.cdiff", r340.cdiff.as_slice()),
            ("bytecode-340.cdiff.sign", sign(&r340.cdiff).as_slice()),
        ],
        0.9,
        FLEET,
        "",
    );
    let beacon = crate::support::beacon::address(&a);
    assert_eq!(beacon, format!("{NAMESERVER}:53").parse().unwrap());
    wait_serving(&a, 340);
    knows(&a, "b", 340);

    // Upstream releases 341; `a` has it, `b` does not.
    world.put_signed(&cdiff_name(341), &r341.cdiff);
    world.put_cvd(&r341.cvd);
    world.advertise(DB, 341);
    push_and_wait(&a, 341);
    assert_eq!(a.get("/bytecode-341.cdiff", &[]).status, 200);
    assert_eq!(announced(beacon), Some(340), "{}", fleet_json(&a));

    // A client of `b` at the genuine 339 learns 340 from DNS and updates
    // by cdiff from `b`; it never asks for 341, nor for a whole CVD.
    let client = Client::clamav15(&b.url(""), Mode::DatabaseMirror).dns(NAME, NAMESERVER.into());
    let genuine = fixture("bytecode-339.cvd");
    client.install("bytecode.cvd", &genuine);
    client.install("bytecode-339.cvd.sign", &sign(&genuine));
    let run = client.run_with(&["TestDatabases no"]);
    run.assert_ok()
        .assert_says("bytecode.cvd version from DNS: 340")
        .assert_says("bytecode.cld updated (version: 340")
        .assert_never_says("Incremental update failed");
    let asked = requests(&run);
    assert!(
        asked.iter().all(|(path, _)| !path.contains("341")),
        "asked for a version `b` lacks: {asked:?}"
    );
    assert!(
        !asked
            .iter()
            .any(|(path, status)| path.starts_with("/bytecode.cvd") && *status == Some(200)),
        "a whole CVD was downloaded: {asked:?}"
    );
    assert!(
        lagging(&a).is_empty(),
        "the run outlasted the lag grace: {}",
        fleet_json(&a)
    );

    // Past the lag grace `b` is drained and the beacon moves on to 341;
    // the client, still at `b`, is sent once to `a` for what `b` lacks.
    announces(beacon, 341, SYNCED);
    assert_eq!(lagging(&a), ["b"], "{}", fleet_json(&a));
    let run = client.run_with(&["TestDatabases no"]);
    run.assert_ok()
        .assert_says("bytecode.cvd version from DNS: 341")
        .assert_says("bytecode.cld updated (version: 341")
        .assert_never_says("Incremental update failed");
    let asked = requests(&run);
    let cdiff_341 = format!("/{}", cdiff_name(341));
    let via_b = format!("{cdiff_341}?via=b");
    assert!(
        asked.contains(&(cdiff_341.clone(), Some(302))) && asked.contains(&(via_b, Some(200))),
        "the cdiff `b` lacks did not come from `a` by one redirect: {asked:?}"
    );
    assert_eq!(
        asked
            .iter()
            .filter(|(_, status)| *status == Some(302))
            .count(),
        2,
        "one redirect each for the cdiff and its .sign: {asked:?}"
    );
    // A whole CVD older than the fleet's goes to `a` as well; the header
    // check stays at `b` (an old header only makes a client wait).
    let whole = b.get("/bytecode.cvd", &[]);
    assert_eq!(whole.status, 302);
    assert_eq!(
        whole.header("location"),
        Some(format!("http://{}/bytecode.cvd?via=b", a.addr).as_str())
    );
    let header = b.get("/bytecode.cvd", &[("Range", "bytes=0-511")]);
    assert_eq!(header.status, 206);
    assert_eq!(served_version(&b), Some(340));
    for server in [&a, &b] {
        let entries = server.access_log_entries();
        assert!(
            !whole_cvd_served(&entries),
            "a whole CVD was downloaded:\n{}",
            fmt_entries(&entries)
        );
    }
}
