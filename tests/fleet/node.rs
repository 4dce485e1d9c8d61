//! In-process fleet nodes with fast timings whose reports a test changes
//! as it goes, against the test's own Redis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvdmirror::fleet::{Fleet, FleetConfig, FleetView, LinkLoad, NodeReport, PublishedFile};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::redis::Redis;

/// A fleet node whose report the test can change.
pub struct Node {
    pub name: String,
    pub fleet: Fleet,
    pub report: Arc<Mutex<NodeReport>>,
    pub shutdown: CancellationToken,
}

impl Node {
    pub fn view(&self) -> Arc<FleetView> {
        self.fleet.view()
    }

    pub fn set(&self, change: impl FnOnce(&mut NodeReport)) {
        change(&mut self.report.lock().unwrap());
    }

    /// Stops the node as a crash would: nothing handed back.
    pub fn kill(&self) {
        self.fleet.abort();
    }

    /// Stops the node cleanly and waits until it has left.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.fleet.stopped().await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.fleet.abort();
    }
}

/// Fast timings: a fleet test runs in seconds.
pub fn config(redis: &Redis, name: &str) -> FleetConfig {
    let mut config = FleetConfig::new(redis.url(), name, format!("http://{name}.test"));
    config.heartbeat = Duration::from_millis(100);
    config.node_ttl = Duration::from_secs(1);
    config.lease_ttl = Duration::from_secs(1);
    config.stale_after = Duration::from_millis(1500);
    config.op_timeout = Duration::from_millis(300);
    config.lag_grace = Duration::from_secs(600);
    config
}

pub fn start(config: FleetConfig, report: NodeReport) -> Node {
    let name = config.node.clone();
    let report = Arc::new(Mutex::new(report));
    let shutdown = CancellationToken::new();
    let source = Arc::clone(&report);
    let fleet = Fleet::start(
        config,
        Arc::new(move || source.lock().unwrap().clone()),
        shutdown.clone(),
    )
    .unwrap();
    Node {
        name,
        fleet,
        report,
        shutdown,
    }
}

/// A report publishing `daily` at `version` and `files` (name, sha256),
/// on a link of `capacity` bytes/s carrying `load`.
pub fn report(
    version: u32,
    files: &[(&str, &str)],
    capacity: Option<u64>,
    load: u64,
) -> NodeReport {
    let mut report = NodeReport {
        link: LinkLoad { capacity, load },
        ..NodeReport::default()
    };
    report.versions.insert("daily".to_owned(), version);
    for &(name, sha256) in files {
        report.files.insert(
            name.to_owned(),
            PublishedFile {
                size: 1000,
                sha256: sha256.to_owned(),
                version: Some(version),
            },
        );
    }
    report
}

/// The names in a view, sorted.
pub fn names(view: &FleetView) -> Vec<String> {
    view.nodes
        .iter()
        .map(|node| node.name().to_owned())
        .collect()
}

/// Polls `condition` until it holds, failing the test with `what` after
/// `within`; how long it took.
pub async fn eventually(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
