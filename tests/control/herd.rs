//! The herd gate: it admits only the whole-CVD downloads it can serve at
//! the minimum rate and spreads the others over time with `Retry-After`,
//! keeps its count across SIGHUP, and real freshclam honours its `429`
//! with a cool-down during which it does not call again.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::measure::{BIG, MID, exclusive, random_bytes, secs};
use super::net::{Download, Pace, client, downloads, fetch, fetch_head, stop_all};
use crate::support::clamav::freshclam_version;
use crate::support::freshclam::{Client, Mode};
use crate::support::wait::wait_until;
use crate::support::{self, TestServer};

/// `--link-rate 16Mbit --bulk-min-rate 6Mbit`: 2 MB/s keeps 2 downloads at
/// 750 KB/s, so the third is refused with a `Retry-After` from the gate's
/// queue (one 20 MB download-time, 10 s, later per refused client, within
/// the default 60-900 s window), small requests still pass, and a finished
/// download frees its slot.
#[test]
fn herd_gate_admits_what_it_can_serve_at_the_minimum_rate() {
    let _measuring = exclusive();
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 6))
        .file("main.cvd", &random_bytes(MID, 7))
        .file("bytecode.cvd", &support::fixture("bytecode-339.cvd"))
        .file("daily-1.cdiff", &random_bytes(8192, 8))
        .args(["--link-rate", "16Mbit", "--bulk-min-rate", "6Mbit"])
        .start();
    let first = downloads(&server, &[2], "/daily.cvd");
    let mut second = Download::start(client(3), server.addr, "/main.cvd", Pace::Hold);
    assert_eq!(second.head().status, 200);

    let mut retry_after = Vec::new();
    for i in 0..40u8 {
        let src = client(40 + i);
        let refused = fetch(src, server.addr, "GET", "/daily.cvd", &[]);
        assert_eq!(
            refused.head.status,
            429,
            "download #{} admitted beyond the gate: {:?}",
            i + 3,
            refused.head
        );
        let secs: u64 = refused
            .header("retry-after")
            .expect("429 without Retry-After")
            .parse()
            .unwrap();
        assert!((60..=900).contains(&secs), "Retry-After {secs}");
        retry_after.push(secs);
    }
    let distinct: BTreeSet<u64> = retry_after.iter().copied().collect();
    eprintln!("herd gate: 40 refusals, Retry-After {retry_after:?}");
    assert!(
        retry_after.windows(2).all(|w| w[0] <= w[1]),
        "Retry-After does not follow the queue: {retry_after:?}"
    );
    assert!(
        distinct.len() >= 20,
        "Retry-After not spread: {retry_after:?}"
    );
    // The 40th is 40 download-times (400 s) behind, plus up to one of jitter.
    let (lo, hi) = (retry_after[0], retry_after[39]);
    assert!(
        lo == 60 && (380..=430).contains(&hi),
        "Retry-After over {lo}..{hi} s, not 60..~410"
    );
    // Asking again does not lose the place.
    let again = fetch(client(79), server.addr, "GET", "/daily.cvd", &[]);
    let again: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!(
        hi.abs_diff(again) <= 1,
        "asked again: {again} s, first {hi} s"
    );

    // Small requests while the gate is closed: never refused.
    for _ in 0..5 {
        let src = client(50);
        let check = fetch(
            src,
            server.addr,
            "GET",
            "/daily.cvd",
            &[("Range", "bytes=0-511")],
        );
        assert_eq!(check.head.status, 206);
        assert_eq!(
            fetch(src, server.addr, "HEAD", "/daily.cvd", &[])
                .head
                .status,
            200
        );
        assert_eq!(
            fetch(src, server.addr, "GET", "/daily-1.cdiff", &[])
                .head
                .status,
            200
        );
        assert_eq!(
            fetch(src, server.addr, "GET", "/bytecode.cvd", &[])
                .head
                .status,
            200,
            "a whole CVD below the bulk threshold is not judged by the gate"
        );
        assert_eq!(
            fetch(src, server.addr, "GET", "/nope.cvd", &[]).head.status,
            404
        );
    }

    // The second download finishes; a new one is admitted.
    second.release();
    let done = second.finish(secs(15));
    assert!(done.complete, "{:?}", done.error);
    let mut attempts = 0;
    let third = wait_until(secs(5), || {
        attempts += 1;
        admitted(&server, client(60)).ok_or("no download admitted after one finished")
    });
    eprintln!(
        "herd gate: a slot freed by a finished download was taken after {attempts} attempt(s)"
    );
    // And the gate is full again.
    assert_eq!(
        fetch(client(61), server.addr, "GET", "/daily.cvd", &[])
            .head
            .status,
        429
    );
    // A client that disconnects mid-transfer frees its slot too.
    let aborted = first.into_iter().next().unwrap().stop();
    assert!(!aborted.complete && aborted.error.is_none());
    let fourth = wait_until(secs(5), || {
        admitted(&server, client(62)).ok_or("the slot of an aborted download was never freed")
    });
    drop((third, fourth));
}

/// A greedy download of `/daily.cvd` from `src`, if the gate admits it.
fn admitted(server: &TestServer, src: Ipv4Addr) -> Option<Download> {
    let mut d = Download::start(src, server.addr, "/daily.cvd", Pace::Greedy);
    (d.head().status == 200).then_some(d)
}

/// SIGHUP (also what logrotate sends to reopen the access log) must not
/// make the herd gate forget the downloads it admitted: with both slots
/// held, a third download is still refused after a reload.
#[test]
fn sighup_keeps_the_herd_gate_count_of_transfers_in_flight() {
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 13))
        .config("[shape]\nlink_rate = \"16Mbit\"\n[limits.herd]\nbulk_min_rate = \"6Mbit\"\n")
        .start();
    let held = downloads(&server, &[2, 3], "/daily.cvd");
    assert_eq!(
        fetch(client(4), server.addr, "GET", "/daily.cvd", &[])
            .head
            .status,
        429
    );
    server.reload(secs(5));
    let third = fetch_head(&server, client(4), "/daily.cvd");
    let traces = stop_all(held);
    assert!(
        traces.iter().all(|t| t.error.is_none()),
        "held downloads dropped"
    );
    assert_eq!(
        third, 429,
        "after SIGHUP a third download was admitted while 2 were in flight \
         (the gate's capacity is 2): the reload reset the gate's count"
    );
}

/// A gate with one slot, held by a slow download; freshclam needing the
/// whole `bytecode.cvd` gets 429 + Retry-After, stores the cool-down, and
/// on the next run does not contact the server at all.
#[test]
fn freshclam_honours_the_herd_gate_429() {
    freshclam_version();
    // The real bytecode.cvd is ~280 KB, below the default 1 MiB bulk
    // threshold: lower it so this whole-CVD download is judged by the gate.
    let server = TestServer::builder()
        .file("bytecode.cvd", &support::fixture("bytecode-339.cvd"))
        .file("daily.cvd", &random_bytes(BIG, 12))
        .config("[limits]\nbulk_threshold = 65536\n")
        .args(["--link-rate", "8Mbit", "--bulk-min-rate", "6Mbit"])
        .start();
    let mut holder = Download::start(
        client(2),
        server.addr,
        "/daily.cvd",
        Pace::Slow {
            bytes: 16 * 1024,
            pause: Duration::from_millis(50),
        },
    );
    assert_eq!(holder.head().status, 200);
    let closed = fetch(client(3), server.addr, "GET", "/bytecode.cvd", &[]);
    assert_eq!(
        closed.head.status, 429,
        "gate not closed: {:?}",
        closed.head
    );

    let url = format!("http://{}", server.addr);
    let fc = Client::new(&url, Mode::PrivateMirror, &[]);
    let first = fc.run();
    let exchanges = first.exchanges();
    let refused: Vec<_> = exchanges
        .iter()
        .filter(|e| e.path == "/bytecode.cvd" && e.status == Some(429))
        .collect();
    assert!(!refused.is_empty(), "freshclam was not refused\n{first}");
    let sent_retry: Vec<u64> = first
        .response_headers("retry-after")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        !sent_retry.is_empty() && sent_retry.iter().all(|s| (60..=900).contains(s)),
        "Retry-After seen by freshclam: {sent_retry:?}\n{first}"
    );
    let dat = fc.db().join("freshclam.dat");
    assert!(dat.exists(), "no freshclam.dat written\n{first}");
    let first_output = first.output();
    let cool_down_lines: Vec<&str> = first_output
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("cool") || l.contains("429") || l.contains("retry")
        })
        .map(str::trim)
        .filter(|l| !l.starts_with('<') && !l.starts_with('>'))
        .collect();
    eprintln!(
        "freshclam run 1: exit {:?}, Retry-After sent {sent_retry:?}, said: {cool_down_lines:#?}",
        first.status
    );

    // The cool-down it stored is the Retry-After it got, from now.
    let until = first_output
        .lines()
        .find_map(|l| l.split("cool-down until after: ").nth(1))
        .expect("no cool-down time in freshclam's output")
        .trim()
        .to_owned();
    let out = std::process::Command::new("date")
        .args(["-d", &until, "+%s"])
        .output()
        .unwrap();
    let until_unix: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let honoured = until_unix.saturating_sub(now);
    let sent = *sent_retry.last().unwrap();
    eprintln!("freshclam stored a cool-down of ~{honoured} s for Retry-After {sent} s");
    assert!(
        honoured + 5 >= sent && honoured <= sent + 1,
        "cool-down {honoured} s for Retry-After {sent} s"
    );

    // The server logged what freshclam saw, by the same client.
    let logged_before = server.access_log_lines(exchanges.len() + 1).len();

    let second = fc.run();
    eprintln!(
        "freshclam run 2: exit {:?}, output:\n{}",
        second.status,
        second.output()
    );
    assert!(
        second.exchanges().is_empty(),
        "freshclam contacted the server during its cool-down\n{second}"
    );
    // Nothing new in the access log but our marker request.
    let marker = fetch(client(4), server.addr, "GET", "/marker-after-run-2", &[]);
    assert_eq!(marker.head.status, 404);
    let lines = server.access_log_lines(logged_before + 1);
    let new: Vec<&String> = lines[logged_before..]
        .iter()
        .filter(|l| !l.contains("/daily.cvd"))
        .collect();
    assert!(
        new.len() == 1 && new[0].contains("/marker-after-run-2"),
        "requests during freshclam's cool-down: {new:#?}"
    );
    let out = second.output().to_ascii_lowercase();
    assert!(
        out.contains("cool-down") || out.contains("cool down"),
        "second run does not mention its cool-down\n{second}"
    );
    // freshclam 1.4.6 exits 0 on both runs: the cool-down is a warning.
    drop(holder);
}
