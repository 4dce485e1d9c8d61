//! The real client end to end: upstream advances, `cvdmirror sync` pulls,
//! `cvdmirror serve` serves the root, and Debian's `freshclam` sees the
//! versions advance. Genuine fixtures only (268 → 339): freshclam trusts
//! ClamAV's keys, so it would reject anything the test keys signed.
//!
//! Needs `freshclam` (scripts/install-test-deps); fails, never skips,
//! without it.

use std::path::Path;

use crate::support::freshclam::{Client, Mode, Run};
use crate::support::world::*;
use crate::support::{self, TestServer};

fn assert_version(client: &Client, want: u32, run: &Run) {
    run.assert_ok();
    assert_eq!(client.version(), Some(want), "{run}");
}

#[test]
fn freshclam_follows_upstream_through_the_mirror() {
    let world = World::new();
    world.put_genuine(268);

    let server = TestServer::builder().start();
    let mirror = Mirror::at(
        tempfile::tempdir().unwrap(),
        server.root.clone(),
        FAST_CONFIG,
    )
    .official_keys_only();
    mirror.sync(&world).assert_ok();

    let private = Client::new(&server.url(""), Mode::PrivateMirror, &[]);
    let scripted = Client::new(&server.url(""), Mode::DatabaseMirror, &[]);
    for client in [&private, &scripted] {
        let run = client.run();
        assert_version(client, 268, &run);
    }

    // Upstream advances; its cdiffs are ClamAV's zero-byte "fetch the whole CVD" signal.
    world.genuine_268_to_339();
    let before = support::fixture("bytecode-268.cvd");
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
