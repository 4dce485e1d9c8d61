//! `cvdmirror serve`: resolve the config, bind, announce, serve; optionally
//! run the sync engine, the admin API and the DNS beacon beside it. Reload
//! on `SIGHUP`, drain on `SIGTERM`/`SIGINT` (a second one stops at once).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::admin::{Admin, SyncHandle};
use crate::cli::ServeArgs;
use crate::config::{Config, DEFAULT_ROOT};
use crate::control::Control;
use crate::dns::{Beacon, BeaconConfig, VersionRecord};
use crate::hooks::Hooks;
use crate::limits::Limits;
use crate::observe::{ObserveConfig, Observer};
use crate::server::{Server, listen};
use crate::shape::{LinkGuard, Shaper};
use crate::sync::schedule::{self, HealHook, Trigger};
use crate::sync::{Engine, SyncStatus, publish};

/// Runs the server until a shutdown signal; errors are for a person to read.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    prepare_default_root(&config)?;
    let shutdown = CancellationToken::new();
    let access_log = AccessLog::start(&config.access_log)?;
    let control = start_control(&config, &shutdown)?;
    let mut hooks = Hooks::new();
    hooks.push(Arc::clone(&control) as Arc<dyn crate::hooks::Hook>);
    hooks.push(Arc::new(access_log.clone()));
    let observer = Observer::new(ObserveConfig {
        clients: config.admission.clients,
        ..config.observe.clone()
    });
    observer.set_link_capacity(config.shape.link_rate.map(|r| r.bytes_per_sec()));
    hooks.push(observer.hook());

    let sync = start_sync(&config, &mut hooks, &shutdown)?;
    if let Some(sync) = &sync {
        observer.attach_sync(sync.status.clone(), Arc::clone(&sync.trigger));
    }
    let server = Arc::new(Server::new(&config, hooks)?);
    let weak = Arc::downgrade(&server);
    observer.set_connections(move || weak.upgrade().map_or(0, |s| s.active_connections()));
    observer.add_source(Arc::clone(&control) as Arc<dyn crate::observe::StatusSource>);
    let alerts = Arc::clone(&observer);
    control.on_quota_exhausted(Box::new(move |subject| alerts.quota_exhausted(subject)));
    observer.start(&shutdown);
    let listeners = listen::bind_all(&config.listen, config.listen_is_default)?;
    let admin = start_admin(&config, sync.as_ref(), &observer, &shutdown)?;
    let beacon = start_beacon(&config, sync.as_ref(), &shutdown).await?;

    announce(&config, &listeners, admin, beacon)?;
    let reloader = tokio::spawn(reload_on_hangup(
        args,
        Arc::clone(&server),
        access_log.clone(),
        Arc::clone(&control),
    ));
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
    };
    let result = Arc::clone(&server)
        .run(listeners, shutdown.clone().cancelled_owned())
        .await;
    access_log.finish();
    shutdown.cancel();
    reloader.abort();
    signals.abort();
    result.context("server failed")
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
struct RunningSync {
    status: watch::Receiver<SyncStatus>,
    trigger: Arc<Trigger>,
}

fn start_sync(
    config: &Config,
    hooks: &mut Hooks,
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
    )));
    let mut follow = engine.status();
    tokio::spawn(async move {
        while follow.changed().await.is_ok() {
            let now: BTreeMap<String, u32> = follow.borrow_and_update().published.clone();
            published.store(Arc::new(now));
        }
    });

    tracing::info!(upstream = %config.sync.upstream, every = %humantime::format_duration(interval), databases = ?config.sync.databases, "background sync enabled");
    tokio::spawn(schedule::run(
        engine,
        interval,
        Arc::clone(&trigger),
        shutdown.clone(),
    ));
    Ok(Some(RunningSync { status, trigger }))
}

fn start_admin(
    config: &Config,
    sync: Option<&RunningSync>,
    observer: &Arc<Observer>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(settings) = &config.admin else {
        return Ok(None);
    };
    let token = settings
        .token_file
        .as_deref()
        .map(Admin::read_token)
        .transpose()?;
    if token.is_none() {
        tracing::warn!("no admin token file: admin actions (POST) are disabled");
    }
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
    let admin = Arc::new(
        Admin::new(token, databases, handle, complete).with_observer(Arc::clone(observer)),
    );
    let listener = listen::bind(settings.listen)
        .with_context(|| format!("cannot listen on {} (admin)", settings.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = admin.run(listener, shutdown).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(Some(addr))
}

async fn start_beacon(
    config: &Config,
    sync: Option<&RunningSync>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let (Some(settings), Some(sync)) = (&config.beacon, sync) else {
        return Ok(None);
    };
    let (records, versions) = watch::channel(beacon_record(&sync.status.borrow()));
    let beacon = Beacon::bind(
        BeaconConfig::new(settings.listen, settings.name.clone()).with_ttl(settings.ttl),
        versions,
    )
    .await
    .with_context(|| format!("cannot start the DNS beacon on {}", settings.listen))?;
    let addr = beacon.udp_addr();
    let mut status = sync.status.clone();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let record = beacon_record(&status.borrow_and_update());
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

/// `./mirror` is created when it is the built-in default; a root the
/// operator named must exist (a typo must not serve an empty mirror).
fn prepare_default_root(config: &Config) -> anyhow::Result<()> {
    let root = &config.default_site.root;
    if root == Path::new(DEFAULT_ROOT) && !root.exists() {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        tracing::info!(root = %root.display(), "created the mirror directory");
    }
    Ok(())
}

/// Tells the operator (and test harnesses) where it listens, on stdout.
fn announce(
    config: &Config,
    listeners: &[std::net::TcpListener],
    admin: Option<std::net::SocketAddr>,
    beacon: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let root = config
        .default_site
        .root
        .canonicalize()
        .unwrap_or_else(|_| config.default_site.root.clone());
    let mut out = std::io::stdout().lock();
    for listener in listeners {
        let addr = listener.local_addr()?;
        writeln!(out, "listening on http://{addr}/")?;
        tracing::info!(%addr, root = %root.display(), "serving");
    }
    if let Some(addr) = admin {
        writeln!(out, "admin on http://{addr}/")?;
    }
    if let Some(addr) = beacon {
        writeln!(out, "beacon on {addr}")?;
    }
    for site in &config.sites {
        tracing::info!(site = %site.name, hosts = ?site.hosts, root = %site.root.display(), "virtual host");
    }
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

async fn reload_on_hangup(
    args: ServeArgs,
    server: Arc<Server>,
    access_log: AccessLog,
    control: Arc<Control>,
) {
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; reload is unavailable");
        return;
    };
    let listen = Config::resolve(&args).map(|c| c.listen).ok();
    while hangups.recv().await.is_some() {
        access_log.reopen();
        match Config::resolve(&args) {
            Ok(config) => {
                if Some(&config.listen) != listen.as_ref() {
                    tracing::warn!("listen addresses changed; they take effect after a restart");
                }
                // Everything that can still fail first, so a rejected reload changes nothing.
                if let Err(e) = server.reload(&config) {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration");
                    continue;
                }
                if let Err(e) = control.shaper().reconfigure(config.shape.clone()) {
                    tracing::error!(error = %e.reason, "new shaping rejected; keeping the previous shaping");
                }
                if let Err(e) = control.reconfigure(config.admission.clone(), &config.shape) {
                    tracing::error!(error = %e, "new limits rejected; keeping the running ones");
                }
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "new configuration rejected; keeping the running one")
            }
        }
    }
}

/// Completes on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
}
