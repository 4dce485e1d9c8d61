//! Real-client tests: Debian's `freshclam` (clamav-freshclam) updating from
//! a running `cvdmirror serve`.
//!
//! Unit and HTTP-level tests can only check what we believe clients do; these
//! check what the client the mirror exists for actually does with our
//! answers: that it downloads, verifies and loads genuine signed CVDs, stays
//! quiet when nothing changed, upgrades when the published file changes, and
//! never mistakes a missing file for a block (403) that would put it on a
//! 24-hour cool-down. Every scenario is checked from both ends: freshclam's
//! own verbose trace (what it sent and got) and cvdmirror's access log (what
//! the server says it answered), request by request.
//!
//! Needs `freshclam` and `sigtool` (scripts/install-test-deps installs them)
//! and root or a user who owns the temp dirs. When freshclam is missing the
//! tests fail; none is ever passed over. Tested with ClamAV 1.4.6 (Debian 12).

// A test crate: a panic with context *is* the failure report, so helpers
// unwrap like `#[test]` bodies do (clippy.toml allows it only in the latter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "freshclam/access_log.rs"]
mod access_log;

use std::cell::Cell;
use std::time::{Duration, UNIX_EPOCH};

use cvdmirror::cvd::Header;
use support::TestServer;
use support::access_log::LogLine;
use support::clamav::{freshclam_version, sigtool_verified_version};
use support::freshclam::{Client, Mode, Run, fmt_entries, header_version, log_for};

/// The served name of the database every scenario uses.
const CVD: &str = "/bytecode.cvd";

/// A cvdmirror serving (at most) `bytecode.cvd`, plus a cursor into its
/// access log so each freshclam run is matched with exactly its own lines.
struct Mirror {
    server: TestServer,
    seen: Cell<usize>,
}

impl Mirror {
    /// Serves `fixture` (e.g. `bytecode-268.cvd`) as `bytecode.cvd`, or nothing.
    fn serving(fixture: Option<&str>) -> Mirror {
        let mut builder = TestServer::builder();
        if let Some(name) = fixture {
            builder = builder.file("bytecode.cvd", &support::fixture(name));
        }
        Mirror {
            server: builder.start(),
            seen: Cell::new(0),
        }
    }

    /// The base URL a client is configured with.
    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Publishes a new `bytecode.cvd` the way a mirror should: written beside
    /// the root, then renamed over the old file in one step.
    fn publish(&self, fixture: &str) {
        let staging = self.server.dir.path().join("bytecode.cvd.staging");
        std::fs::write(&staging, support::fixture(fixture)).unwrap();
        std::fs::rename(&staging, self.server.root.join("bytecode.cvd")).unwrap();
    }

    /// The access-log lines written for `run`, checked one by one against
    /// the requests freshclam traced ([`log_for`]), none of them looking
    /// like a block, a rate limit or a failure to the client.
    fn log_for(&self, run: &Run) -> Vec<LogLine> {
        let mut seen = self.seen.get();
        let entries = log_for(&self.server, &mut seen, run);
        self.seen.set(seen);
        // Nothing a healthy mirror serves from a full root may look like a
        // block, a rate limit or a failure to the client.
        for entry in &entries {
            assert!(
                matches!(entry.status, 200 | 206 | 304 | 404),
                "unexpected status: {}\n{}\n{run}",
                entry.line,
                fmt_entries(&entries)
            );
        }
        entries
    }
}

/// Full (`200`) downloads of the CVD in `entries`.
fn full_downloads(entries: &[LogLine]) -> Vec<&LogLine> {
    entries
        .iter()
        .filter(|e| e.path == CVD && e.status == 200)
        .collect()
}

/// Asserts exactly one full download of the CVD, carrying all `size` bytes.
fn assert_one_full_download(entries: &[LogLine], size: usize) {
    let full = full_downloads(entries);
    assert_eq!(
        full.len(),
        1,
        "expected one full download:\n{}",
        fmt_entries(entries)
    );
    assert_eq!(
        full[0].bytes, size as u64,
        "full download logged with the wrong size: {}",
        full[0].line
    );
}

/// Asserts that every request for the CVD was a header check answered
/// cheaply (`304`, or `206` with exactly the 512-byte header), and that there
/// was at least one.
fn assert_only_header_checks(entries: &[LogLine]) {
    let cvd: Vec<&LogLine> = entries.iter().filter(|e| e.path == CVD).collect();
    assert!(
        !cvd.is_empty(),
        "client never checked {CVD}:\n{}",
        fmt_entries(entries)
    );
    for e in cvd {
        assert!(
            e.status == 304 || (e.status == 206 && e.bytes == 512),
            "header check not answered with 304 or a 512-byte 206: {}\n{}",
            e.line,
            fmt_entries(entries)
        );
    }
}

/// Asserts the client's database is `fixture`, byte for byte, and that
/// sigtool verifies it at `version`.
fn assert_client_has(client: &Client, fixture: &str, version: u32) {
    let local =
        std::fs::read(client.db().join("bytecode.cvd")).expect("client has no bytecode.cvd");
    assert_eq!(header_version(&local), version);
    assert!(
        local == support::fixture(fixture),
        "client's bytecode.cvd differs from {fixture}"
    );
    assert_eq!(
        sigtool_verified_version(&client.db().join("bytecode.cvd")),
        version
    );
}

/// The `If-Modified-Since` value a client holding `fixture` sends: its stime.
fn stime_date(fixture: &str) -> String {
    let stime = Header::parse(&support::fixture(fixture)).unwrap().stime;
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(stime))
}

#[test]
fn freshclam_is_installed() {
    let version = freshclam_version();
    eprintln!("testing against {version}");
    assert!(
        version.starts_with("ClamAV "),
        "unexpected freshclam --version: {version}"
    );
}

/// The everyday life of a PrivateMirror client: first download, a check that
/// finds nothing new, and an upgrade once a newer CVD is published.
#[test]
fn private_mirror_client_downloads_stays_current_and_upgrades() {
    let mirror = Mirror::serving(Some("bytecode-268.cvd"));
    let client = Client::new(&mirror.url(), Mode::PrivateMirror, &[]);

    // First run: nothing local, so the whole CVD comes down and is loaded.
    let run = client.run();
    run.assert_ok();
    run.assert_says("bytecode.cvd updated (version: 268");
    let log = mirror.log_for(&run);
    assert_one_full_download(&log, 78992);
    assert_client_has(&client, "bytecode-268.cvd", 268);

    // Second run: up to date, and the server's answer to the check cost a
    // 304 or a 512-byte 206, never the whole file again.
    let run = client.run();
    run.assert_ok();
    run.assert_says("bytecode.cvd database is up-to-date (version: 268");
    let log = mirror.log_for(&run);
    assert_only_header_checks(&log);
    let check = run.exchanges().into_iter().find(|e| e.path == CVD).unwrap();
    assert_eq!(
        check.header("if-modified-since"),
        Some(stime_date("bytecode-268.cvd").as_str())
    );
    assert_eq!(client.local_version(), Some(268));

    // A newer CVD is published (atomic rename): Last-Modified moves forward
    // with its stime, so the conditional download is not mistaken for
    // "not modified" by libcurl, and the client upgrades.
    mirror.publish("bytecode-339.cvd");
    let run = client.run();
    run.assert_ok();
    run.assert_says("bytecode.cvd updated (version: 339");
    let log = mirror.log_for(&run);
    assert_one_full_download(&log, 281702);
    assert_client_has(&client, "bytecode-339.cvd", 339);

    // And it is quiet again afterwards.
    let run = client.run();
    run.assert_ok();
    run.assert_says("bytecode.cvd database is up-to-date (version: 339");
    assert_only_header_checks(&mirror.log_for(&run));
}

/// A client holding a very old database (19, from 2010) catches up in one run.
#[test]
fn private_mirror_client_at_19_upgrades() {
    let mirror = Mirror::serving(Some("bytecode-268.cvd"));
    let client = Client::new(&mirror.url(), Mode::PrivateMirror, &[]);
    client.install("bytecode.cvd", &support::fixture("bytecode-19.cvd"));

    let run = client.run();
    run.assert_ok();
    run.assert_says("local version: 19, remote version: 268");
    run.assert_says("bytecode.cvd updated (version: 268");
    let log = mirror.log_for(&run);
    // The header check carried the old file's stime and, the served file
    // being newer, was answered with the 512-byte header rather than 304.
    let ex = run.exchanges();
    let check = ex
        .iter()
        .find(|e| e.path == CVD && e.header("range").is_some())
        .expect("no header check");
    assert_eq!(
        check.header("if-modified-since"),
        Some(stime_date("bytecode-19.cvd").as_str())
    );
    assert!(
        log.iter()
            .any(|e| e.path == CVD && e.status == 206 && e.bytes == 512),
        "{}",
        fmt_entries(&log)
    );
    assert_one_full_download(&log, 78992);
    assert_client_has(&client, "bytecode-268.cvd", 268);
}

/// A PrivateMirror client asks for `bytecode.cld` first; a mirror without one
/// must answer 404. A mirror that lacks the database altogether must also
/// answer 404: freshclam reports the failure and tries again next time,
/// whereas a 403 would put it on a 24-hour cool-down recorded in
/// `freshclam.dat` that blocks every server. The second run keeps the first
/// run's `freshclam.dat` on purpose: it proves no cool-down was recorded.
#[test]
fn missing_files_are_404_and_never_cause_a_cool_down() {
    let mirror = Mirror::serving(None);
    // One attempt: freshclam otherwise pauses 5 s between retries.
    let client = Client::new(&mirror.url(), Mode::PrivateMirror, &["MaxAttempts 1"]);

    let run = client.run();
    assert!(
        !run.succeeded(),
        "freshclam succeeded with nothing to download\n{run}"
    );
    run.assert_no_cool_down();
    let log = mirror.log_for(&run);
    assert!(
        log.iter().any(|e| e.path == "/bytecode.cld"),
        "client never asked for the .cld:\n{}",
        fmt_entries(&log)
    );
    assert!(
        log.iter().any(|e| e.path == CVD),
        "client never asked for the .cvd:\n{}",
        fmt_entries(&log)
    );
    assert!(
        log.iter().all(|e| e.status == 404),
        "missing files must be 404:\n{}",
        fmt_entries(&log)
    );
    assert!(
        client.db().join("freshclam.dat").exists(),
        "freshclam kept no state; the next step proves nothing"
    );

    mirror.publish("bytecode-268.cvd");
    let run = client.run();
    run.assert_ok();
    run.assert_no_cool_down();
    run.assert_says("bytecode.cvd updated (version: 268");
    let log = mirror.log_for(&run);
    let cld: Vec<&LogLine> = log.iter().filter(|e| e.path == "/bytecode.cld").collect();
    assert!(
        !cld.is_empty() && cld.iter().all(|e| e.status == 404),
        "{}",
        fmt_entries(&log)
    );
    assert_one_full_download(&log, 78992);
    assert_client_has(&client, "bytecode-268.cvd", 268);
}

/// An ordinary client pointed at the mirror with `DatabaseMirror` (no DNS)
/// tries incremental updates first. The mirror has no cdiffs: each must be a
/// plain 404, after which the client falls back to the whole CVD.
#[test]
fn database_mirror_client_falls_back_from_missing_cdiffs_to_the_whole_cvd() {
    let mirror = Mirror::serving(Some("bytecode-339.cvd"));
    let client = Client::new(&mirror.url(), Mode::DatabaseMirror, &[]);
    client.install("bytecode.cvd", &support::fixture("bytecode-268.cvd"));

    let run = client.run();
    run.assert_ok();
    run.assert_no_cool_down();
    run.assert_says("bytecode.cvd updated (version: 339");
    let log = mirror.log_for(&run);
    let cdiffs: Vec<&LogLine> = log
        .iter()
        .filter(|e| e.path == "/bytecode-269.cdiff")
        .collect();
    assert!(
        !cdiffs.is_empty(),
        "client never tried a cdiff:\n{}",
        fmt_entries(&log)
    );
    assert!(
        cdiffs.iter().all(|e| e.status == 404),
        "{}",
        fmt_entries(&log)
    );
    assert_one_full_download(&log, 281702);
    assert_client_has(&client, "bytecode-339.cvd", 339);
}

/// If the mirror ever serves an older CVD than a client holds (a restore, a
/// misconfigured sync), the client must neither downgrade nor download
/// anything: its If-Modified-Since is newer than the served file's stime.
#[test]
fn client_newer_than_the_mirror_downloads_nothing() {
    let mirror = Mirror::serving(Some("bytecode-268.cvd"));
    let client = Client::new(&mirror.url(), Mode::PrivateMirror, &[]);
    client.install("bytecode.cvd", &support::fixture("bytecode-339.cvd"));

    let run = client.run();
    run.assert_ok();
    run.assert_no_cool_down();
    let log = mirror.log_for(&run);
    assert_only_header_checks(&log);
    assert!(full_downloads(&log).is_empty());
    assert_client_has(&client, "bytecode-339.cvd", 339);
}
