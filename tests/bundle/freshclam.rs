//! The real client across the gap: a mirror syncs the genuine fixtures
//! (268, then 339) from the fake upstream, each set is exported, imported
//! into the root `cvdmirror serve` serves, and Debian's freshclam follows
//! 268 → 339. Genuine fixtures only: freshclam trusts ClamAV's keys alone.
//!
//! Needs `freshclam` (scripts/install-test-deps); fails, never skips,
//! without it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kit::{self, Trust};
use crate::support::{self, TestServer};
use crate::world::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A freshclam installation in a temp dir, pointed at one private mirror.
struct Freshclam {
    dir: tempfile::TempDir,
}

impl Freshclam {
    fn new(mirror: &str) -> Freshclam {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let conf = format!(
            "DatabaseDirectory {}\nDatabaseOwner {user}\nLogVerbose yes\nForeground yes\nConnectTimeout 10\nPrivateMirror {mirror}\nDNSDatabaseInfo no\n",
            db.display()
        );
        std::fs::write(dir.path().join("freshclam.conf"), conf).unwrap();
        Freshclam { dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Runs `freshclam --update-db=bytecode`; returns (success, output).
    fn run(&self) -> (bool, String) {
        let mut child = Command::new("freshclam")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("freshclam.conf").display()
            ))
            .arg("--update-db=bytecode")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run freshclam: {e}; install it with scripts/install-test-deps")
            });
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "freshclam {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Version of the client's bytecode database (`.cvd` or `.cld`).
    fn version(&self) -> Option<u32> {
        ["bytecode.cvd", "bytecode.cld"]
            .iter()
            .filter_map(|n| std::fs::read(self.db().join(n)).ok())
            .filter_map(|b| cvdmirror::cvd::Header::parse(&b).ok())
            .map(|h| h.version)
            .max()
    }
}

#[test]
fn freshclam_updates_from_an_imported_root() {
    let world = World::new();
    world
        .up
        .put("bytecode.cvd", &support::fixture("bytecode-268.cvd"));
    world.advertise(DB, 268);
    let source = Mirror::new().official_keys_only();
    source.sync(&world).assert_ok();

    // The air-gapped side: an empty root, served.
    let server = TestServer::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("268.tar");
    kit::export(&source.root, &bundle).assert_ok();
    kit::import(&bundle, &server.root, Trust::Official, &[])
        .assert_ok()
        .says(&["bytecode", "268", "signatures: legacy"]);
    let client = Freshclam::new(&server.url(""));
    let run = client.run();
    assert!(run.0, "freshclam failed\n{}", run.1);
    assert_eq!(client.version(), Some(268), "{}", run.1);

    // Upstream moves on (its cdiffs are ClamAV's zero-byte "fetch the whole
    // CVD" signal); the next bundle crosses the gap.
    world
        .up
        .put("bytecode.cvd", &support::fixture("bytecode-339.cvd"));
    for v in 269..=339 {
        world.up.put(&cdiff_name(v), b"");
    }
    world.advertise(DB, 339);
    source.sync(&world).assert_ok();
    let bundle = dir.path().join("339.tar");
    kit::export(&source.root, &bundle).assert_ok();
    kit::import(&bundle, &server.root, Trust::Official, &[])
        .assert_ok()
        .says(&["updated from 268"]);
    assert_eq!(
        std::fs::read(server.root.join("bytecode.cvd")).unwrap(),
        support::fixture("bytecode-339.cvd")
    );
    assert_eq!(snapshot(&server.root), source.snapshot());

    let run = client.run();
    assert!(run.0, "freshclam failed\n{}", run.1);
    assert_eq!(client.version(), Some(339), "{}", run.1);
    assert_eq!(
        std::fs::read(client.db().join("bytecode.cvd")).unwrap(),
        support::fixture("bytecode-339.cvd")
    );
}
