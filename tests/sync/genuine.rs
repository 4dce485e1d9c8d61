//! The genuine signed ClamAV fixtures (bytecode 268 and 339) through the
//! engine with ClamAV's official keys only: what a production mirror runs.
//! No real cdiffs exist offline, so these are fresh-mirror passes (history
//! cdiffs missing upstream are skipped) and an upgrade across upstream's
//! zero-byte cdiffs, ClamAV's own "fetch the whole CVD" signal.

use crate::support::fixture;
use crate::support::world::*;

fn genuine_world(version: u32) -> World {
    let world = World::new();
    world.put_genuine(version);
    world
}

#[test]
fn genuine_cvds_are_accepted_with_the_official_keys_only() {
    for version in [268, 339] {
        let world = genuine_world(version);
        let mirror = Mirror::new().official_keys_only();
        let run = mirror.sync(&world);
        run.assert_ok();
        assert_each_file_once(&run);
        assert_eq!(
            std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
            fixture(&format!("bytecode-{version}.cvd")),
            "{run}"
        );
        assert_eq!(mirror.version(), Some(version));
        // History cdiffs do not exist upstream: skipped, and nothing else served.
        assert_eq!(
            mirror.snapshot().keys().collect::<Vec<_>>(),
            ["bytecode.cvd"],
            "{run}"
        );
    }
}

#[test]
fn a_one_byte_change_in_a_genuine_cvd_is_rejected() {
    for offset in [100, 512 + 1000, 78_992 - 10] {
        let mut bytes = fixture("bytecode-268.cvd");
        bytes[offset] ^= 0x01;
        let world = World::new();
        world.up.put("bytecode.cvd", &bytes);
        world.advertise(DB, 268);
        let mirror = Mirror::new().official_keys_only();
        let run = mirror.sync(&world);
        run.assert_failed(&["bytecode.cvd", "rejected"]);
        assert!(
            mirror.snapshot().is_empty(),
            "byte {offset} flipped, yet something was published\n{run}"
        );
    }
}

#[test]
fn test_key_files_are_rejected_by_a_mirror_that_trusts_only_official_keys() {
    let world = World::new();
    world.release(268, 271, CVD_SIZE);
    let mirror = Mirror::new().official_keys_only();
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode.cvd", "rejected"]);
    assert!(mirror.snapshot().is_empty(), "{run}");
}

#[test]
fn genuine_upgrade_waits_for_the_cdiffs_in_the_history_window() {
    let world = genuine_world(268);
    let mirror = Mirror::new().official_keys_only();
    mirror.sync(&world).assert_ok();
    let before = mirror.snapshot();
    world.put_genuine(339);
    // None of 269..=339 exists upstream. Those inside the history window
    // (backfill 3: 337..=339) are required: within the grace period the
    // new CVD is not published and the pass fails naming the first one.
    let run = mirror.sync(&world);
    run.assert_failed(&["bytecode-337.cdiff", "404"]);
    assert_preserved(&before, &mirror, &run);
    assert_eq!(mirror.version(), Some(268));
    // Upstream's zero-byte cdiffs ("fetch the whole CVD") satisfy it.
    for v in 269..=339 {
        world.up.put(&cdiff_name(v), b"");
    }
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_each_file_once(&run);
    assert_eq!(mirror.version(), Some(339), "{run}");
    assert_eq!(
        std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
        fixture("bytecode-339.cvd")
    );
    // History found missing once is not asked for again.
    assert!(run.requests_for("bytecode-300.cdiff").is_empty(), "{run}");
    assert_eq!(mirror.cdiffs(), vec![337, 338, 339], "{run}");
}
