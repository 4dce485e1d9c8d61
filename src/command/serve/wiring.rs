//! The parts `serve` runs and how they are wired together: traffic
//! control, observation, the sync engine with its self-healing hook, the
//! HTTP server, the admin API and the DNS beacon. The one copy of that
//! wiring: `serve` runs it until a signal, and the demo runs its mirror
//! through it too, with listeners it bound itself and a shutdown it
//! cancels from inside the process.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::admin::{Admin, SyncHandle};
use crate::config::Config;
use crate::control::Control;
use crate::dns::{Beacon, BeaconConfig, VersionRecord};
use crate::hooks::Hooks;
use crate::limits::Limits;
use crate::observe::{ObserveConfig, Observer};
use crate::server::{Server, listen};
use crate::shape::{LinkGuard, Shaper};
use crate::sync::schedule::{self, HealHook, Trigger};
use crate::sync::{Engine, SyncStatus, publish};
use cvdmirror_fleet::Fleet;

/// The sockets `serve` accepts on. Bound before anything starts, and
/// apart from it, so a caller (the demo) can bind them its own way.
pub struct Listeners {
    /// The public HTTP listeners.
    pub public: Vec<TcpListener>,
    /// The public HTTPS listeners.
    pub tls: Vec<TcpListener>,
    /// The admin API's; the API runs only with one.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        let public = listen::bind_all(&config.listen, config.listen_is_default)?;
        let tls = match &config.tls {
            Some(tls) => listen::bind_all(&tls.listen, false)?,
            None => Vec::new(),
        };
        let admin = match &config.admin {
            Some(settings) => Some(
                listen::bind(settings.listen)
                    .with_context(|| format!("cannot listen on {} (admin)", settings.listen))?,
            ),
            None => None,
        };
        Ok(Self { public, tls, admin })
    }
}

/// Everything `serve` runs, started; the public listeners accept once
/// [`Serving::run`] is awaited.
pub struct Serving {
    /// The HTTP server (reloadable).
    pub server: Arc<Server>,
    /// Traffic control: shaping and admission.
    pub control: Arc<Control>,
    /// Observation: status, metrics, alerts.
    pub observer: Arc<Observer>,
    /// The sync engine, when the config enables one.
    pub sync: Option<RunningSync>,
    /// The access log (reopened on `SIGHUP`).
    pub access_log: AccessLog,
    /// Where the admin API listens, if it runs.
    pub admin: Option<SocketAddr>,
    /// Where the DNS beacon answers, if it runs.
    pub beacon: Option<SocketAddr>,
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
}

impl Serving {
    /// The public listeners.
    pub fn listeners(&self) -> &[TcpListener] {
        &self.listeners
    }

    /// The public HTTPS listeners.
    pub fn tls_listeners(&self) -> &[TcpListener] {
        &self.tls_listeners
    }

    /// Serves until the shutdown given to [`start`] is cancelled and
    /// transfers drain, then stops every background task (also when the
    /// server fails) and flushes the access log.
    pub async fn run(self) -> std::io::Result<()> {
        let result = Arc::clone(&self.server)
            .run_with_tls(
                self.listeners,
                self.tls_listeners,
                self.shutdown.clone().cancelled_owned(),
            )
            .await;
        self.access_log.finish();
        self.shutdown.cancel();
        result
    }
}

/// Starts every part of `serve` the config enables: traffic control,
/// observation, the sync engine, the HTTP server, the admin API (on
/// `listeners.admin`, with `config.admin`'s token if any) and the DNS
/// beacon. Background tasks stop when `shutdown` is cancelled.
pub async fn start(
    config: &Config,
    listeners: Listeners,
    shutdown: &CancellationToken,
) -> anyhow::Result<Serving> {
    let access_log = AccessLog::start(&config.access_log)?;
    let control = start_control(config, shutdown)?;
    let observer = Observer::new(ObserveConfig {
        clients: config.admission.clients,
        ..config.observe.clone()
    });
    observer.set_link_capacity(config.shape.link_rate.map(|r| r.bytes_per_sec()));
    let mut hooks = Hooks::new();
    // A busy fleet node sends whole downloads elsewhere before admission
    // control would make them wait or refuse them.
    let redirect = config
        .fleet
        .as_ref()
        .map(|_| Arc::new(super::fleet::RedirectSlot::default()));
    if let Some(slot) = &redirect {
        hooks.push(Arc::clone(slot) as Arc<dyn crate::hooks::Hook>);
    }
    hooks.push(Arc::clone(&control) as Arc<dyn crate::hooks::Hook>);
    hooks.push(Arc::new(access_log.clone()));
    hooks.push(observer.hook());

    // A fleet node's first pass waits until it knows which node pulls
    // from upstream, so that a fleet starting together is one puller.
    let (first_pass, first_pass_gate) = match config.fleet {
        Some(_) => {
            let (send, receive) = tokio::sync::oneshot::channel();
            (Some(send), Some(receive))
        }
        None => (None, None),
    };
    let sync = start_sync(config, &mut hooks, first_pass_gate, shutdown)?;
    let fleet = match (&config.fleet, &redirect) {
        (Some(settings), Some(slot)) => {
            let (fleet, hook) = super::fleet::start(
                config,
                settings,
                &observer,
                &control,
                sync.as_ref().map(|s| s.status.clone()),
                shutdown,
            )?;
            slot.fill(hook);
            // Client quotas and request rates hold across the fleet; every
            // decision stays local (docs/fleet.md).
            let limits_of = Arc::clone(&control);
            let shared = cvdmirror_fleet::shared_limits::spawn(
                &settings.fleet,
                cvdmirror_fleet::SharedLimitsConfig::default(),
                move || limits_of.limits(),
                shutdown.clone(),
            )?;
            if let Some(sync) = &sync {
                super::fleet::spawn_puller(
                    fleet.clone(),
                    settings,
                    Arc::clone(&sync.engine),
                    Arc::clone(&sync.trigger),
                    config.sync.upstream.clone(),
                    first_pass,
                    shutdown,
                );
            }
            Some((fleet, shared))
        }
        _ => None,
    };
    let (fleet, shared_limits) = fleet.unzip();
    if let Some(fleet) = &fleet {
        observer.attach_fleet(fleet.clone());
    }
    if let Some(sync) = &sync {
        observer.attach_sync(sync.status.clone(), Arc::clone(&sync.trigger));
    }
    let server = Arc::new(Server::new(config.server(), hooks)?);
    let weak = Arc::downgrade(&server);
    observer.set_connections(move || weak.upgrade().map_or(0, |s| s.active_connections()));
    observer.add_source(Arc::clone(&control) as Arc<dyn crate::observe::StatusSource>);
    let alerts = Arc::clone(&observer);
    control.on_quota_exhausted(Box::new(move |subject| alerts.quota_exhausted(subject)));
    observer.start(shutdown);
    let admin = match listeners.admin {
        Some(listener) => Some(start_admin(
            config,
            listener,
            sync.as_ref(),
            &observer,
            fleet.clone().zip(shared_limits),
            shutdown,
        )?),
        None => None,
    };
    let beacon = start_beacon(config, sync.as_ref(), fleet.clone(), shutdown).await?;
    Ok(Serving {
        server,
        control,
        observer,
        sync,
        access_log,
        admin,
        beacon,
        listeners: listeners.public,
        tls_listeners: listeners.tls,
        shutdown: shutdown.clone(),
    })
}

/// Builds traffic control and starts its background tasks: the pacer, the
/// periodic save of quota usage, and the link guard.
fn start_control(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Arc<Control>> {
    let shaper =
        Shaper::new(config.shape.clone()).map_err(|e| anyhow::anyhow!("[shape]: {}", e.reason))?;
    shaper.spawn_pacer(shutdown.clone().cancelled_owned());
    let limits = Limits::new(config.admission.clone())?;
    if let Err(e) = limits.load() {
        tracing::warn!(error = %e, "quota usage could not be loaded; starting from zero");
    }
    let control = Arc::new(Control::new(
        shaper.clone(),
        Arc::new(limits),
        &config.shape,
    ));
    if let Some(link) = config.shape.link_rate {
        tracing::info!(%link, "link cap in force");
    }
    if let Some(guard) = &config.shape.link_guard {
        tracing::info!(interface = %guard.interface, capacity = %guard.capacity, reserve = %guard.reserve, "link guard watching the interface");
        let guard = LinkGuard::new(guard.clone());
        tokio::spawn(guard.run(
            shaper,
            config.shape.link_rate,
            shutdown.clone().cancelled_owned(),
        ));
    }
    let persist = Arc::clone(&control);
    let interval = config.admission.save_interval;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = ticker.tick() => false,
            };
            let limits = persist.limits();
            limits.maintain();
            // Only quota usage is persisted: nothing to write without quotas.
            let config = limits.config();
            if config.site_quota.is_none() && config.client_quota.is_none() {
                if stopping {
                    return;
                }
                continue;
            }
            let saved = tokio::task::spawn_blocking(move || limits.save()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "cannot save quota usage");
            }
            if stopping {
                return;
            }
        }
    });
    Ok(control)
}

/// The sync engine and how to reach it, when `serve` runs one.
pub struct RunningSync {
    /// Its status.
    pub status: watch::Receiver<SyncStatus>,
    /// Where to ask for a pass.
    pub trigger: Arc<Trigger>,
    /// The engine (a fleet node points it at the lease holder).
    pub engine: Arc<Engine>,
}

fn start_sync(
    config: &Config,
    hooks: &mut Hooks,
    first_pass_gate: Option<tokio::sync::oneshot::Receiver<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<RunningSync>> {
    let Some(interval) = config.sync.interval else {
        if config.beacon.is_some() {
            bail!(
                "the DNS beacon announces what the sync engine publishes: enable it with --sync-interval"
            );
        }
        return Ok(None);
    };
    let engine = Arc::new(Engine::new(
        config.sync.engine_config(config.default_site.root.clone()),
    )?);
    let trigger = Arc::new(Trigger::default());
    let status = engine.status();

    // Clients asking for cdiffs above what we publish trigger a pass.
    let published = Arc::new(ArcSwap::from_pointee(status.borrow().published.clone()));
    hooks.push(Arc::new(HealHook::new(
        Arc::clone(&published),
        Arc::clone(&trigger),
        engine.demand(),
    )));
    let mut follow = engine.status();
    tokio::spawn(async move {
        while follow.changed().await.is_ok() {
            let now: BTreeMap<String, u32> = follow.borrow_and_update().published.clone();
            published.store(Arc::new(now));
        }
    });

    tracing::info!(upstream = %config.sync.upstream, every = %humantime::format_duration(interval), databases = ?config.sync.databases, "background sync enabled");
    let run = schedule::run(
        Arc::clone(&engine),
        interval,
        Arc::clone(&trigger),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        if let Some(gate) = first_pass_gate {
            // Dropped unsent (the fleet did not start) also opens it.
            let _ = gate.await;
        }
        run.await;
    });
    Ok(Some(RunningSync {
        status,
        trigger,
        engine,
    }))
}

fn start_admin(
    config: &Config,
    listener: TcpListener,
    sync: Option<&RunningSync>,
    observer: &Arc<Observer>,
    fleet: Option<(Fleet, cvdmirror_fleet::SharedLimits)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let token = config
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_deref())
        .map(Admin::read_token)
        .transpose()?;
    let root = config.default_site.root.clone();
    let databases = config.sync.databases.clone();
    let complete = {
        let databases = databases.clone();
        Box::new(move || {
            databases
                .iter()
                .all(|db| publish::scan(&root, db).is_ok_and(|p| p.cvd_version.is_some()))
        })
    };
    let handle = sync.map(|s| SyncHandle {
        status: s.status.clone(),
        trigger: Arc::clone(&s.trigger),
    });
    let mut admin =
        Admin::new(token, databases, handle, complete).with_observer(Arc::clone(observer));
    if let Some((fleet, shared)) = fleet {
        admin = admin.with_fleet(fleet).with_shared_limits(shared);
    }
    let admin = Arc::new(admin);
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = admin.run(listener, shutdown).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(addr)
}

async fn start_beacon(
    config: &Config,
    sync: Option<&RunningSync>,
    fleet: Option<Fleet>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let (Some(settings), Some(sync)) = (&config.beacon, sync) else {
        return Ok(None);
    };
    let announce = move |status: &SyncStatus| {
        let record = beacon_record(status)?;
        Some(match &fleet {
            Some(fleet) => super::fleet::consistent_record(fleet, record),
            None => record,
        })
    };
    let (records, versions) = watch::channel(announce(&sync.status.borrow()));
    let beacon = Beacon::bind(
        BeaconConfig::new(settings.listen, settings.name.clone()).with_ttl(settings.ttl),
        versions,
    )
    .await
    .with_context(|| format!("cannot start the DNS beacon on {}", settings.listen))?;
    let addr = beacon.udp_addr();
    let mut status = sync.status.clone();
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        // The fleet's versions move without a local change: look again
        // every few seconds as well.
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {}
            }
            let record = announce(&status.borrow_and_update());
            records.send_if_modified(|current| {
                let changed = *current != record;
                *current = record;
                changed
            });
        }
    });
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = beacon.run(shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "DNS beacon stopped");
        }
    });
    Ok(Some(addr))
}

/// What the beacon announces: upstream's record with the versions we
/// actually publish, so no client learns of a version we cannot serve.
/// Nothing until a complete set is published.
fn beacon_record(status: &SyncStatus) -> Option<VersionRecord> {
    let mut record = match &status.advertised_record {
        Some(record) => record.clone(),
        None => VersionRecord::parse("0.0.0:0:0:0:0:0:0:0").ok()?,
    };
    if status.published.is_empty() {
        return None;
    }
    for (db, &version) in &status.published {
        record.set_version(db, version);
    }
    Some(record)
}
