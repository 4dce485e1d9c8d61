//! The real client end to end: upstream advances, `cvdmirror sync` pulls,
//! `cvdmirror serve` serves the root, and Debian's `freshclam` sees the
//! versions advance. Genuine fixtures only (268 → 339): freshclam trusts
//! ClamAV's keys, so it would reject anything the test keys signed.
//!
//! Needs `freshclam` (scripts/install-test-deps); fails, never skips,
//! without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::world::*;
use crate::support::{self, TestServer};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// One freshclam installation in a temp dir.
struct Freshclam {
    dir: tempfile::TempDir,
    extra_args: Vec<&'static str>,
}

impl Freshclam {
    fn new(mirror: &str, private_mirror: bool) -> Freshclam {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let mut conf = format!(
            "DatabaseDirectory {}\nDatabaseOwner {user}\nLogVerbose yes\nForeground yes\nConnectTimeout 10\n",
            db.display()
        );
        let mut extra_args = Vec::new();
        if private_mirror {
            conf.push_str(&format!("PrivateMirror {mirror}\nDNSDatabaseInfo no\n"));
        } else {
            // `--no-dns` is what really skips DNS outside PrivateMirror mode.
            conf.push_str(&format!("DatabaseMirror {mirror}\nScriptedUpdates yes\n"));
            extra_args.push("--no-dns");
        }
        std::fs::write(dir.path().join("freshclam.conf"), conf).unwrap();
        Freshclam { dir, extra_args }
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
            .args(&self.extra_args)
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

fn assert_version(client: &Freshclam, want: u32, run: &(bool, String)) {
    assert!(run.0, "freshclam failed\n{}", run.1);
    assert_eq!(client.version(), Some(want), "{}", run.1);
}

fn fixture_path(name: &str) -> PathBuf {
    support::fixtures_dir().join(name)
}

#[test]
fn freshclam_follows_upstream_through_the_mirror() {
    let world = World::new();
    world
        .up
        .put("bytecode.cvd", &support::fixture("bytecode-268.cvd"));
    world.advertise(DB, 268);

    let server = TestServer::builder().start();
    let mirror = Mirror::at(
        tempfile::tempdir().unwrap(),
        server.root.clone(),
        FAST_CONFIG,
    )
    .official_keys_only();
    mirror.sync(&world).assert_ok();

    let private = Freshclam::new(&server.url(""), true);
    let scripted = Freshclam::new(&server.url(""), false);
    for client in [&private, &scripted] {
        let run = client.run();
        assert_version(client, 268, &run);
    }

    // Upstream advances; its cdiffs are ClamAV's zero-byte "fetch the whole CVD" signal.
    world
        .up
        .put("bytecode.cvd", &support::fixture("bytecode-339.cvd"));
    for v in 269..=339 {
        world.up.put(&cdiff_name(v), b"");
    }
    world.advertise(DB, 339);
    let before = std::fs::read(fixture_path("bytecode-268.cvd")).unwrap();
    assert_eq!(
        std::fs::read(server.root.join("bytecode.cvd")).unwrap(),
        before
    );
    mirror.sync(&world).assert_ok();

    for client in [&private, &scripted] {
        let run = client.run();
        assert_version(client, 339, &run);
        // Nothing new: the client stays where it is.
        let again = client.run();
        assert_version(client, 339, &again);
    }
    let got = std::fs::read(private.db().join("bytecode.cvd")).unwrap();
    assert_eq!(got, support::fixture("bytecode-339.cvd"));
    assert!(Path::new(&server.root).join("bytecode-339.cdiff").exists());
}
