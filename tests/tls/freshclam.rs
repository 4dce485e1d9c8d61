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
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::util::{Pki, https_addr, tls_args};
use crate::access_log::{self, Entry};
use crate::client::{self, Client, Mode, Run};
use crate::support::{self, TestServer};

const CVD: &str = "/bytecode.cvd";

/// A mirror serving `fixture` as `bytecode.cvd` over HTTP and HTTPS.
fn mirror(pki: &Pki, fixture: &str) -> (TestServer, String) {
    let (cert, key) = pki.server("server", "localhost");
    let server = TestServer::builder()
        .file("bytecode.cvd", &support::fixture(fixture))
        .args(tls_args(&cert, &key))
        .start();
    let url = format!("https://localhost:{}", https_addr(&server).port());
    (server, url)
}

/// Runs `client` once with the test CA as libcurl's (and OpenSSL's) trust.
fn run(client: &Client, mode: Mode, ca: &Path) -> Run {
    let dir = client.db().parent().unwrap().to_path_buf();
    let mut cmd = Command::new(client::freshclam_bin());
    cmd.arg(format!(
        "--config-file={}",
        dir.join("freshclam.conf").display()
    ))
    .arg("--update-db=bytecode");
    if mode == Mode::DatabaseMirror {
        cmd.arg("--no-dns");
    }
    cmd.env("CURL_CA_BUNDLE", ca)
        .env("SSL_CERT_FILE", ca)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; install it with scripts/install-test-deps (as root)",
            client::freshclam_bin()
        )
    });
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > client::RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        status,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    };
    assert!(
        run.status.is_some(),
        "freshclam was killed after {:?}\n{run}",
        client::RUN_TIMEOUT
    );
    run
}

/// The access-log entries of `run`, from line `from` on, matched request
/// by request with what freshclam traced.
fn log_for(server: &TestServer, from: &mut usize, run: &Run) -> Vec<Entry> {
    let exchanges = run.exchanges();
    assert!(!exchanges.is_empty(), "freshclam traced no request\n{run}");
    let lines = server.access_log_lines(*from + exchanges.len());
    let entries: Vec<Entry> = lines[*from..]
        .iter()
        .map(|l| access_log::parse(l).unwrap())
        .collect();
    *from = lines.len();
    assert_eq!(entries.len(), exchanges.len(), "{entries:?}\n{run}");
    for (entry, ex) in entries.iter().zip(&exchanges) {
        assert_eq!(
            (entry.path.as_str(), Some(entry.status)),
            (ex.path.as_str(), ex.status),
            "{run}"
        );
        assert!(entry.user_agent.starts_with("ClamAV/"), "{}", entry.line);
    }
    entries
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

fn full_downloads(entries: &[Entry]) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| e.path == CVD && e.status == 200)
        .collect()
}

#[test]
fn freshclam_updates_over_https_and_then_only_checks() {
    let pki = Pki::new();
    let (server, url) = mirror(&pki, "bytecode-268.cvd");
    let client = Client::new(&url, Mode::PrivateMirror, &[]);
    let mut seen = 0;

    // Whole CVD.
    let first = run(&client, Mode::PrivateMirror, &pki.ca_file);
    first.assert_success();
    assert_over_tls(&first);
    first.assert_says("bytecode.cvd updated (version: 268");
    let log = log_for(&server, &mut seen, &first);
    let full = full_downloads(&log);
    assert_eq!(full.len(), 1, "{log:?}");
    assert_eq!(full[0].bytes, 78992);
    assert_eq!(client.local_version(), Some(268));
    client::sigtool_verified_version(&client.db().join("bytecode.cvd"));

    // Up to date: the check costs a 304 or the 512-byte header.
    let check = run(&client, Mode::PrivateMirror, &pki.ca_file);
    check.assert_success();
    assert_over_tls(&check);
    check.assert_says("bytecode.cvd database is up-to-date (version: 268");
    let log = log_for(&server, &mut seen, &check);
    let cvd: Vec<&Entry> = log.iter().filter(|e| e.path == CVD).collect();
    assert!(!cvd.is_empty(), "{log:?}");
    assert!(
        cvd.iter()
            .all(|e| e.status == 304 || (e.status == 206 && e.bytes == 512)),
        "{log:?}"
    );

    // Without the CA, a client refuses the mirror's certificate.
    let untrusting = Client::new(&url, Mode::PrivateMirror, &["MaxAttempts 1"]);
    let refused = run(&untrusting, Mode::PrivateMirror, Path::new("/dev/null"));
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
    let client = Client::new(&url, Mode::DatabaseMirror, &[]);
    client.install("bytecode.cvd", &support::fixture("bytecode-268.cvd"));
    let mut seen = 0;

    let update = run(&client, Mode::DatabaseMirror, &pki.ca_file);
    update.assert_success();
    update.assert_no_cool_down();
    assert_over_tls(&update);
    update.assert_says("bytecode.cvd updated (version: 339");
    let log = log_for(&server, &mut seen, &update);
    let cdiffs: Vec<&Entry> = log
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
    let check = run(&client, Mode::DatabaseMirror, &pki.ca_file);
    check.assert_success();
    check.assert_says("bytecode.cvd database is up-to-date (version: 339");
    let log = log_for(&server, &mut seen, &check);
    assert!(full_downloads(&log).is_empty(), "{log:?}");
}
