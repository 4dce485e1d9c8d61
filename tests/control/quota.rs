//! Client quotas: each `on_exceed` action does what it says (reject with
//! the configured status and a `Retry-After` to the period's end,
//! redirect, slow down, also mid-download), bytes sent after a SIGHUP are
//! still charged, and usage survives a graceful restart and a kill after
//! the periodic save.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::measure::{BIG, MID, exclusive, mb, random_bytes, secs, sleep_until};
use super::net::{Download, Pace, client, downloads, fetch, fetch_head, stop_all};
use crate::support::TestServer;
use crate::support::wait::{check, wait_until};

/// Seconds until the current `period` (aligned to the Unix epoch) ends.
fn until_period_end(period: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    period - now % period
}

/// A server with a 1 MB/h client quota whose excess gets `on_exceed`.
fn quota_server(on_exceed: &str) -> TestServer {
    TestServer::builder()
        .file("main.cvd", &random_bytes(MID, 9))
        .config(&format!(
            "[limits.client_quota]\nlimit = 1000000\nperiod = \"1h\"\nslices = 1\non_exceed = {on_exceed}\n"
        ))
        .start()
}

/// Uses the quota up with one whole download (allowed: it starts within
/// the quota) and checks small requests are still answered.
fn exhaust_quota(server: &TestServer) {
    let first = fetch(client(1), server.addr, "GET", "/main.cvd", &[]);
    assert_eq!(first.head.status, 200, "{:?}", first.head);
    assert_eq!(first.body.len(), MID);
}

fn assert_small_still_served(server: &TestServer) {
    let check = fetch(
        client(1),
        server.addr,
        "GET",
        "/main.cvd",
        &[("Range", "bytes=0-511")],
    );
    assert_eq!(check.head.status, 206, "small request refused by a quota");
}

fn assert_refused_until_period_end(server: &TestServer, status: u16) {
    let refused = fetch(client(1), server.addr, "GET", "/main.cvd", &[]);
    assert_eq!(refused.head.status, status, "{:?}", refused.head);
    let retry: u64 = refused
        .header("retry-after")
        .expect("refusal without Retry-After")
        .parse()
        .unwrap();
    // The quota comes back when the hour ends; refusals are jittered by up
    // to the default 60 s beyond that.
    let rest = until_period_end(3600);
    eprintln!("quota {status}: Retry-After {retry} s, period ends in {rest} s");
    assert!(
        retry + 2 >= rest && retry <= rest + 62,
        "Retry-After {retry} s, but the quota is back in {rest} s (+60 s jitter)"
    );
}

#[test]
fn exhausted_quota_rejects_with_429() {
    let server = quota_server("{ action = \"reject\" }");
    exhaust_quota(&server);
    assert_refused_until_period_end(&server, 429);
    assert_small_still_served(&server);
}

#[test]
fn exhausted_quota_rejects_with_the_configured_503() {
    let server = quota_server("{ action = \"reject\", status = 503 }");
    exhaust_quota(&server);
    assert_refused_until_period_end(&server, 503);
    assert_small_still_served(&server);
}

#[test]
fn exhausted_quota_redirects_to_url_plus_path() {
    for (config, status) in [
        (
            "{ action = \"redirect\", url = \"https://mirror2.example/clamav\" }",
            302,
        ),
        (
            "{ action = \"redirect\", status = 307, url = \"https://mirror2.example/clamav/\" }",
            307,
        ),
    ] {
        let server = quota_server(config);
        exhaust_quota(&server);
        let moved = fetch(client(1), server.addr, "GET", "/main.cvd?v=1", &[]);
        assert_eq!(moved.head.status, status, "{:?}", moved.head);
        assert_eq!(
            moved.header("location"),
            Some("https://mirror2.example/clamav/main.cvd?v=1")
        );
        assert_small_still_served(&server);
    }
}

#[test]
fn exhausted_quota_slows_to_the_configured_rate() {
    let _measuring = exclusive();
    let server = quota_server("{ action = \"slow\", rate = \"4Mbit\" }");
    exhaust_quota(&server);
    let t0 = Instant::now();
    let slowed = Download::start(client(1), server.addr, "/main.cvd", Pace::Greedy);
    let trace = slowed.finish(secs(15));
    assert_eq!(trace.head.status, 200);
    assert!(trace.complete, "{:?}", trace.error);
    // Rate over the body after its first 100 ms (the cap's burst).
    let first = trace.reads[0].0;
    let last = trace.reads.last().unwrap().0;
    let from = first + Duration::from_millis(100);
    let bytes = trace.bytes_between(from, last + Duration::from_nanos(1));
    let rate = bytes as f64 / (last - from).as_secs_f64();
    eprintln!(
        "quota slow 4Mbit: {} bytes in {:?}, {rate:.0} B/s (target 500000)",
        trace.total,
        last - t0
    );
    assert!(
        (rate - 500_000.0).abs() / 500_000.0 <= 0.05,
        "slowed download ran at {rate:.0} B/s, configured 500,000"
    );
}

/// A download that starts within a 1 MB quota and runs it out: the rest of
/// it goes at the `slow` action's 500,000 B/s, not at full speed. Rate over
/// everything received after the first 1.5 MB (past the quota, the check
/// interval and the cap's burst).
#[test]
fn quota_running_out_mid_download_slows_the_rest() {
    let _measuring = exclusive();
    const FILE: usize = 3_000_000;
    let server = TestServer::builder()
        .file("main.cvd", &random_bytes(FILE, 16))
        .config(
            "[limits.client_quota]\nlimit = 1000000\nperiod = \"1h\"\nslices = 1\n\
             on_exceed = { action = \"slow\", rate = \"4Mbit\" }\n",
        )
        .start();
    let trace = Download::start(client(1), server.addr, "/main.cvd", Pace::Greedy).finish(secs(20));
    assert_eq!(trace.head.status, 200);
    assert!(trace.complete, "{:?}", trace.error);
    let mut received = 0;
    let from = trace
        .reads
        .iter()
        .find(|(_, n)| {
            received += n;
            received >= 1_500_000
        })
        .map(|(t, _)| *t)
        .unwrap();
    let last = trace.reads.last().unwrap().0;
    let bytes = trace.bytes_between(from, last + Duration::from_nanos(1)) as f64;
    let rate = bytes / (last - from).as_secs_f64();
    eprintln!(
        "quota slow mid-download: {bytes} bytes after 1.5 MB at {rate:.0} B/s (target 500000)"
    );
    assert!(
        (rate - 500_000.0).abs() / 500_000.0 <= 0.10,
        "after the quota ran out the download ran at {rate:.0} B/s, configured 500,000"
    );
}

/// Bytes a transfer sends after a SIGHUP still count against the quota.
/// 1 MB/s cap, 3 MB quota: about 2 MB sent before the reload and 2 MB
/// after; the next whole download must be refused.
#[test]
fn bytes_sent_after_a_sighup_are_charged_to_the_quota() {
    let server = TestServer::builder()
        .file("daily.cvd", &random_bytes(BIG, 14))
        .file("main.cvd", &random_bytes(MID, 15))
        .config(
            "[shape]\nlink_rate = \"8Mbit\"\n[limits.client_quota]\nlimit = 3000000\nperiod = \"1h\"\nslices = 1\n",
        )
        .start();
    let t0 = Instant::now();
    let running = downloads(&server, &[1], "/daily.cvd");
    sleep_until(t0 + secs(2));
    server.reload(secs(5));
    let at_reload = t0.elapsed();
    sleep_until(t0 + secs(4));
    let trace = stop_all(running).remove(0);
    let before = trace.bytes_between(t0, t0 + at_reload);
    eprintln!(
        "quota across SIGHUP: {} received before the reload, {} in all (quota 3 MB)",
        mb(before as f64),
        mb(trace.total as f64)
    );
    assert!(before < 2_700_000 && trace.total > 3_500_000);
    let next = fetch_head(&server, client(1), "/main.cvd");
    assert_eq!(
        next,
        429,
        "{} were sent to this client ({} of them after SIGHUP) with a 3 MB quota, \
         yet a new whole download was admitted: bytes sent after the reload were not charged",
        trace.total,
        trace.total - before
    );
}

fn restart_config(state: &std::path::Path, extra: &str) -> String {
    format!(
        "[limits]\nstate_file = \"{}\"\n{extra}\n[limits.client_quota]\nlimit = 2500000\nperiod = \"1h\"\nslices = 1\n",
        state.display()
    )
}

fn start_with_state(config: &str) -> TestServer {
    TestServer::builder()
        .file("main.cvd", &random_bytes(MID, 10))
        .config(config)
        .start()
}

fn download_status(server: &TestServer) -> u16 {
    let r = fetch(client(1), server.addr, "GET", "/main.cvd", &[]);
    if r.head.status == 200 {
        assert_eq!(r.body.len(), MID);
    }
    r.head.status
}

/// 2.4 MB of a 2.5 MB quota used, SIGTERM, restart: one more download is
/// allowed (it starts within the quota), the next is refused. Had the usage
/// been lost, both would be allowed.
#[test]
fn quota_usage_survives_a_graceful_restart() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("limits-state");
    let config = restart_config(&state, "");
    let before = start_with_state(&config);
    assert_eq!(download_status(&before), 200);
    assert_eq!(download_status(&before), 200);
    before.signal("TERM");
    let status = before.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}");
    let saved = std::fs::read_to_string(&state).unwrap_or_else(|e| {
        panic!(
            "no state saved on shutdown at {}: {e}\nstderr: {}",
            state.display(),
            before.stderr()
        )
    });
    let after = start_with_state(&config);
    assert_eq!(download_status(&after), 200, "saved state: {saved}");
    assert_eq!(
        download_status(&after),
        429,
        "quota usage lost across the restart; saved state: {saved}"
    );
}

/// The periodic save (`save_interval = "1s"`) alone keeps the usage, even
/// when the server is killed without a chance to save.
#[test]
fn quota_usage_survives_a_kill_after_the_periodic_save() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("limits-state");
    let config = restart_config(&state, "save_interval = \"1s\"");
    let before = start_with_state(&config);
    assert_eq!(download_status(&before), 200);
    assert_eq!(download_status(&before), 200);
    let used = SystemTime::now();
    // Wait (bounded) for a save that started after the downloads ended.
    wait_until(secs(5), || {
        let fresh = std::fs::metadata(&state)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > used + Duration::from_millis(50));
        check(fresh, || {
            format!("no periodic save of {} within 5 s", state.display())
        })
    });
    drop(before); // SIGKILL
    let after = start_with_state(&config);
    assert_eq!(download_status(&after), 200);
    assert_eq!(
        download_status(&after),
        429,
        "usage not restored from the periodic save"
    );
}
