//! Crash safety: `kill -9` the real binary at random moments of a pass
//! (DNS, cdiffs, mid-download of a multi-megabyte CVD, verification,
//! publishing) and check the served-set invariant each time: every served
//! CVD and cdiff verifies, no partial or temporary file is in the root, and
//! a CVD newer than before comes with every cdiff leading to it. Then a
//! normal pass must converge from whatever the kill left behind.
//!
//! The delays come from a seeded RNG; the seed is printed and can be
//! replayed with `CVDMIRROR_CRASH_SEED=<seed>`
//! (`CVDMIRROR_CRASH_ITERATIONS` changes the count).

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::world::*;

/// About 2 MB: a download of a few dozen chunks, spread over ~100 ms by
/// the upstream's chunk delay, so kills land inside it as well as before
/// and after it.
const BIG: u64 = 2 * 1024 * 1024;

/// Kills at least this many passes, however slow the machine.
const MIN_ITERATIONS: u64 = 8;
/// Then stops starting new ones after this long.
const TIME_BUDGET: Duration = Duration::from_secs(15);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn copy_served(from: &Path, to: &Path) {
    for name in snapshot(from).keys() {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn kill_9_at_any_moment_leaves_a_consistent_served_set() {
    let seed = env_u64("CVDMIRROR_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let iterations = env_u64("CVDMIRROR_CRASH_ITERATIONS").unwrap_or(40);
    eprintln!("crash test seed {seed} (replay with CVDMIRROR_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let world = World::new();
    world.release(267, 270, CVD_SIZE);
    let base = Mirror::new();
    base.sync(&world).assert_ok();
    assert_eq!(base.version(), Some(270));

    // Two versions ahead, with a big CVD trickling out in 64 KiB chunks.
    world.release(270, 272, BIG);
    world.up.set_chunk_delay(Duration::from_millis(3));
    let newest = cvd(272, BIG);

    // Calibrate: how long an uninterrupted pass takes on this machine now,
    // so kills spread over the whole pass (publishing included) however
    // loaded the machine is.
    let calibration = Mirror::new();
    copy_served(&base.root, &calibration.root);
    let started = std::time::Instant::now();
    calibration.sync(&world).assert_ok();
    let full_pass = started.elapsed().as_millis() as u64;
    eprintln!("an uninterrupted pass takes {full_pass} ms");

    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    let started = std::time::Instant::now();
    let mut done = 0;
    for i in 0..iterations {
        // Bounded total time: at least MIN_ITERATIONS, then stop at the budget.
        if i >= MIN_ITERATIONS && started.elapsed() > TIME_BUDGET {
            break;
        }
        done += 1;
        let delay = rng.random_range(0..=full_pass + full_pass / 5);
        let context = format!("seed {seed}, iteration {i}, kill after {delay} ms");
        let mirror = Mirror::new();
        copy_served(&base.root, &mirror.root);

        let mut child = mirror.command(&world).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let exited_first = child.try_wait().unwrap().is_some();
        child.kill().unwrap_or_default();
        child.wait().unwrap();

        let version = check_served(&mirror.root, Some(270))
            .unwrap_or_else(|e| panic!("{context}: served set broken after kill -9: {e}"));
        let cdiffs = mirror.cdiffs();
        let label = if exited_first {
            "finished before the kill".to_owned()
        } else {
            format!("killed at cvd {version:?} with {} cdiffs", cdiffs.len())
        };
        *outcomes.entry(label).or_default() += 1;
        match version {
            Some(270) => {}
            Some(272) => assert_eq!(
                std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
                *newest,
                "{context}"
            ),
            other => panic!("{context}: served CVD version {other:?}"),
        }

        let run = mirror.sync(&world);
        assert!(
            run.ok,
            "{context}: the pass after the kill must converge\n{run}"
        );
        assert_eq!(mirror.version(), Some(272), "{context}\n{run}");
        check_served(&mirror.root, Some(270)).unwrap_or_else(|e| panic!("{context}: {e}\n{run}"));
        assert!(
            cdiffs.iter().all(|v| mirror.cdiffs().contains(v)),
            "{context}: a published cdiff vanished\n{run}"
        );
    }
    eprintln!("crash outcomes after {done} kills: {outcomes:?}");
    // The kills must have hit the interesting window at least sometimes.
    assert!(
        outcomes.keys().any(|k| k.starts_with("killed")),
        "no kill landed inside a pass: {outcomes:?}"
    );
}
