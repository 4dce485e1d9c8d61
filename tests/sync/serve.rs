//! The engine inside `serve`: the DNS beacon announces exactly what is
//! published, and clients asking for a patch past the published set make
//! the mirror heal itself at once (no waiting for the interval).

use std::net::SocketAddr;
use std::time::Duration;

use cvdmirror::dns;

use crate::support::{DEADLINE, TestServer};
use crate::world::{CVD_SIZE, DB, World, cdiff, cdiff_name, cvd, trusted_key_args};

const BEACON_NAME: &str = "current.cvd.mirror.test";

/// The version of `db` the beacon announces, once it answers.
fn announced(rt: &tokio::runtime::Runtime, beacon: SocketAddr) -> Option<u32> {
    rt.block_on(dns::lookup(
        BEACON_NAME,
        Some(beacon),
        Duration::from_secs(1),
    ))
    .ok()
    .and_then(|record| record.version_of(DB))
}

fn wait_for_announced(
    rt: &tokio::runtime::Runtime,
    beacon: SocketAddr,
    version: u32,
    server: &TestServer,
) {
    let start = std::time::Instant::now();
    while announced(rt, beacon) != Some(version) {
        assert!(
            start.elapsed() < DEADLINE * 2,
            "beacon never announced {version} (now {:?}); server stderr:\n{}",
            announced(rt, beacon),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_announces_published_versions_and_heals_when_clients_ask_ahead() {
    let world = World::new();
    for v in 269..=271 {
        world.up.put(&cdiff_name(v), &cdiff(v));
    }
    world.up.put("bytecode.cvd", &cvd(271, CVD_SIZE));
    world.advertise(DB, 271);

    let mut args: Vec<String> = [
        "--sync-interval",
        "1h",
        "--upstream",
        &world.up.url(),
        "--dns-name",
        world.dns.name(),
        "--nameserver",
        &world.dns.addr().to_string(),
        "--db",
        DB,
        "--beacon-listen",
        "127.0.0.1:0",
        "--beacon-name",
        BEACON_NAME,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(trusted_key_args());
    let server = TestServer::builder().args(args).start();
    let beacon: SocketAddr = server
        .startup
        .iter()
        .find_map(|line| line.strip_prefix("beacon on "))
        .expect("serve announces the beacon address")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The startup pass publishes 271; only then does the beacon say so.
    wait_for_announced(&rt, beacon, 271, &server);
    assert_eq!(
        server
            .get("/bytecode.cvd", &[("Range", "bytes=0-511")])
            .status,
        206
    );

    // Upstream moves to 273. The next scheduled pass is an hour away, but a
    // client that learned 273 elsewhere asks for the patch we lack...
    world.up.put(&cdiff_name(272), &cdiff(272));
    world.up.put(&cdiff_name(273), &cdiff(273));
    world.up.put("bytecode.cvd", &cvd(273, CVD_SIZE));
    world.advertise(DB, 273);
    assert_eq!(
        announced(&rt, beacon),
        Some(271),
        "the beacon never runs ahead of the files"
    );
    assert_eq!(server.get("/bytecode-272.cdiff", &[]).status, 404);

    // ...and that request alone brings the mirror, and its beacon, to 273.
    wait_for_announced(&rt, beacon, 273, &server);
    assert_eq!(server.get("/bytecode-272.cdiff", &[]).status, 200);
    assert_eq!(server.get("/bytecode-273.cdiff", &[]).status, 200);
}

#[test]
fn another_cvdmirror_is_an_upstream() {
    // Mirror chaining: a cvdmirror serving the genuine 268 is the upstream;
    // its CVD headers are the version source (allowed: it is not the CDN).
    let upstream =
        TestServer::serving(&[("bytecode.cvd", &crate::support::fixture("bytecode-268.cvd"))]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    std::fs::create_dir(&root).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cvdmirror"))
        .args(["sync", "--root"])
        .arg(&root)
        .args([
            "--upstream",
            &upstream.url(""),
            "--version-check",
            "http",
            "--db",
            DB,
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = std::fs::read(root.join("bytecode.cvd")).unwrap();
    assert_eq!(
        served,
        crate::support::fixture("bytecode-268.cvd"),
        "verified with the official keys and published as is"
    );
    // The whole CVD's line (the sync has ended, so it is on its way).
    let log = upstream.access_log_containing("\"GET /bytecode.cvd HTTP/1.1\" 200 78992");
    let check = log
        .find("\"GET /bytecode.cvd HTTP/1.1\" 206 512")
        .expect("a header check");
    let whole = log.find("\" 200 78992").expect("the whole CVD");
    assert!(
        check < whole,
        "header check first, then the whole CVD: {log}"
    );
}
