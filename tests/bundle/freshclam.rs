//! The real client across the gap: a mirror syncs the genuine fixtures
//! (268, then 339) from the fake upstream, each set is exported, imported
//! into the root `cvdmirror serve` serves, and Debian's freshclam follows
//! 268 → 339. Genuine fixtures only: freshclam trusts ClamAV's keys alone.
//!
//! Needs `freshclam` (scripts/install-test-deps); fails, never skips,
//! without it.

use crate::kit::{self, Trust};
use crate::support::freshclam::{Client, Mode};
use crate::support::world::*;
use crate::support::{self, TestServer};

#[test]
fn freshclam_updates_from_an_imported_root() {
    let world = World::new();
    world.put_genuine(268);
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
    let client = Client::new(&server.url(""), Mode::PrivateMirror, &[]);
    let run = client.run();
    run.assert_ok();
    assert_eq!(client.version(), Some(268), "{run}");

    // Upstream moves on (its cdiffs are ClamAV's zero-byte "fetch the whole
    // CVD" signal); the next bundle crosses the gap.
    world.genuine_268_to_339();
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
    run.assert_ok();
    assert_eq!(client.version(), Some(339), "{run}");
    assert_eq!(
        std::fs::read(client.db().join("bytecode.cvd")).unwrap(),
        support::fixture("bytecode-339.cvd")
    );
}
