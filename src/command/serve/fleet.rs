//! `serve` as a fleet node: what it reports to the fleet each heartbeat
//! (the files it publishes with their digests, its CVD versions, its link's
//! capacity and load, its sync health), the hook that sends whole-CVD
//! downloads to a node with headroom when this one is busy (or its herd
//! gate full) and files this node lacks to a node that has them, and the versions the beacon may
//! announce (none that another healthy node lacks).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FleetSettings};
use crate::control::Control;
use crate::dns::VersionRecord;
use crate::observe::Observer;
use crate::sync::SyncStatus;
use cvdmirror_fleet::redirect::LocalGate;
use cvdmirror_fleet::{
    Fleet, LinkLoad, NodeReport, PublishedFile, PublishedFiles, RedirectHook, SyncHealth, SyncState,
};

/// The published files and CVD versions, refreshed every heartbeat.
type Published = (BTreeMap<String, PublishedFile>, BTreeMap<String, u32>);

/// Joins the fleet: starts the heartbeat and the scan of the root it
/// reports, and returns the node's handle and its redirect hook.
pub fn start(
    config: &Config,
    settings: &FleetSettings,
    observer: &Arc<Observer>,
    control: &Arc<Control>,
    sync: Option<watch::Receiver<SyncStatus>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Fleet, Arc<RedirectHook>)> {
    // Only a node that syncs may pull from upstream for the fleet.
    let mut fleet_config = settings.fleet.clone();
    fleet_config.pulls = sync.is_some();
    // The first report already carries the versions: a listing reads only
    // the CVD headers; the digests follow from the first full scan.
    let root = config.default_site.root.clone();
    let mut files = PublishedFiles::new();
    let listed = files.list(&root).unwrap_or_else(|e| {
        tracing::warn!(error = %e, root = %root.display(), "cannot list the root for the fleet");
        BTreeMap::new()
    });
    let versions = cvd_versions(&listed);
    let published: Arc<ArcSwap<Published>> = Arc::new(ArcSwap::from_pointee((listed, versions)));
    spawn_scan(
        root,
        files,
        Arc::clone(&published),
        settings.fleet.heartbeat,
        shutdown,
    );
    let link = {
        let observer = Arc::clone(observer);
        Arc::new(move || LinkLoad {
            capacity: observer.link_capacity(),
            load: observer.rates().total.max(0.0) as u64,
        })
    };
    let gate: LocalGate = {
        let control = Arc::clone(control);
        Arc::new(move || gate_closed(&control))
    };
    let report = {
        let link = Arc::clone(&link);
        let published = Arc::clone(&published);
        Arc::new(move || {
            let current = published.load();
            NodeReport {
                files: current.0.clone(),
                versions: current.1.clone(),
                link: link(),
                sync: sync
                    .as_ref()
                    .map_or_else(SyncState::default, |s| sync_state(&s.borrow())),
                ..NodeReport::default()
            }
        })
    };
    let fleet = Fleet::start(fleet_config, report, shutdown.clone())?;
    tracing::info!(
        node = %settings.fleet.node,
        public_url = %settings.fleet.public_url,
        redis = %cvdmirror_fleet::redacted_url(&settings.fleet.redis_url),
        "joined the fleet"
    );
    let hook = Arc::new(
        RedirectHook::new(
            fleet.clone(),
            settings.fleet.node.clone(),
            link,
            settings.redirect_above,
        )
        .with_affinity(settings.affinity.clone())
        .for_site(config.default_site.name.clone())
        .with_gate(gate),
    );
    Ok((fleet, hook))
}

/// Rescans the root every `every`, hashing only what changed.
fn spawn_scan(
    root: std::path::PathBuf,
    files: PublishedFiles,
    published: Arc<ArcSwap<Published>>,
    every: std::time::Duration,
    shutdown: &CancellationToken,
) {
    let files = Arc::new(Mutex::new(files));
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (root, files) = (root.clone(), Arc::clone(&files));
            let scanned = tokio::task::spawn_blocking(move || {
                cvdmirror_formats::mutex::lock(&files).scan(&root)
            })
            .await;
            match scanned {
                Ok(Ok(files)) => {
                    let versions = cvd_versions(&files);
                    published.store(Arc::new((files, versions)));
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list the root for the fleet"),
                Err(e) => tracing::warn!(error = %e, "fleet scan task failed"),
            }
        }
    });
}

/// Keeps one node of the fleet pulling from upstream: the holder of the
/// upstream lease syncs from the configured upstream, every other node
/// from the holder (mirror chaining), and a node starts a pass as soon as
/// the holder publishes a version it lacks. Without a trustworthy view of
/// the fleet (Redis lost, no holder) a node falls back to its own upstream:
/// a mirror must keep updating even when it cannot coordinate.
pub fn spawn_puller(
    fleet: Fleet,
    settings: &FleetSettings,
    engine: Arc<crate::sync::Engine>,
    trigger: Arc<crate::sync::schedule::Trigger>,
    upstream: String,
    mut first_pass: Option<tokio::sync::oneshot::Sender<()>>,
    shutdown: &CancellationToken,
) {
    let me = settings.fleet.node.clone();
    let every = settings.fleet.heartbeat;
    // How long the first pass waits for a lease holder to be known: long
    // enough for a fleet starting together to agree, short enough that an
    // unreachable Redis does not hold up the first sync.
    let agree_within = settings.fleet.lease_ttl.max(every * 5);
    let started = tokio::time::Instant::now();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        let mut seen_from_holder = BTreeMap::new();
        let mut pushes = Pushes::default();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let view = fleet.view();
            if first_pass.is_some()
                && view.lease.holder.is_none()
                && started.elapsed() < agree_within
            {
                continue;
            }
            let holder = if view.stale() {
                None
            } else {
                view.lease
                    .holder
                    .as_ref()
                    .filter(|holder| holder.node != me)
                    .and_then(|holder| Some((holder, view.node(&holder.node)?)))
                    .filter(|(_, node)| node.fresh)
            };
            let source = holder.map_or(upstream.as_str(), |(_, node)| {
                node.report.public_url.as_str()
            });
            // From another node, with the fleet's peer token: its limits
            // are for clients.
            let bearer = holder.and_then(|_| fleet.peer_token());
            let moved = engine.upstream_url() != source;
            match engine.set_upstream_with(source, bearer.as_deref().map(String::as_str)) {
                Ok(()) if moved => {
                    {
                        match holder {
                            Some((lease, _)) => {
                                tracing::info!(from = %source, holder = %lease.node, token = lease.token, "syncing from the fleet's upstream puller")
                            }
                            None => {
                                tracing::info!(from = %source, lease_mine = view.is_lease_holder(), "syncing from upstream")
                            }
                        }
                        // Before the first pass, the pass itself is next.
                        if first_pass.is_none() {
                            trigger.wake();
                        }
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(from = %source, error = %e, "cannot sync from this source")
                }
            }
            if let Some(open) = first_pass.take() {
                let _ = open.send(());
            }
            // The holder published something new: fetch it now, not at
            // the next scheduled pass.
            if let Some((_, node)) = holder
                && node.report.versions != seen_from_holder
            {
                seen_from_holder = node.report.versions.clone();
                let mine = view
                    .node(&me)
                    .map(|n| n.report.versions.clone())
                    .unwrap_or_default();
                if seen_from_holder
                    .iter()
                    .any(|(db, v)| mine.get(db).is_none_or(|m| m < v))
                {
                    trigger.wake();
                }
            }
            relay_pushes(&fleet, &view, &trigger, &mut pushes).await;
        }
    });
}

/// Pushes seen and relayed: the operators' pushes on this node, and the
/// fleet-wide push count in Redis.
#[derive(Default)]
struct Pushes {
    local: u64,
    fleet: Option<u64>,
}

/// An operator's push (`POST /sync`) on any node reaches the puller: a
/// node that does not hold the lease adds it to a counter in Redis, and the
/// holder starts a pass when the counter moves.
async fn relay_pushes(
    fleet: &Fleet,
    view: &cvdmirror_fleet::FleetView,
    trigger: &crate::sync::schedule::Trigger,
    pushes: &mut Pushes,
) {
    let counters = fleet.counters();
    let local = trigger.pushes();
    let new_local = local.saturating_sub(pushes.local);
    let (add, holder) = if view.is_lease_holder() {
        (0, true)
    } else {
        (new_local, false)
    };
    match counters
        .charge(PUSH_COUNTER, add, PUSH_COUNTER_LIFETIME)
        .await
    {
        Ok(count) => {
            pushes.local = local;
            // Any change but a lapse to zero is a push (the counter starts
            // over after its lifetime).
            if holder && count > 0 && pushes.fleet.is_some_and(|seen| count != seen) {
                tracing::info!("a push on another node of the fleet; syncing from upstream now");
                trigger.wake();
            }
            pushes.fleet = Some(count);
        }
        // Redis is out of reach: the push stays local (this node syncs
        // now anyway), and is relayed with the next success.
        Err(e) => tracing::debug!(error = %e, "cannot relay pushes to the fleet"),
    }
}

/// The fleet-wide counter of operators' pushes.
const PUSH_COUNTER: &str = "sync-push";

/// How long the push counter lives without a push (the holder compares
/// successive values, never the value itself).
const PUSH_COUNTER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(86_400);

/// `daily` → 27480 for every `daily.cvd` with a readable header.
fn cvd_versions(files: &BTreeMap<String, PublishedFile>) -> BTreeMap<String, u32> {
    files
        .iter()
        .filter_map(|(name, file)| Some((name.strip_suffix(".cvd")?.to_owned(), file.version?)))
        .collect()
}

/// Whether the herd gate would refuse the next whole download. A gate
/// that runs nothing admits the next one, whatever rate it last saw (it
/// sees one only when asked).
fn gate_closed(control: &Control) -> bool {
    control
        .limits()
        .herd_stats()
        .is_some_and(|stats| !stats.open && stats.active > 0)
}

fn sync_state(status: &SyncStatus) -> SyncState {
    let Some(pass) = &status.last_pass else {
        return SyncState::default();
    };
    SyncState {
        health: match (&pass.error, pass.ok) {
            (_, true) => SyncHealth::Ok,
            (Some(reason), false) => SyncHealth::Failing {
                reason: reason.clone(),
            },
            (None, false) => SyncHealth::Failing {
                reason: "incomplete".to_owned(),
            },
        },
        last_success: pass.ok.then_some(pass.finished),
    }
}

/// The redirect hook's place in the hook list: the list is fixed before
/// the fleet starts (the fleet needs the sync engine, which needs its own
/// hook), so the hook is filled in afterwards; empty, it passes everything.
#[derive(Default)]
pub struct RedirectSlot(arc_swap::ArcSwapOption<RedirectHook>);

impl RedirectSlot {
    /// Puts the hook in place.
    pub fn fill(&self, hook: Arc<RedirectHook>) {
        self.0.store(Some(hook));
    }
}

impl crate::hooks::Hook for RedirectSlot {
    fn admit(
        &self,
        exchange: &mut crate::exchange::Exchange,
        planned: &mut http::Response<crate::body::ResponseBody>,
    ) -> Option<http::Response<crate::body::ResponseBody>> {
        self.0.load().as_ref()?.admit(exchange, planned)
    }
}

/// `record` with no version above what every healthy node of the fleet
/// publishes (while the fleet's view can be trusted).
pub fn consistent_record(fleet: &Fleet, mut record: VersionRecord) -> VersionRecord {
    let view = fleet.view();
    if view.stale() {
        return record;
    }
    for (db, version) in view.consistent_versions() {
        if let Some(local) = record.version_of(&db)
            && version < local
        {
            record.set_version(&db, version);
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_cvd_headers() {
        let file = |version| PublishedFile {
            size: 1,
            sha256: String::new(),
            version,
        };
        let files = BTreeMap::from([
            ("daily.cvd".to_owned(), file(Some(27480))),
            ("daily-27480.cdiff".to_owned(), file(None)),
            ("main.cvd".to_owned(), file(None)),
        ]);
        assert_eq!(
            cvd_versions(&files),
            BTreeMap::from([("daily".to_owned(), 27480)])
        );
    }
}
