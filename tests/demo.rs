//! `cvdmirror demo` end to end: the real binary, a short run with a tiny CVD
//! and a narrow link so the herd gate must refuse, watched through the
//! admin API's `/status.json` while it runs. Its stdout must read as the
//! story alone: the servers' log lines go to the file the story names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// What the watcher saw at its last look, and the most requests at any.
#[derive(Debug, Default)]
struct Seen {
    requests: Vec<u64>,
    refused_429: u64,
    published: Option<u64>,
}

async fn watch(admin: SocketAddr) -> Seen {
    let client = reqwest::Client::new();
    let mut seen = Seen::default();
    let url = format!("http://{admin}/status.json");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(response) = client.get(&url).send().await else {
            if !seen.requests.is_empty() {
                return seen; // the demo has stopped
            }
            continue;
        };
        let Ok(body) = response.bytes().await else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        seen.requests
            .push(status["totals"]["requests"].as_u64().unwrap_or(0));
        seen.refused_429 = seen
            .refused_429
            .max(status["status_codes"]["429"].as_u64().unwrap_or(0));
        if let Some(v) = status["sync"]["published"]["daily"].as_u64() {
            seen.published = Some(v);
        }
    }
}

/// A narration line: a timestamped event, an indented block (the
/// addresses before, the summary after), a heading or a blank.
fn is_narration(line: &str) -> bool {
    let stamped = line.len() > 9
        && line.as_bytes()[..8].iter().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                *b == b':'
            } else {
                b.is_ascii_digit()
            }
        })
        && line.as_bytes()[8] == b' ';
    let log_like = [
        " INFO ",
        " WARN ",
        " ERROR ",
        " DEBUG ",
        "hickory",
        "cvdmirror::",
        "cvdmirror_",
    ]
    .iter()
    .any(|marker| line.contains(marker));
    (stamped || line.is_empty() || line.starts_with("  ") || line.starts_with("Summary ("))
        && !log_like
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_plays_the_failed_update_tells_it_apart_from_its_log_and_cleans_up() {
    // For the watcher's HTTP client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let watcher = tokio::spawn(watch(admin));
    let started = tokio::time::Instant::now();
    let child = tokio::process::Command::from(support::process::cvdmirror(["demo"]))
        .args(["--duration", "15s", "--clients", "16", "--cvd-size", "300k"])
        .args(["--link-rate", "2Mbit", "--bulk-min-rate", "500kbit"])
        .args(["--retry-after-min", "1s", "--retry-after-max", "2s"])
        .arg("--admin-listen")
        .arg(admin.to_string())
        .arg("--tmp-dir")
        .arg(tmp.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cvdmirror demo");
    let out = tokio::time::timeout(Duration::from_secs(28), child.wait_with_output())
        .await
        .expect("the demo ends within its deadline")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "the demo succeeds: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(started.elapsed() < Duration::from_secs(28));
    let seen = tokio::time::timeout(Duration::from_secs(3), watcher)
        .await
        .expect("the watcher notices the end")
        .unwrap();

    assert!(
        seen.requests.windows(2).any(|w| w[1] > w[0]),
        "requests grow during the run: {:?}",
        seen.requests
    );
    assert!(
        seen.refused_429 >= 1,
        "the herd gate refused someone: {seen:?}"
    );
    assert_eq!(
        seen.published,
        Some(27_482),
        "sync published upstream's version"
    );

    // The story alone on the terminal; the log where the story says.
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    let stray: Vec<&str> = stdout.lines().filter(|l| !is_narration(l)).collect();
    assert!(stray.is_empty(), "not narration: {stray:#?}\nin:\n{stdout}");
    for event in ["herd gate closed", "sync: pass done", "Summary ("] {
        assert!(stdout.contains(event), "no {event:?} in:\n{stdout}");
    }
    let log: PathBuf = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  Log:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the story names its log")
        .into();
    assert_eq!(log.parent(), Some(tmp.path()), "{}", log.display());
    assert!(
        stdout.contains(&format!("  log             {}", log.display())),
        "named again at the end:\n{stdout}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        " INFO hickory_server::server: ",
        " INFO cvdmirror_sync::schedule: sync pass starting",
        " INFO cvdmirror_sync::engine: published db=\"daily\"",
    ] {
        assert!(text.contains(line), "no {line:?} in the log:\n{text}");
    }

    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, [log], "temporary directories removed, the log kept");
}
