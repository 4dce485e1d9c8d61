//! The demo's mirror: the same parts `serve` wires (traffic control with a
//! link cap and the herd gate, observation, the sync engine with its
//! self-healing hook, the admin API with the status page), assembled here so
//! the demo can stop it from inside the process and reach its sync trigger.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, SyncHandle};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::control::Control;
use crate::cvd::TrustedKeys;
use crate::cvd::testkeys::signing_keys;
use crate::hooks::Hooks;
use crate::limits::Limits;
use crate::observe::{ObserveConfig, Observer};
use crate::server::{Server, listen};
use crate::shape::{Rate, Shaper};
use crate::sync::schedule::{self, HealHook, Trigger};
use crate::sync::{Engine, SyncConfig, SyncStatus, VersionSource};

/// What the mirror needs to know.
pub struct MirrorSettings {
    /// Served root (created empty by the caller).
    pub root: PathBuf,
    /// Where the TOML for traffic control is written.
    pub config_file: PathBuf,
    /// Upstream base URL.
    pub upstream: String,
    /// Upstream's TXT record and nameserver.
    pub dns: (String, SocketAddr),
    /// Total send cap.
    pub link_rate: Rate,
    /// Herd gate's per-transfer minimum.
    pub bulk_min_rate: Rate,
    /// Herd gate's `Retry-After` window.
    pub retry_after: (Duration, Duration),
    /// Responses at least this large are whole-CVD downloads to the gate.
    pub bulk_threshold: u64,
    /// Admin API address; the first one that binds is used.
    pub admin: Vec<SocketAddr>,
}

/// The running mirror.
pub struct Mirror {
    /// Its public URL.
    pub url: String,
    /// The admin API (status page at `/`).
    pub admin: SocketAddr,
    /// The engine's status.
    pub status: watch::Receiver<SyncStatus>,
    /// Where to ask for a pass.
    pub trigger: Arc<Trigger>,
    /// Traffic control (herd gate statistics).
    pub control: Arc<Control>,
    /// Observation (status JSON for the summary).
    pub observer: Arc<Observer>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl Mirror {
    /// Starts everything; the first sync pass begins at once.
    pub async fn start(settings: MirrorSettings) -> anyhow::Result<Self> {
        write_config(&settings.config_file, &settings)?;
        let args = ServeArgs {
            config: Some(settings.config_file.clone()),
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            root: Some(settings.root.clone()),
            access_log: Some("off".into()),
            link_rate: Some(settings.link_rate),
            bulk_min_rate: Some(settings.bulk_min_rate),
            ..ServeArgs::default()
        };
        let mut config = Config::resolve(&args).context("mirror configuration")?;
        config.shutdown_grace = Duration::from_secs(2);
        let shutdown = CancellationToken::new();

        let shaper = Shaper::new(config.shape.clone())
            .map_err(|e| anyhow::anyhow!("[shape]: {}", e.reason))?;
        shaper.spawn_pacer(shutdown.clone().cancelled_owned());
        let limits = Arc::new(Limits::new(config.admission.clone())?);
        let control = Arc::new(Control::new(shaper, limits, &config.shape));

        let observer = Observer::new(ObserveConfig {
            clients: config.admission.clients,
            ..config.observe.clone()
        });
        observer.set_link_capacity(config.shape.link_rate.map(|r| r.bytes_per_sec()));

        let engine = Arc::new(Engine::new(sync_config(&settings))?);
        let status = engine.status();
        let trigger = Arc::new(Trigger::default());
        let published = Arc::new(ArcSwap::from_pointee(status.borrow().published.clone()));
        let mut follow = engine.status();
        {
            let published = Arc::clone(&published);
            tokio::spawn(async move {
                while follow.changed().await.is_ok() {
                    let now: BTreeMap<String, u32> = follow.borrow_and_update().published.clone();
                    published.store(Arc::new(now));
                }
            });
        }

        let mut hooks = Hooks::new();
        hooks.push(Arc::clone(&control) as Arc<dyn crate::hooks::Hook>);
        hooks.push(observer.hook());
        hooks.push(Arc::new(HealHook::new(published, Arc::clone(&trigger))));
        observer.attach_sync(status.clone(), Arc::clone(&trigger));
        let server = Arc::new(Server::new(&config, hooks)?);
        let weak = Arc::downgrade(&server);
        observer.set_connections(move || weak.upgrade().map_or(0, |s| s.active_connections()));
        observer.add_source(Arc::clone(&control) as Arc<dyn crate::observe::StatusSource>);
        observer.start(&shutdown);

        let listeners = listen::bind_all(&config.listen, false)?;
        let addr = listeners
            .first()
            .context("mirror has no listener")?
            .local_addr()?;
        let admin_listener = bind_first(&settings.admin)?;
        let admin = admin_listener.local_addr()?;
        let databases = vec!["daily".to_string()];
        let handle = SyncHandle {
            status: status.clone(),
            trigger: Arc::clone(&trigger),
        };
        let api = Arc::new(
            Admin::new(None, databases, Some(handle), Box::new(|| false))
                .with_observer(Arc::clone(&observer)),
        );
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = api.run(admin_listener, shutdown).await {
                    tracing::error!(error = %e, "demo admin API stopped");
                }
            });
        }
        tokio::spawn(schedule::run(
            engine,
            Duration::from_secs(3_600),
            Arc::clone(&trigger),
            shutdown.clone(),
        ));
        let server = tokio::spawn(server.run(listeners, shutdown.clone().cancelled_owned()));
        Ok(Self {
            url: format!("http://{addr}"),
            admin,
            status,
            trigger,
            control,
            observer,
            shutdown,
            server,
        })
    }

    /// Stops serving (draining briefly) and every background task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "demo mirror server failed");
        }
    }
}

fn bind_first(addrs: &[SocketAddr]) -> anyhow::Result<std::net::TcpListener> {
    let mut last = None;
    for &addr in addrs {
        match listen::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) => Err(e).with_context(|| format!("cannot listen on {addr} (admin)")),
        None => anyhow::bail!("no admin address to listen on"),
    }
}

fn sync_config(settings: &MirrorSettings) -> SyncConfig {
    let mut config = SyncConfig::new(settings.root.clone(), &settings.upstream);
    config.versions = VersionSource::Dns {
        name: settings.dns.0.clone(),
        nameserver: Some(settings.dns.1),
    };
    config.databases = vec!["daily".into()];
    config.backfill = 5;
    config.keys = TrustedKeys::official().merged(&signing_keys().trusted());
    config.connect_timeout = Duration::from_secs(5);
    config.stall_timeout = Duration::from_secs(10);
    config.attempts = 1;
    config.retry_base = Duration::from_millis(200);
    config.max_requests_per_file_per_hour = 100;
    // Longer than the demo: the mirror waits for the missing cdiff rather
    // than publish without it.
    config.missing_cdiff_grace = Duration::from_secs(3_600);
    config
}

/// Traffic control settings the flags do not cover.
fn write_config(path: &Path, settings: &MirrorSettings) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `cvdmirror demo`.\n\
         [limits]\n\
         bulk_threshold = {}\n\
         [limits.herd]\n\
         bulk_min_rate = \"{}\"\n\
         retry_after_min = \"{}s\"\n\
         retry_after_max = \"{}s\"\n",
        settings.bulk_threshold,
        settings.bulk_min_rate,
        settings.retry_after.0.as_secs().max(1),
        settings.retry_after.1.as_secs().max(1),
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
