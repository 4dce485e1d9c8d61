//! Crash safety: `kill -9` the real binary at random moments of a pass
//! (DNS, cdiffs, mid-download of a multi-megabyte CVD, verification,
//! publishing) and check the served-set invariant each time: every served
//! CVD and cdiff verifies, no partial or temporary file is in the root, and
//! a CVD newer than before comes with every cdiff leading to it. Then a
//! normal pass must converge from whatever the kill left behind.
//!
//! A `kill -9` that reaches only the process the operator sees (`sudo`, a
//! wrapper script, `cargo run`) leaves the pass itself running; the next
//! pass then shares the root with it and must still converge.
//!
//! The delays come from a seeded RNG; the seed is printed and can be
//! replayed with `CVDMIRROR_CRASH_SEED=<seed>`
//! (`CVDMIRROR_CRASH_ITERATIONS` changes the count).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::support::wait::{check, wait_until};
use crate::support::world::*;

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
            run.ok(),
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

/// A slow download: 8 MiB in 128 chunks of 64 KiB, 15 ms apart (~2 s), so
/// a pass started once the first pass has staged [`KILL_AT`] bytes meets it
/// mid-download on however slow a machine.
const SLOW_CVD: u64 = 8 * 1024 * 1024;
const SLOW_CHUNK_DELAY: Duration = Duration::from_millis(15);
const KILL_AT: u64 = 256 * 1024;
/// How long any wait here may take.
const WAIT: Duration = Duration::from_secs(60);

/// `cvdmirror sync` started the way operators do (`sudo cvdmirror sync`, a
/// script): under a parent process that is what `ps` shows and what gets
/// killed. The `sync` process itself is killed (SIGKILL) when this is
/// dropped, if it still runs.
struct Wrapped {
    wrapper: std::process::Child,
    /// The `cvdmirror sync` process.
    pid: u32,
}

impl Wrapped {
    /// Runs `inner` under `sh`, which does not `exec` it; its output goes to
    /// `log`.
    fn spawn(inner: &Command, log: &Path) -> Wrapped {
        let pid_file = log.with_extension("pid");
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            .arg(r#"pid_file=$1; shift; "$@" & echo $! >"$pid_file.tmp"; mv "$pid_file.tmp" "$pid_file"; wait"#)
            .arg("sh")
            .arg(&pid_file)
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => wrapper.env(key, value),
                None => wrapper.env_remove(key),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            wrapper.current_dir(dir);
        }
        let wrapper = wrapper.spawn().unwrap();
        let pid = wait_until(WAIT, || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("the wrapper never started cvdmirror")
        });
        Wrapped { wrapper, pid }
    }

    /// Whether the `cvdmirror sync` process still runs (a zombie does not).
    fn sync_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(state != 'Z' && state != 'X')
            })
            .unwrap_or(false)
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
        if self.sync_alive() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

fn staged_bytes(root: &Path, name: &str) -> u64 {
    let part: PathBuf = cvdmirror::sync::publish::staging_dir(root).join(format!("{name}.part"));
    std::fs::metadata(part).map_or(0, |m| m.len())
}

/// The reported defect, as the operator saw it: `kill -9` of "the sync"
/// while the CVD trickles in, then a new pass at once. The kill reached the
/// wrapper only; the first pass lives on in the same staging files. The new
/// pass must converge at the first try (exit 0, newest version), and the
/// served files must verify before, during and after, whichever pass
/// finishes first.
#[test]
fn kill_9_of_a_wrapper_mid_download_then_the_next_pass_converges() {
    let world = World::new();
    world.release(267, 270, CVD_SIZE);
    let mirror = Mirror::new();
    mirror.sync(&world).assert_ok();
    assert_eq!(mirror.version(), Some(270));

    world.release(270, 272, SLOW_CVD);
    world.up.set_chunk_delay(SLOW_CHUNK_DELAY);
    let newest = cvd(272, SLOW_CVD);

    let first = Wrapped::spawn(
        &mirror.command(&world),
        &mirror.dir.path().join("first.log"),
    );
    wait_until(WAIT, || {
        let staged = staged_bytes(&mirror.root, "bytecode.cvd") >= KILL_AT;
        assert!(
            staged || first.sync_alive(),
            "the first pass ended before it staged {KILL_AT} bytes of bytecode.cvd"
        );
        check(staged, || {
            format!("the first pass never staged {KILL_AT} bytes of bytecode.cvd")
        })
    });
    // kill -9 of what the operator sees.
    let mut first = first;
    first.wrapper.kill().unwrap();
    first.wrapper.wait().unwrap();
    assert!(
        first.sync_alive(),
        "premise: the first pass outlives its wrapper"
    );
    check_served(&mirror.root, Some(270)).unwrap_or_else(|e| panic!("after the kill: {e}"));

    let run = mirror.sync(&world);
    let first_log =
        || std::fs::read_to_string(mirror.dir.path().join("first.err")).unwrap_or_default();
    assert!(
        run.ok(),
        "the first pass after the kill must converge\n{run}--- the killed pass (still running: {})\n{}",
        first.sync_alive(),
        first_log()
    );
    assert_eq!(mirror.version(), Some(272), "{run}");
    check_served(&mirror.root, Some(270)).unwrap_or_else(|e| panic!("{e}\n{run}"));

    // The first pass ends on its own; what is served stays whole.
    wait_until(WAIT, || {
        check(!first.sync_alive(), || "the first pass never ended")
    });
    check_served(&mirror.root, Some(270)).unwrap_or_else(|e| {
        panic!(
            "after the killed pass ended: {e}\n{run}--- the killed pass\n{}",
            first_log()
        )
    });
    assert_eq!(
        std::fs::read(mirror.root.join("bytecode.cvd")).unwrap(),
        *newest
    );
}
