//! The engine inside `serve`: the DNS beacon announces exactly what is
//! published, and clients asking for a patch past the published set make
//! the mirror heal itself at once (no waiting for the interval).

use std::net::SocketAddr;
use std::time::Duration;

use cvdmirror::cvd::sign::cvd_sign_name;

use crate::support::process::{cvdmirror, run};
use crate::support::wait::{DEADLINE, wait_until_every};
use crate::support::world::{
    CVD_SIZE, DB, World, cdiff, cdiff_name, check_served, cvd, sign, trust_args,
};
use crate::support::{self, TestServer};

const BEACON_NAME: &str = "current.cvd.mirror.test";

/// `cvdmirror serve` syncing in the background (hourly) from a world at
/// 271, with a DNS beacon, trusting the test keys and the test PKI; ready
/// once the beacon announces 271. Fields drop in order: the server first.
struct Syncing {
    server: TestServer,
    beacon: SocketAddr,
    _dir: tempfile::TempDir,
    world: World,
}

impl Syncing {
    fn at_271() -> Syncing {
        let world = World::new();
        world.release(268, 271, CVD_SIZE);
        let dir = tempfile::tempdir().unwrap();
        let mut args = world.serve_args("1h");
        args.extend(
            [
                "--beacon-listen",
                "127.0.0.1:0",
                "--beacon-name",
                BEACON_NAME,
            ]
            .map(String::from),
        );
        args.extend(trust_args(dir.path()));
        let server = TestServer::builder().args(args).start();
        let beacon = support::beacon::address(&server);
        let syncing = Syncing {
            server,
            beacon,
            _dir: dir,
            world,
        };
        // The startup pass publishes 271; only then does the beacon say so.
        syncing.wait_for_announced(271);
        syncing
    }

    /// The version of `db` the beacon announces, once it answers.
    fn announced(&self) -> Option<u32> {
        support::beacon::announced(self.beacon, BEACON_NAME)
    }

    fn wait_for_announced(&self, version: u32) {
        wait_until_every(DEADLINE * 2, Duration::from_millis(100), || {
            let now = self.announced();
            if now == Some(version) {
                Ok(())
            } else {
                Err(format!(
                    "beacon never announced {version} (now {now:?}); server stderr:\n{}",
                    self.server.stderr()
                ))
            }
        });
    }
}

#[test]
fn serve_announces_published_versions_and_heals_when_clients_ask_ahead() {
    let syncing = Syncing::at_271();
    let (server, world) = (&syncing.server, &syncing.world);
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
        syncing.announced(),
        Some(271),
        "the beacon never runs ahead of the files"
    );
    assert_eq!(server.get("/bytecode-272.cdiff", &[]).status, 404);

    // ...and that request alone brings the mirror, and its beacon, to 273.
    syncing.wait_for_announced(273);
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
    let syncing = Syncing::at_271();
    let (server, world) = (&syncing.server, &syncing.world);

    world.release(271, 273, CVD_SIZE);
    world.up.remove(&cdiff_name(272));
    world.up.remove(&format!("{}.sign", cdiff_name(272)));
    assert_eq!(server.get("/bytecode-272.cdiff", &[]).status, 404);

    syncing.wait_for_announced(273);
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
    let config = dir.path().join("cvdmirror.toml");
    std::fs::write(&config, "[sync]\nbackfill = 3\n").unwrap();
    let out = run(cvdmirror(["sync", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(&config)
        .args(["--upstream", &upstream.url(""), "--version-check", "http"])
        .args(["--db", DB, "--signatures", "both"])
        .args(trust_args(dir.path()))
        .current_dir(dir.path()));
    assert!(out.ok(), "{}", out.stderr);
    for (name, bytes) in &files {
        assert_eq!(
            std::fs::read(root.join(name)).ok().as_ref(),
            Some(bytes),
            "{name} passed on byte for byte\n{}",
            out.stderr
        );
    }
    check_served(&root, None).unwrap();
}

#[test]
fn another_cvdmirror_is_an_upstream() {
    // Mirror chaining: a cvdmirror serving the genuine 268 is the upstream;
    // its CVD headers are the version source (allowed: it is not the CDN).
    let upstream = TestServer::serving(&[("bytecode.cvd", &support::fixture("bytecode-268.cvd"))]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    std::fs::create_dir(&root).unwrap();
    let out = run(cvdmirror(["sync", "--root"])
        .arg(&root)
        .args([
            "--upstream",
            &upstream.url(""),
            "--version-check",
            "http",
            "--db",
            DB,
        ])
        .current_dir(dir.path()));
    assert!(out.ok(), "{}", out.stderr);
    let served = std::fs::read(root.join("bytecode.cvd")).unwrap();
    assert_eq!(
        served,
        support::fixture("bytecode-268.cvd"),
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
