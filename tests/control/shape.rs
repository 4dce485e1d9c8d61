//! The link cap and who gets it: the cap holds second by second whatever
//! greedy clients do, the link is shared fairly per client (not per
//! connection), header checks, 304s and cdiffs stay fast while whole CVDs
//! fill it, and a new cap applied with SIGHUP reaches transfers in flight.

use std::time::{Duration, Instant};

use super::measure::{
    BIG, errors, exclusive, jain, mb, per_window, random_bytes, secs, sleep_until, worst,
};
use super::net::{Download, Pace, Trace, client, downloads, fetch, stop_all};
use crate::support::{self, TestServer};

/// `--link-rate 40Mbit` is 5,000,000 bytes per second, whatever 4 greedy
/// clients do: no middle one-second window more than 2 % above it (the cap
/// holds), and the windows together within 2 % of it (the link is used).
/// A single window may fall short by a few percent when the machine stalls
/// the server for longer than the shaper makes up (12 ms; making up more
/// means sending above the cap for longer, see `shape/bucket.rs`), so each
/// window is only held to 5 % below.
#[test]
fn link_cap_holds_in_every_one_second_window() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 1))
        .args(["--link-rate", "40Mbit"])
        .start();
    let t0 = Instant::now();
    let running = downloads(&server, &[2, 3, 4, 5], "/daily.cvd");
    sleep_until(t0 + secs(7));
    let traces = stop_all(running);
    let refs: Vec<&Trace> = traces.iter().collect();
    let windows = per_window(&refs, t0, 1..6);
    let errs = errors(&windows, 5_000_000.0);
    eprintln!("link cap 40Mbit, 4 clients: windows {windows:?}, errors {errs:.4?}");
    for t in &traces {
        assert!(!t.complete && t.error.is_none(), "{:?}", t.error);
    }
    let over = errs.iter().copied().fold(f64::MIN, f64::max);
    let under = errs.iter().copied().fold(f64::MAX, f64::min);
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    assert!(
        over <= 0.02,
        "a window is more than 2 % above 5,000,000 B/s: {windows:?} ({errs:.4?})"
    );
    assert!(
        mean >= -0.02 && under >= -0.05,
        "the cap was not used: {windows:?} ({errs:.4?}, mean {mean:.4})"
    );
}

/// Eight clients with equal demand under the cap get equal shares.
#[test]
fn eight_clients_share_the_cap_fairly() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 2))
        .args(["--link-rate", "40Mbit"])
        .start();
    let t0 = Instant::now();
    let running = downloads(&server, &[10, 11, 12, 13, 14, 15, 16, 17], "/daily.cvd");
    sleep_until(t0 + secs(6));
    let traces = stop_all(running);
    let (from, to) = (t0 + secs(1), t0 + secs(5));
    let shares: Vec<f64> = traces
        .iter()
        .map(|t| t.bytes_between(from, to) as f64)
        .collect();
    let j = jain(&shares);
    let total: f64 = shares.iter().sum();
    eprintln!(
        "fairness, 8 clients over 4 s: per client {:?}, total {} (4 s at cap = 20 MB), Jain {j:.5}",
        shares.iter().map(|&s| mb(s)).collect::<Vec<_>>(),
        mb(total)
    );
    assert!(j >= 0.98, "Jain's index {j:.4} below 0.98: {shares:?}");
    // Above the cap never; below it only by what a stalled test machine
    // costs (see `link_cap_holds_in_every_one_second_window`).
    assert!(
        (-0.05..=0.02).contains(&((total - 20e6) / 20e6)),
        "the 8 clients together did not get the cap: {total}"
    );
}

/// A client with 4 parallel connections gets what a client with 1 gets:
/// shares are per client, not per connection.
#[test]
fn parallel_connections_do_not_buy_a_bigger_share() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 3))
        .args(["--link-rate", "40Mbit"])
        .start();
    let t0 = Instant::now();
    let greedy = downloads(&server, &[20, 20, 20, 20], "/daily.cvd");
    let single = downloads(&server, &[21], "/daily.cvd");
    sleep_until(t0 + secs(6));
    let greedy = stop_all(greedy);
    let single = stop_all(single);
    let (from, to) = (t0 + secs(1), t0 + secs(5));
    let four: f64 = greedy
        .iter()
        .map(|t| t.bytes_between(from, to) as f64)
        .sum();
    let one = single[0].bytes_between(from, to) as f64;
    let ratio = four / one;
    let j = jain(&[four, one]);
    eprintln!(
        "per-client fairness over 4 s: 4 connections {}, 1 connection {}, ratio {ratio:.4}, Jain {j:.5}",
        mb(four),
        mb(one)
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "4 connections got {ratio:.3}x what 1 connection got ({four} vs {one})"
    );
    assert!(j >= 0.98, "Jain's index {j:.4}");
}

/// One round of the three small requests a client makes, from `src`;
/// returns their latencies (connect to last byte).
fn small_round(server: &TestServer, src: u8) -> [Duration; 3] {
    let src = client(src);
    let check = fetch(
        src,
        server.addr,
        "GET",
        "/bytecode.cvd",
        &[("Range", "bytes=0-511")],
    );
    assert_eq!(check.head.status, 206, "{:?}", check.head);
    assert_eq!(check.body.len(), 512);
    let modified = check
        .header("last-modified")
        .expect("no Last-Modified")
        .to_owned();
    let not_modified = fetch(
        src,
        server.addr,
        "GET",
        "/bytecode.cvd",
        &[("If-Modified-Since", &modified)],
    );
    assert_eq!(not_modified.head.status, 304, "{:?}", not_modified.head);
    let cdiff = fetch(src, server.addr, "GET", "/daily-1.cdiff", &[]);
    assert_eq!(cdiff.head.status, 200);
    assert_eq!(cdiff.body.len(), 8192);
    [check.elapsed, not_modified.elapsed, cdiff.elapsed]
}

fn worst_of(rounds: &[[Duration; 3]]) -> [Duration; 3] {
    let mut out = [Duration::ZERO; 3];
    for r in rounds {
        for (o, d) in out.iter_mut().zip(r) {
            *o = (*o).max(*d);
        }
    }
    out
}

/// Header checks, 304s and cdiffs never queue behind whole CVDs filling the cap.
#[test]
fn small_requests_stay_fast_while_bulk_saturates_the_cap() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 4))
        .file("bytecode.cvd", &support::fixture("bytecode-339.cvd"))
        .file("daily-1.cdiff", &random_bytes(8192, 5))
        .args(["--link-rate", "40Mbit"])
        .start();
    let idle: Vec<[Duration; 3]> = (0..5).map(|_| small_round(&server, 30)).collect();
    let idle = worst_of(&idle);

    let t0 = Instant::now();
    let bulk = downloads(&server, &[2, 3, 4, 5], "/daily.cvd");
    sleep_until(t0 + secs(1));
    // A round every 100 ms for 2 s, so the bulk rate is measured over
    // whole seconds while they run.
    let from = Instant::now();
    let busy: Vec<[Duration; 3]> = (0..20u32)
        .map(|i| {
            sleep_until(from + Duration::from_millis(100) * i);
            small_round(&server, 31)
        })
        .collect();
    sleep_until(from + secs(2));
    let to = Instant::now();
    let bulk = stop_all(bulk);
    let busy = worst_of(&busy);

    // The cap really was full while the small requests ran.
    let refs: Vec<&Trace> = bulk.iter().collect();
    let bulk_rate = refs.iter().map(|t| t.bytes_between(from, to)).sum::<u64>() as f64
        / (to - from).as_secs_f64();
    eprintln!(
        "small requests (header check, 304, cdiff), worst of rounds: idle {idle:?}, under load {busy:?}; bulk meanwhile {} /s",
        mb(bulk_rate)
    );
    assert!(
        bulk_rate > 0.9 * 5e6,
        "bulk did not saturate the cap: {bulk_rate} B/s"
    );
    for (name, (i, b)) in ["header check", "304", "cdiff"]
        .iter()
        .zip(idle.iter().zip(&busy))
    {
        let bound = (*i + Duration::from_millis(100)).min(Duration::from_millis(250));
        assert!(
            *b <= bound,
            "{name} took {b:?} under load (idle {i:?}, bound {bound:?})"
        );
    }
}

/// The link cap changes from 40Mbit to 8Mbit on SIGHUP; the transfer in
/// flight keeps going and moves to the new rate within a couple of seconds.
#[test]
fn sighup_applies_a_new_link_rate_to_transfers_in_flight() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 11))
        .config("[shape]\nlink_rate = \"40Mbit\"\n")
        .start();
    let t0 = Instant::now();
    let running = Download::start(client(2), server.addr, "/daily.cvd", Pace::Greedy);
    sleep_until(t0 + secs(3));
    std::fs::write(
        server.dir.path().join("cvdmirror.toml"),
        "[shape]\nlink_rate = \"8Mbit\"\n",
    )
    .unwrap();
    let hup = Instant::now();
    server.reload(secs(5));
    sleep_until(t0 + secs(7));
    let trace = running.stop();
    assert!(
        trace.error.is_none() && !trace.complete,
        "transfer ended: {:?}",
        trace.error
    );
    let before = per_window(&[&trace], t0, 1..3);
    // Windows that start a full second after the reload.
    let after_start = ((hup - t0).as_secs_f64() + 1.0).ceil() as u32;
    let after = per_window(&[&trace], t0, after_start..7);
    let (eb, ea) = (errors(&before, 5e6), errors(&after, 1e6));
    eprintln!(
        "SIGHUP at {:?}: windows before {before:?} ({eb:.4?}), from {after_start} s {after:?} ({ea:.4?})",
        hup - t0
    );
    assert!(after.len() >= 2, "too few windows after the reload");
    assert!(worst(&eb) <= 0.05, "before the reload: {before:?}");
    assert!(worst(&ea) <= 0.05, "after the reload: {after:?}");
    // Bytes kept coming to the end (the transfer was not dropped).
    let tail = trace.bytes_between(t0 + secs(6), t0 + secs(7));
    assert!(tail > 0);
}
