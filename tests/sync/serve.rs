//! The engine inside `serve`: the DNS beacon announces exactly what is
//! published, and clients asking for a patch past the published set make
//! the mirror heal itself at once (no waiting for the interval).

use std::net::SocketAddr;
use std::time::Duration;

use cvdmirror::dns;

use crate::support::{DEADLINE, TestServer};
use cvdmirror::cvd::sign::cvd_sign_name;

use crate::world::{
    CVD_SIZE, DB, World, cdiff, cdiff_name, check_served, cvd, pki, sign, trusted_key_args,
};

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

/// `cvdmirror serve` syncing from `world` in the background (hourly), with
/// a DNS beacon, trusting the test keys and the test PKI; and the beacon's
/// address.
fn serve_with_sync(world: &World, dir: &tempfile::TempDir) -> (TestServer, SocketAddr) {
    let sign_root = dir.path().join("sign-root.pem");
    std::fs::write(&sign_root, pki().root_pem()).unwrap();
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
    args.push("--sign-root".into());
    args.push(sign_root.to_string_lossy().into_owned());
    let server = TestServer::builder().args(args).start();
    let beacon: SocketAddr = server
        .startup
        .iter()
        .find_map(|line| line.strip_prefix("beacon on "))
        .expect("serve announces the beacon address")
        .parse()
        .unwrap();
    (server, beacon)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn serve_announces_published_versions_and_heals_when_clients_ask_ahead() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let (server, beacon) = serve_with_sync(&world, &dir);
    let rt = runtime();

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
    world.release(271, 273, CVD_SIZE);
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
    assert_eq!(server.get("/bytecode-273.cdiff.sign", &[]).status, 200);
    assert_eq!(
        server
            .get(&format!("/{}", cvd_sign_name(DB, 273)), &[])
            .status,
        200
    );
}

#[test]
fn a_missing_cdiff_that_clients_ask_for_does_not_hold_the_new_cvd_back() {
    // The seed's pattern: upstream publishes 273 but lacks the 272 patch.
    // Clients that learned 273 from upstream's DNS ask us for 272, get 404
    // and fall back to whole downloads; waiting out the grace period would
    // serve them the old 271. The default grace is minutes, but clients
    // already asking means publishing at once.
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let (server, beacon) = serve_with_sync(&world, &dir);
    let rt = runtime();
    wait_for_announced(&rt, beacon, 271, &server);

    world.release(271, 273, CVD_SIZE);
    world.up.remove(&cdiff_name(272));
    world.up.remove(&format!("{}.sign", cdiff_name(272)));
    assert_eq!(server.get("/bytecode-272.cdiff", &[]).status, 404);

    wait_for_announced(&rt, beacon, 273, &server);
    let head = server.get("/bytecode.cvd", &[("Range", "bytes=0-511")]);
    assert_eq!(
        cvdmirror::cvd::Header::parse(&head.body).unwrap().version,
        273,
        "{}",
        server.stderr()
    );
    assert_eq!(server.get("/bytecode-273.cdiff", &[]).status, 200);
    assert!(
        server
            .stderr()
            .contains("clients are already asking for it"),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_cvdmirror_upstream_passes_its_sign_files_on() {
    // Mirror chaining with ClamAV 1.5 signatures: the downstream mirror
    // verifies and publishes the upstream cvdmirror's .sign files too.
    let files: Vec<(String, Vec<u8>)> = {
        let mut files = vec![
            ("bytecode.cvd".to_owned(), cvd(271, CVD_SIZE).to_vec()),
            (cvd_sign_name(DB, 271), sign(&cvd(271, CVD_SIZE))),
        ];
        for v in 269..=271 {
            files.push((cdiff_name(v), cdiff(v).to_vec()));
            files.push((format!("{}.sign", cdiff_name(v)), sign(&cdiff(v))));
        }
        files
    };
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let upstream = TestServer::serving(&borrowed);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    std::fs::create_dir(&root).unwrap();
    let sign_root = dir.path().join("sign-root.pem");
    std::fs::write(&sign_root, pki().root_pem()).unwrap();
    let config = dir.path().join("cvdmirror.toml");
    std::fs::write(&config, "[sync]\nbackfill = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cvdmirror"))
        .args(["sync", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(&config)
        .args(["--upstream", &upstream.url(""), "--version-check", "http"])
        .args(["--db", DB, "--signatures", "both", "--sign-root"])
        .arg(&sign_root)
        .args(trusted_key_args())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, bytes) in &files {
        assert_eq!(
            std::fs::read(root.join(name)).ok().as_ref(),
            Some(bytes),
            "{name} passed on byte for byte\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_served(&root, None).unwrap();
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
