//! The status page in a real browser: headless Chromium loads it from the
//! admin listener, runs its script without console errors, redraws itself
//! from `status.json` without reloads, and leaves a screenshot in
//! `target/test-artifacts/status-page.png` for a person to look at.
//!
//! Chromium is a test dependency (`scripts/install-test-deps` installs
//! Debian's `chromium`); without it this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::start;
use crate::support::TestServer;
use crate::support::fixture;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!("chromium is not installed: run scripts/install-test-deps (Debian package `chromium`)");
}

/// Runs headless Chromium on `url` with `extra` flags in a fresh profile,
/// in a 1400 × 1300 window.
pub(super) fn browse(url: &str, extra: &[&str]) -> Output {
    browse_at(url, (1400, 1300), extra)
}

/// Runs headless Chromium on `url` in a `width` × `height` window with
/// `extra` flags, in a fresh profile.
pub(super) fn browse_at(url: &str, (width, height): (u32, u32), extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=7000",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The DOM of `url` after its scripts ran (in a 1400 × 1300 window),
/// asserting that the page logged no console error.
pub(super) fn rendered_dom(url: &str) -> String {
    let out = browse(url, &["--dump-dom"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        console_errors(&stderr).is_empty(),
        "console errors: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Console errors and uncaught exceptions in Chromium's log.
pub(super) fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("Uncaught")
                || (l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Error")))
                || l.contains("Refused to")
        })
        .collect()
}

/// The text of the element with `id` in a dumped DOM.
pub(super) fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

fn traffic(server: &TestServer, cvd_len: usize, n: usize) {
    for _ in 0..n {
        let r = server.request("GET", "/bytecode.cvd", &[]);
        assert_eq!((r.status, r.body.len()), (200, cvd_len));
        let r = server.request("GET", "/bytecode.cvd", &[("Range", "bytes=0-511")]);
        assert_eq!(r.status, 206);
        assert_eq!(server.request("GET", "/daily-1.cdiff", &[]).status, 404);
    }
}

#[test]
fn the_status_page_renders_live_numbers_without_errors() {
    let cvd = fixture("bytecode-339.cvd");
    let server = start(
        &[("bytecode.cvd", &cvd)],
        "[alerts]\nlink_capacity = \"100Mbit\"\n",
    );
    traffic(&server, cvd.len(), 3);
    server.status_when("nine requests", |s| s["totals"]["requests"] == 9);
    let url = format!("http://{}/", server.admin_addr());

    let dom = rendered_dom(&url);
    assert_eq!(text_of(&dom, "k-req"), "9", "{dom}");
    assert_ne!(text_of(&dom, "headline"), "Waiting for the first status…");
    let renders: u32 = dom
        .split("data-renders=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        renders >= 2,
        "the page redrew itself {renders} times, without reloads"
    );
    assert!(dom.contains("/bytecode.cvd"), "top files missing");

    // More traffic: the numbers on the page follow.
    traffic(&server, cvd.len(), 2);
    server.status_when("fifteen requests", |s| s["totals"]["requests"] == 15);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let second = browse(&url, &["--dump-dom"]);
    let dom = String::from_utf8(second.stdout).unwrap();
    assert_eq!(text_of(&dom, "k-req"), "15");
    let third = browse(&url, &[&format!("--screenshot={}", shot.display())]);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        console_errors(&stderr).is_empty(),
        "console errors: {stderr}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot looks empty"
    );
}

/// Serves the status page and `status_json` on a free loopback port, one
/// `Connection: close` exchange at a time, until the test ends.
fn page_server(status_json: String) -> String {
    serve_page(cvdmirror::observe::page::HTML.to_owned(), status_json)
}

/// Serves `html` at `/` and `status_json` at `/status.json` on a free
/// loopback port, one `Connection: close` exchange at a time, until the
/// test ends.
pub(super) fn serve_page(html: String, status_json: String) -> String {
    serve(vec![
        ("/".into(), "text/html; charset=utf-8", html),
        ("/status.json".into(), "application/json", status_json),
    ])
}

/// Serves `(path, content type, body)`s on a free loopback port, one
/// `Connection: close` exchange at a time, until the test ends.
pub(super) fn serve(routes: Vec<(String, &'static str, String)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/");
            let (status, ctype, body) = routes.iter().find(|(p, _, _)| p == path).map_or(
                ("404 Not Found", "text/plain", "404 Not Found\n"),
                |(_, t, b)| ("200 OK", *t, b.as_str()),
            );
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// `/status.json` of an observer following a sync engine that publishes
/// daily with a `.sign` and main without one (missing for two hours), and
/// refused seven upstream files in the last hour.
pub(super) fn signed_sync_status() -> String {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use cvdmirror::observe::{ObserveConfig, Observer};
    use cvdmirror::sync::SyncStatus;
    use cvdmirror::sync::schedule::Trigger;
    use cvdmirror::sync::signatures::{DbSignatures, Rejection, Signer};

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut status = SyncStatus {
        published: BTreeMap::from([("daily".into(), 27781), ("main".into(), 62)]),
        signatures: BTreeMap::from([
            (
                "daily".into(),
                DbSignatures {
                    version: 27781,
                    legacy: true,
                    sign: Some(Signer {
                        signer: "ClamAV_datafiles_release".into(),
                        issuer: "Cisco ClamAV Intermediate CA".into(),
                        fingerprint: "6b3d4e1b9a0c7f21".repeat(4),
                    }),
                    sign_missing_since: None,
                },
            ),
            (
                "main".into(),
                DbSignatures {
                    version: 62,
                    legacy: true,
                    sign: None,
                    sign_missing_since: Some(now - 7200),
                },
            ),
        ]),
        ..SyncStatus::default()
    };
    for i in 0..7 {
        status.rejections.push(Rejection {
            at: now - 3600 + i * 60,
            file: format!("daily-{}.cdiff.sign", 27775 + i),
            reason: format!("invalid signature: line 1: certificate has expired (#{i})"),
        });
    }
    let observer = Observer::new(ObserveConfig::default());
    let (_tx, rx) = tokio::sync::watch::channel(status);
    observer.attach_sync(rx, Arc::new(Trigger::default()));
    observer.status_json_text(false)
}

/// The page shows, per database, which signatures the published CVD
/// carries and who signed the `.sign`, and the newest refused upstream
/// files first (a handful; `status.json` has them all). The document is the
/// one the observer builds from a sync status (the engine's part is
/// stubbed: its status is a value here).
#[test]
fn the_status_page_shows_signatures_and_refused_files() {
    let json = signed_sync_status();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        doc["sync"]["rejections"].as_array().unwrap().len(),
        7,
        "all in JSON"
    );

    let url = page_server(json);
    let dom = rendered_dom(&url);
    let sync = text_of_table(&dom, "t-sync");
    assert!(
        sync.contains("legacy + .sign")
            && sync.contains("ClamAV_datafiles_release")
            && sync.contains("Cisco ClamAV Intermediate CA · 6b3d4e1b9a0c7f21"),
        "daily's row: {sync}"
    );
    assert!(
        sync.contains("legacy only") && sync.contains("no .sign upstream since 2.0 h ago"),
        "main's row: {sync}"
    );
    let refused = text_of_table(&dom, "rejections");
    let shown: Vec<usize> = (0..7)
        .filter_map(|i| refused.find(&format!("expired (#{i})")))
        .collect();
    assert_eq!(shown.len(), 5, "a handful on the page: {refused}");
    assert!(
        shown.windows(2).all(|w| w[0] > w[1]),
        "newest first: {refused}"
    );
    assert!(refused.contains("daily-27781.cdiff.sign"), "{refused}");
    assert!(dom.contains("2 older ones in status.json"), "{dom}");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page-signatures.png");
    let _ = std::fs::remove_file(&shot);
    browse(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::read(&shot)
            .expect("screenshot written")
            .starts_with(b"\x89PNG")
    );
}

/// The markup of the table with `id` in a dumped DOM, without the `<wbr>`s
/// that let long names wrap.
pub(super) fn text_of_table(dom: &str, id: &str) -> String {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[at..];
    rest[..rest.find("</table>").unwrap_or(rest.len())].replace("<wbr>", "")
}
