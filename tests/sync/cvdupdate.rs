//! Peer check against Debian's `clamav-cvdupdate` (the `cvdupdate`
//! command, 1.1.1 in Debian 12): the same upstream history, genuine
//! fixtures, both tools; they must end with the same bytes for every file
//! both serve, and differ only where docs/testing-sync.md says why.
//!
//! Pointing cvdupdate at the fakes: its databases' URLs live in its state
//! file (`state.json`, rewritten here), and its nameserver is a config
//! setting, but it always asks `current.cvd.clamav.net` and always on port
//! 53 (dnspython's default; cvdupdate sets no port). So these tests answer
//! that name on `127.0.0.1:53`, one test at a time, and `cvdmirror` is
//! pointed at the very same server.
//!
//! Needs `cvdupdate` (apt package clamav-cvdupdate) and the right to bind
//! port 53 (root); fails, never skips, without them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::support::wait::{DEADLINE, wait_until};
use crate::support::world::*;

/// Port 53 is one per machine: the tests of this module take turns.
static PORT_53: Mutex<()> = Mutex::new(());

/// A world whose DNS answers `current.cvd.clamav.net` on `127.0.0.1:53`,
/// waiting a little if another suite holds the port right now.
fn world_on_port_53() -> World {
    let addr = SocketAddr::from(([127, 0, 0, 1], 53));
    wait_until(DEADLINE, || {
        World::try_with_dns(addr, "current.cvd.clamav.net")
            .map_err(|e| format!("cannot answer DNS on {addr} for cvdupdate: {e}"))
    })
}

/// One cvdupdate installation: config, state, logs and database in a temp dir.
struct Cvdupdate {
    dir: tempfile::TempDir,
}

impl Cvdupdate {
    fn new(upstream: &str) -> Cvdupdate {
        let dir = tempfile::tempdir().unwrap();
        let me = Cvdupdate { dir };
        let db = me.db();
        let logs = me.dir.path().join("logs");
        me.cmd(&[
            "config",
            "set",
            "--dbdir",
            db.to_str().unwrap(),
            "--logdir",
            logs.to_str().unwrap(),
            "--nameserver",
            "127.0.0.1",
        ]);
        // Only bytecode, fetched from the fake upstream.
        let state_path = me.dir.path().join("state.json");
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
        state["dbs"] = serde_json::json!({
            "bytecode.cvd": {
                "url": format!("{upstream}/bytecode.cvd"),
                "retry after": 0,
                "last modified": 0,
                "last checked": 0,
                "DNS field": 7,
                "local version": 0,
                "CDIFFs": []
            }
        });
        std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        me
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Runs `cvdupdate ARGS -c CONFIG`; returns (success, output).
    fn cmd(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("cvdupdate")
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("config.json"))
            .env("HOME", self.dir.path())
            .env_remove("CVDUPDATE_NAMESERVER")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run cvdupdate: {e}; install the Debian package clamav-cvdupdate")
            });
        let text = format!(
            "cvdupdate {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if args[0] == "config" {
            assert!(out.status.success(), "{text}");
        }
        (out.status.success(), text)
    }

    fn update(&self) -> (bool, String) {
        self.cmd(&["update", "--verbose", "bytecode.cvd"])
    }
}

fn names(root: &Path) -> BTreeSet<String> {
    snapshot(root).into_keys().collect()
}

/// Asserts every file both serve is byte-identical; returns (only cvdmirror, only cvdupdate).
fn compare(ours: &Path, theirs: &Path, context: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (a, b) = (snapshot(ours), snapshot(theirs));
    for (name, hash) in &a {
        if let Some(other) = b.get(name) {
            assert_eq!(hash, other, "{name} differs between the tools\n{context}");
        }
    }
    let (a, b) = (names(ours), names(theirs));
    (
        a.difference(&b).cloned().collect(),
        b.difference(&a).cloned().collect(),
    )
}

/// cvdupdate and cvdmirror each take what upstream has now, and every file
/// both serve is the same; returns what only cvdmirror and only cvdupdate
/// serve, and both tools' output.
fn update_both(
    peer: &Cvdupdate,
    mirror: &Mirror,
    world: &World,
) -> (BTreeSet<String>, BTreeSet<String>, String) {
    let (ok, out) = peer.update();
    assert!(ok, "{out}");
    let run = mirror.sync(world);
    run.assert_ok();
    let context = format!("{out}\n{run}");
    let (ours, theirs) = compare(&mirror.root, &peer.db(), &context);
    (ours, theirs, context)
}

#[test]
fn cvdupdate_and_cvdmirror_agree_on_the_same_upstream_history() {
    let _turn = PORT_53.lock().unwrap_or_else(|e| e.into_inner());
    let world = world_on_port_53();
    world.put_genuine(268);
    let peer = Cvdupdate::new(&world.up.url());
    let mirror = Mirror::new().official_keys_only();

    let (ours, theirs, context) = update_both(&peer, &mirror, &world);
    assert!(ours.is_empty(), "only cvdmirror has {ours:?}\n{context}");
    assert_eq!(
        theirs,
        BTreeSet::from(["dns.txt".to_owned()]),
        "cvdupdate also writes dns.txt\n{context}"
    );
    assert_eq!(
        std::fs::read_to_string(peer.db().join("dns.txt")).unwrap(),
        world.record()
    );

    // Upstream advances to 339 with ClamAV's zero-byte cdiffs in between.
    world.genuine_268_to_339();
    let (ours, theirs, context) = update_both(&peer, &mirror, &world);
    // cvdupdate keeps its last 30 cdiffs; cvdmirror keeps 90 days of them.
    let expected_ours: BTreeSet<String> = (269..=309).map(cdiff_name).collect();
    assert_eq!(ours, expected_ours, "{context}");
    assert_eq!(theirs, BTreeSet::from(["dns.txt".to_owned()]), "{context}");
    assert_eq!(
        std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
        crate::support::fixture("bytecode-339.cvd")
    );
}

#[test]
fn cvdupdate_publishes_a_corrupt_cvd_that_cvdmirror_rejects() {
    let _turn = PORT_53.lock().unwrap_or_else(|e| e.into_inner());
    let world = world_on_port_53();
    let mut bytes = crate::support::fixture("bytecode-268.cvd");
    bytes[5000] ^= 0x01;
    world.up.put("bytecode.cvd", &bytes);
    world.advertise(DB, 268);
    let peer = Cvdupdate::new(&world.up.url());
    let mirror = Mirror::new().official_keys_only();

    let (ok, out) = peer.update();
    assert!(ok, "cvdupdate does not verify, so it succeeds\n{out}");
    assert_eq!(
        std::fs::read(peer.db().join("bytecode.cvd")).unwrap(),
        bytes,
        "cvdupdate serves the corrupt file\n{out}"
    );
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode.cvd", "rejected"]);
    assert!(mirror.snapshot().is_empty(), "{run}");
}
