//! A fleet of test nodes: `cvdmirror serve --fleet` processes on their
//! own loopback addresses (127.0.0.x) and roots, sharing one real Redis,
//! with fast fleet timings a test may override; and what the tests read
//! from them (`/fleet.json`, members, the version a node serves).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use crate::support::http::Response;
use crate::support::redis::Redis;
use crate::support::server::TestServer;
use crate::support::wait::{check, wait_until};
use crate::support::world::{DB, World, trust_args};

/// Within this, a change reaches every node's view (heartbeat 100 ms).
pub(super) const CONVERGE: Duration = Duration::from_secs(10);

/// Within this, a node has synced a release (a pass or two on loopback).
pub(super) const SYNCED: Duration = Duration::from_secs(60);

/// A free port on `ip`.
pub(super) fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// Node `name` on `ip`, serving `files`, with fast fleet timings and a
/// 100 Mbit/s link; `redirect_above` is the share of the link above which
/// it sends whole CVDs elsewhere.
pub(super) fn node(
    redis: &Redis,
    name: &str,
    ip: Ipv4Addr,
    files: &[(&str, &[u8])],
    redirect_above: f64,
) -> TestServer {
    node_with(redis, name, ip, files, redirect_above, "", "")
}

/// [`node`] with `fleet_more` added to its `[fleet]` table and `more`
/// appended to its config file.
pub(super) fn node_with(
    redis: &Redis,
    name: &str,
    ip: Ipv4Addr,
    files: &[(&str, &[u8])],
    redirect_above: f64,
    fleet_more: &str,
    more: &str,
) -> TestServer {
    let addr = free_addr(ip);
    let mut builder = TestServer::builder()
        .no_default_listen()
        .admin()
        .args(["--listen".to_owned(), addr.to_string()])
        .args(["--fleet".to_owned(), redis.url()])
        .config(&format!(
            "[fleet]\nnode = \"{name}\"\npublic_url = \"http://{addr}\"\n\
             redirect_above = {redirect_above:?}\n{}\n\
             [shape]\nlink_rate = \"100Mbit\"\n{more}",
            timings(fleet_more)
        ));
    for (path, bytes) in files {
        builder = builder.file(path, bytes);
    }
    builder.start()
}

/// The fast `[fleet]` timings of these tests, with `fleet_more`'s keys in
/// place of the defaults it names.
pub(super) fn timings(fleet_more: &str) -> String {
    let defaults = [
        ("heartbeat", "\"100ms\""),
        ("node_ttl", "\"1s\""),
        ("lease_ttl", "\"1s\""),
        ("stale_after", "\"2s\""),
    ];
    let mut lines: Vec<String> = defaults
        .iter()
        .filter(|(key, _)| !fleet_more.contains(&format!("{key} =")))
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    lines.push(fleet_more.trim_end().to_owned());
    lines.join("\n") + "\n"
}

/// `/fleet.json` of `server`.
pub(super) fn fleet_json(server: &TestServer) -> serde_json::Value {
    let response = server.admin("GET", "/fleet.json", &[]);
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).unwrap()
}

/// The node names in `server`'s view, sorted.
pub(super) fn members(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = fleet_json(server)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["node"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// A node that syncs `bytecode` hourly from `world` (trusting its keys and
/// PKI) and joins the fleet in `redis`.
pub(super) fn syncing_node(
    redis: &Redis,
    world: &World,
    name: &str,
    ip: Ipv4Addr,
    keys: &Path,
) -> TestServer {
    syncing_node_with(redis, world, name, ip, keys, &[], "")
}

/// [`syncing_node`] with `extra` flags and `fleet_more` in its `[fleet]`.
pub(super) fn syncing_node_with(
    redis: &Redis,
    world: &World,
    name: &str,
    ip: Ipv4Addr,
    keys: &Path,
    extra: &[&str],
    fleet_more: &str,
) -> TestServer {
    let addr = free_addr(ip);
    let mut args: Vec<String> = ["--listen", &addr.to_string(), "--fleet", &redis.url()]
        .map(String::from)
        .to_vec();
    args.extend(world.serve_args("1h"));
    args.extend(trust_args(keys));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    TestServer::builder()
        .no_default_listen()
        .admin()
        .args(args)
        .config(&format!(
            "[fleet]\nnode = \"{name}\"\npublic_url = \"http://{addr}\"\n{}",
            timings(fleet_more)
        ))
        .start()
}

/// The version of the `bytecode.cvd` `server` serves, if any.
pub(super) fn served_version(server: &TestServer) -> Option<u32> {
    let response = server.get(&format!("/{DB}.cvd"), &[("Range", "bytes=0-511")]);
    (response.status == 206)
        .then(|| {
            cvdmirror::cvd::Header::parse(&response.body)
                .ok()
                .map(|h| h.version)
        })
        .flatten()
}

/// The lease holder in `server`'s view.
pub(super) fn lease_holder(server: &TestServer) -> Option<String> {
    fleet_json(server)["lease"]["holder"]
        .as_str()
        .map(str::to_owned)
}

/// Waits (up to [`SYNCED`]) until `server` serves `bytecode` `version`.
pub(super) fn wait_serving(server: &TestServer, version: u32) {
    wait_until(SYNCED, || {
        let serves = served_version(server);
        check(serves == Some(version), || format!("serves {serves:?}"))
    });
}

/// Waits (up to [`CONVERGE`]) until `server` answers `GET path` with a
/// `302`, and returns that answer.
pub(super) fn wait_redirected(server: &TestServer, path: &str) -> Response {
    wait_until(CONVERGE, || {
        let response = server.get(path, &[]);
        check(response.status == 302, || {
            format!("status {}", response.status)
        })
        .map(|()| response)
    })
}
