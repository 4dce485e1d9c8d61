//! Debian's real freshclam (1.4) updating from cvdmirror over HTTPS, its
//! libcurl trusting the test CA through `CURL_CA_BUNDLE` and
//! `SSL_CERT_FILE`: the whole CVD, the cdiffs an ordinary client asks for
//! first (the mirror has none: `404`, then the whole CVD, as over HTTP),
//! and the up-to-date check, each checked from both ends (freshclam's
//! trace and the access log). Genuine fixtures only: freshclam accepts
//! nothing but officially signed files, and no genuine cdiff exists (a
//! cdiff a real client applies over HTTPS, on its ClamAV 1.5 `.sign`, is
//! in `cdiff15`).

use std::path::Path;

use super::util::{Pki, tls_args};
use crate::support::access_log::LogLine;
use crate::support::clamav::sigtool_verified_version;
use crate::support::freshclam::{Client, Mode, Run, log_for};
use crate::support::{self, TestServer};

const CVD: &str = "/bytecode.cvd";

/// A mirror serving `fixture` as `bytecode.cvd` over HTTP and HTTPS.
fn mirror(pki: &Pki, fixture: &str) -> (TestServer, String) {
    let (cert, key) = pki.server("server", "localhost");
    let server = TestServer::builder()
        .file("bytecode.cvd", &support::fixture(fixture))
        .args(tls_args(&cert, &key))
        .start();
    let url = format!("https://localhost:{}", server.https_addr().port());
    (server, url)
}

/// Asserts libcurl spoke TLS to the mirror (its verbose trace says so).
fn assert_over_tls(run: &Run) {
    let out = run.output();
    assert!(
        out.contains("SSL connection using TLSv1.3")
            || out.contains("SSL connection using TLSv1.2"),
        "no TLS session in freshclam's trace\n{run}"
    );
}

fn full_downloads(entries: &[LogLine]) -> Vec<&LogLine> {
    entries
        .iter()
        .filter(|e| e.path == CVD && e.status == 200)
        .collect()
}

#[test]
fn freshclam_updates_over_https_and_then_only_checks() {
    let pki = Pki::new();
    let (server, url) = mirror(&pki, "bytecode-268.cvd");
    let client = Client::new(&url, Mode::PrivateMirror, &[]).trusting(&pki.ca_file);
    let mut seen = 0;

    // Whole CVD.
    let first = client.run();
    first.assert_ok();
    assert_over_tls(&first);
    first.assert_says("bytecode.cvd updated (version: 268");
    let log = log_for(&server, &mut seen, &first);
    let full = full_downloads(&log);
    assert_eq!(full.len(), 1, "{log:?}");
    assert_eq!(full[0].bytes, 78992);
    assert_eq!(client.local_version(), Some(268));
    sigtool_verified_version(&client.db().join("bytecode.cvd"));

    // Up to date: the check costs a 304 or the 512-byte header.
    let check = client.run();
    check.assert_ok();
    assert_over_tls(&check);
    check.assert_says("bytecode.cvd database is up-to-date (version: 268");
    let log = log_for(&server, &mut seen, &check);
    let cvd: Vec<&LogLine> = log.iter().filter(|e| e.path == CVD).collect();
    assert!(!cvd.is_empty(), "{log:?}");
    assert!(
        cvd.iter()
            .all(|e| e.status == 304 || (e.status == 206 && e.bytes == 512)),
        "{log:?}"
    );

    // Without the CA, a client refuses the mirror's certificate.
    let untrusting =
        Client::new(&url, Mode::PrivateMirror, &["MaxAttempts 1"]).trusting(Path::new("/dev/null"));
    let refused = untrusting.run();
    assert!(
        !refused.succeeded(),
        "freshclam trusted the mirror without its CA\n{refused}"
    );
    assert_eq!(untrusting.local_version(), None);
}

#[test]
fn freshclam_asks_for_cdiffs_over_https_and_falls_back_to_the_whole_cvd() {
    let pki = Pki::new();
    let (server, url) = mirror(&pki, "bytecode-339.cvd");
    let client = Client::new(&url, Mode::DatabaseMirror, &[]).trusting(&pki.ca_file);
    client.install("bytecode.cvd", &support::fixture("bytecode-268.cvd"));
    let mut seen = 0;

    let update = client.run();
    update.assert_ok();
    update.assert_no_cool_down();
    assert_over_tls(&update);
    update.assert_says("bytecode.cvd updated (version: 339");
    let log = log_for(&server, &mut seen, &update);
    let cdiffs: Vec<&LogLine> = log
        .iter()
        .filter(|e| e.path == "/bytecode-269.cdiff")
        .collect();
    assert!(!cdiffs.is_empty(), "no cdiff asked for over HTTPS: {log:?}");
    assert!(cdiffs.iter().all(|e| e.status == 404), "{log:?}");
    let full = full_downloads(&log);
    assert_eq!(full.len(), 1, "{log:?}");
    assert_eq!(full[0].bytes, 281702);
    assert_eq!(client.local_version(), Some(339));
    assert!(
        std::fs::read(client.db().join("bytecode.cvd")).unwrap()
            == support::fixture("bytecode-339.cvd")
    );

    // And then it is current: a header check, nothing more.
    let check = client.run();
    check.assert_ok();
    check.assert_says("bytecode.cvd database is up-to-date (version: 339");
    let log = log_for(&server, &mut seen, &check);
    assert!(full_downloads(&log).is_empty(), "{log:?}");
}
