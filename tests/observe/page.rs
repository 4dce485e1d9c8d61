//! The status page in a real browser: headless Chromium loads it from the
//! admin listener, runs its script without console errors, redraws itself
//! from `status.json` without reloads, and leaves a screenshot in
//! `target/test-artifacts/status-page.png` for a person to look at.
//!
//! Chromium is a test dependency (`scripts/install-test-deps` installs
//! Debian's `chromium`); without it this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::observe::spawn::{self, Observed};
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

/// Runs headless Chromium on `url` with `extra` flags in a fresh profile.
fn browse(url: &str, extra: &[&str]) -> Output {
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
            "--window-size=1400,1300",
            "--virtual-time-budget=7000",
        ])
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

/// Console errors and uncaught exceptions in Chromium's log.
fn console_errors(stderr: &str) -> Vec<&str> {
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
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

fn traffic(server: &Observed, cvd_len: usize, n: usize) {
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
    let server = spawn::start(
        &[("bytecode.cvd", &cvd)],
        "[alerts]\nlink_capacity = \"100Mbit\"\n",
    );
    traffic(&server, cvd.len(), 3);
    server.status_when("nine requests", |s| s["totals"]["requests"] == 9);
    let url = format!("http://{}/", server.admin);

    let first = browse(&url, &["--dump-dom"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        console_errors(&stderr).is_empty(),
        "console errors: {stderr}"
    );
    let dom = String::from_utf8(first.stdout).unwrap();
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
