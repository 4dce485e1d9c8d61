//! Bandwidth shaping: every response body paced smoothly under a total cap,
//! shared fairly and work-conservingly along link → site → class → client →
//! flow.
//!
//! This exists because a herd of `freshclam` clients fetching a 60 MB
//! `daily.cvd` once filled a shared 100 Mbit/s link for 96 minutes and took
//! the web sites, SSH and a voice server down with it, while mod_cband,
//! which splits a vhost's speed equally among connections once a second and
//! sends in line-rate pulses, looked on. Here instead:
//!
//! - one pacer task ([`Shaper::run_pacer`]) grants byte budgets every few
//!   milliseconds to the flows that wait, so traffic leaves in small steady
//!   steps;
//! - budgets are shared by deficit round robin among *active* children at
//!   every level (unused share moves to the others at once), by weight, and
//!   per client rather than per connection;
//! - classes have strict priorities, so header checks, 304s and cdiffs never
//!   queue behind bulk CVD transfers;
//! - every node may have a cap (a token bucket with a burst of a few
//!   milliseconds), and the link cap can be lowered live by a link guard
//!   ([`Shaper::set_link_rate`]);
//! - where no cap applies, bodies pass through and are only counted.
//!
//! Admission (whether a transfer may start at all) lives elsewhere; it reads
//! [`Shaper::class_load`] to know how busy a class is.
//!
//! Kernel pacing (`[shape] kernel_pacing`, `SO_MAX_PACING_RATE`) is set per
//! socket by the server (`server::pacing`); it smooths each connection
//! further and leaves fairness and totals to this module.

use cvdmirror_formats::rate;

mod body;
mod bucket;
mod class;
mod config;
mod drr;
mod guard;
mod pacer;
mod spec;
mod stats;
mod tree;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use body::{Flow, FlowRate, ShapedBody};
pub use class::{
    ClassConfig, Classifier, KindName, MatchRule, SMALL_RESPONSE, default_classes, glob_match,
};
pub use config::{
    ConfigError, DEFAULT_BURST, DEFAULT_QUANTUM, DEFAULT_TICK, ShapeConfig, SiteConfig,
    TICK_LATENESS,
};
pub use cvdmirror_formats::rate::{Rate, RateError};
pub use guard::{LinkGuard, LinkGuardConfig};
pub use spec::{ClientKey, FlowSpec};
pub use stats::{ClassLoad, ClassStats, NodeStats, SiteStats, Snapshot};

use cvdmirror_formats::FileKind;
use tree::Tree;

/// State shared by the handle, the flows and the pacer.
pub(crate) struct Shared {
    tree: Mutex<Tree>,
    classifier: ArcSwap<Classifier>,
    wake_pacer: Arc<Notify>,
}

impl Shared {
    /// The tree; a panic elsewhere while holding it leaves it consistent
    /// enough to keep serving, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the shaper; cheap to clone.
#[derive(Clone)]
pub struct Shaper {
    shared: Arc<Shared>,
}

impl Shaper {
    /// A shaper with no flows. Spawn [`run_pacer`](Self::run_pacer) too:
    /// without it, capped bodies wait for grants that never come.
    pub fn new(config: ShapeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let classifier = Classifier::new(&config.classes, &config.default_class);
        Ok(Self {
            shared: Arc::new(Shared {
                tree: Mutex::new(Tree::new(config, Instant::now())),
                classifier: ArcSwap::from_pointee(classifier),
                wake_pacer: Arc::new(Notify::new()),
            }),
        })
    }

    /// The pacer: spawn it once. It ends when `shutdown` completes or every
    /// handle and flow is gone.
    pub fn run_pacer(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        pacer::run(
            Arc::downgrade(&self.shared),
            self.shared.wake_pacer.clone(),
            shutdown,
        )
    }

    /// Spawns [`run_pacer`](Self::run_pacer) on the current runtime.
    pub fn spawn_pacer(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(self.run_pacer(shutdown))
    }

    /// The class of a response (see [`Classifier::classify`]).
    pub fn classify(&self, path: &str, kind: FileKind, size: u64) -> Arc<str> {
        self.shared.classifier.load().classify(path, kind, size)
    }

    /// Registers a response; it is deregistered when the [`Flow`] drops.
    pub fn register(&self, spec: &FlowSpec) -> Flow {
        let (id, cell) = self.shared.lock().register(spec, Instant::now());
        Flow::new(self.shared.clone(), id, cell)
    }

    /// Registers a response and paces `body` through it.
    pub fn wrap<B>(&self, body: B, spec: &FlowSpec) -> ShapedBody<B> {
        ShapedBody::new(body, self.register(spec))
    }

    /// Sets the link guard's cap (`None`: no guard limit). The cap in force
    /// is the lower of this and the configured `link_rate`; it applies from
    /// the next tick, and flows keep their places.
    pub fn set_link_rate(&self, rate: Option<Rate>) {
        let wakers = {
            let mut tree = self.shared.lock();
            tree.guard_rate = rate;
            tree.apply_link_rate(Instant::now());
            tree.refresh_bypass()
        };
        wakers.into_iter().for_each(|w| w.wake());
        self.shared.wake_pacer.notify_one();
    }

    /// The link cap in force.
    pub fn link_rate(&self) -> Option<Rate> {
        self.shared.lock().link_rate()
    }

    /// Applies new caps, weights, priorities and classes live; flows in
    /// progress keep their class and client.
    pub fn reconfigure(&self, config: ShapeConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let classifier = Classifier::new(&config.classes, &config.default_class);
        let wakers = self.shared.lock().reconfigure(config, Instant::now());
        self.shared.classifier.store(Arc::new(classifier));
        wakers.into_iter().for_each(|w| w.wake());
        self.shared.wake_pacer.notify_one();
        Ok(())
    }

    /// Every site, class and client with rates, totals and flow counts.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot()
    }

    /// Load of a class within a site, for admission decisions.
    pub fn class_load(&self, site: &str, class: &str) -> ClassLoad {
        self.shared.lock().class_load(site, class)
    }

    /// Flows of a class across all sites (e.g. bulk transfers in progress).
    pub fn class_flows(&self, class: &str) -> u32 {
        self.shared.lock().class_flows(class)
    }

    /// Flows waiting for a grant now.
    pub fn waiting_flows(&self) -> usize {
        self.shared.lock().waiting
    }
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("link_rate", &self.link_rate())
            .finish()
    }
}
