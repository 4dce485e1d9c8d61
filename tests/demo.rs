//! `cvdmirror demo` end to end, in process: a short run with a tiny CVD and
//! a narrow link so the herd gate must refuse, watched through the admin
//! API's `/status.json` while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use cvdmirror::demo::{DemoArgs, run};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_plays_the_failed_update_and_cleans_up() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let args = DemoArgs {
        duration: Duration::from_secs(15),
        clients: 16,
        cvd_size: 300_000,
        link_rate: "2Mbit".parse().unwrap(),
        bulk_min_rate: "500kbit".parse().unwrap(),
        retry_after_min: Duration::from_secs(1),
        retry_after_max: Duration::from_secs(2),
        admin_listen: Some(admin),
        tmp_dir: Some(tmp.path().to_path_buf()),
        keep: false,
    };
    let watcher = tokio::spawn(watch(admin));
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(28), run(args))
        .await
        .expect("the demo ends within its deadline")
        .expect("the demo succeeds");
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
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temporary directories removed: {left:?}");
}
