//! Several cvdmirror nodes behind one name, coordinated through Redis.
//!
//! Each node runs one heartbeat task ([`Fleet::start`]) that writes the
//! node's [`NodeReport`] (files, database versions, link load, sync health)
//! to Redis with a TTL, reads every other node's, and keeps a lease so that
//! one node at a time pulls from upstream (`SET NX PX`, renewed and
//! released by compare-and-set scripts, with fencing tokens from `INCR`).
//! What it learns becomes a [`FleetView`]: which database versions every
//! healthy node publishes, which node may take a client this one is too
//! busy for, and whether that view can still be trusted after Redis was
//! lost. [`Fleet::view`] hands out the latest view without waiting;
//! [`shared_limits`] keeps per-client quotas and request rates fleet-wide
//! (decisions stay local, totals are reconciled in the background), and
//! [`SharedCounters`] are plain fleet-wide counters.
//!
//! Redis is a help, not a dependency: when it is out of reach the view
//! keeps the last known nodes for a while (`stale_after`), the lease lapses
//! on its own, and the fleet converges again once Redis is back.

mod config;
mod counters;
mod error;
mod files;
mod heartbeat;
pub mod redirect;
mod report;
pub mod shared_limits;
mod store;
mod tracker;
mod view;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use config::{FleetConfig, redacted_url};
pub use counters::SharedCounters;
pub use error::FleetError;
pub use files::PublishedFiles;
pub use redirect::RedirectHook;
pub use report::{LinkLoad, NodeReport, PublishedFile, SyncHealth, SyncState};
pub use shared_limits::{SharedLimits, SharedLimitsConfig, SharedLimitsStatus};
pub use view::{
    FleetNode, FleetSnapshot, FleetView, LeaseHolder, LeaseSnapshot, LeaseView, NodeSnapshot,
    NodeTarget,
};

use heartbeat::Heartbeat;
use store::Store;

/// What the node reports each heartbeat; the fleet fills in the name,
/// public URL and time from its configuration.
pub type ReportFn = Arc<dyn Fn() -> NodeReport + Send + Sync>;

/// A node's membership in its fleet: a handle on the heartbeat task.
#[derive(Clone)]
pub struct Fleet {
    view: Arc<ArcSwap<FleetView>>,
    peer_token: Arc<ArcSwapOption<String>>,
    store: Arc<Store>,
    task: AbortHandle,
    stopped: CancellationToken,
}

impl Fleet {
    /// Validates `config` and starts the heartbeat task, which beats until
    /// `shutdown` is cancelled and then hands the lease back and removes
    /// the node's report. Connects to Redis in the background: an
    /// unreachable Redis is not an error here but a view with
    /// `redis_ok = false`. Must be called within a Tokio runtime.
    pub fn start(
        config: FleetConfig,
        report: ReportFn,
        shutdown: CancellationToken,
    ) -> Result<Self, FleetError> {
        config.validate()?;
        let store = Arc::new(Store::new(&config)?);
        let heartbeat = Heartbeat::new(config, Arc::clone(&store), report);
        let view = heartbeat.views();
        let peer_token = heartbeat.peer_tokens();
        let stopped = CancellationToken::new();
        let done = stopped.clone().drop_guard();
        let task = tokio::spawn(async move {
            let _done = done;
            heartbeat.run(shutdown).await;
        })
        .abort_handle();
        Ok(Self {
            view,
            peer_token,
            store,
            task,
            stopped,
        })
    }

    /// The latest view; never waits and never touches Redis.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.load_full()
    }

    /// The fleet's peer token, once read from Redis: a random secret the
    /// first node sets, with which a node syncing from another proves it
    /// is one of the fleet (`Authorization: Bearer TOKEN`), so that the
    /// admission limits meant for clients do not hold it back. Only who
    /// can read the fleet's Redis knows it.
    pub fn peer_token(&self) -> Option<Arc<String>> {
        self.peer_token.load_full()
    }

    /// Whether `authorization` (a request's `Authorization` value) carries
    /// the fleet's peer token.
    pub fn is_peer(&self, authorization: &[u8]) -> bool {
        let Some(token) = self.peer_token.load_full() else {
            return false;
        };
        let Some(presented) = authorization.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Compared as digests: the time taken tells nothing of the token.
        use sha2::{Digest, Sha256};
        Sha256::digest(presented) == Sha256::digest(token.as_bytes())
    }

    /// Counters shared by every node, on this node's Redis connection.
    pub fn counters(&self) -> SharedCounters {
        SharedCounters::new(Arc::clone(&self.store))
    }

    /// Stops the heartbeat at once, without handing anything back: the
    /// report and any lease this node holds expire with their TTLs, as
    /// after a crash.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits until the heartbeat task has ended (after `shutdown`, or
    /// [`abort`](Self::abort)).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("view", &self.view.load())
            .finish_non_exhaustive()
    }
}
