//! The demo's mirror: `serve` itself (traffic control with a link cap and
//! the herd gate, observation, the sync engine with its self-healing hook,
//! the admin API with the status page), started through
//! [`crate::command::serve::start`] with the demo's settings, so the demo
//! can stop it from inside the process and reach its sync trigger.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::serve::{self, Listeners};
use crate::config::flags::ServeArgs;
use crate::config::{Config, SyncSettings};
use crate::control::Control;
use crate::cvd::TrustedKeys;
use crate::cvd::testkeys::signing_keys;
use crate::observe::Observer;
use crate::server::listen;
use crate::shape::Rate;
use crate::sync::schedule::Trigger;
use crate::sync::{self, SyncStatus, VersionSource};

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
        config.sync = sync_settings(&settings);
        let mut listeners = Listeners::bind(&config)?;
        listeners.admin = Some(bind_first(&settings.admin)?);
        let shutdown = CancellationToken::new();
        let serving = serve::start(&config, listeners, &shutdown).await?;

        let addr = serving
            .listeners()
            .first()
            .context("mirror has no listener")?
            .local_addr()?;
        let admin = serving.admin.context("mirror has no admin API")?;
        let sync = serving.sync.as_ref().context("mirror has no sync engine")?;
        let (status, trigger) = (sync.status.clone(), Arc::clone(&sync.trigger));
        let (control, observer) = (Arc::clone(&serving.control), Arc::clone(&serving.observer));
        let server = tokio::spawn(serving.run());
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

/// The engine's settings: the demo's upstream, its test keys, and
/// timeouts and budgets for a run of seconds (some beyond what a config
/// file may say). Passes come from the demo's trigger; the hourly
/// schedule only keeps the engine running.
fn sync_settings(settings: &MirrorSettings) -> SyncSettings {
    SyncSettings {
        upstream: settings.upstream.clone(),
        versions: VersionSource::Dns {
            name: settings.dns.0.clone(),
            nameserver: Some(settings.dns.1),
        },
        databases: vec!["daily".into()],
        interval: Some(Duration::from_secs(3_600)),
        backfill: 5,
        retention: sync::DEFAULT_RETENTION,
        keys: TrustedKeys::official().merged(&signing_keys().trusted()),
        proxy: None,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        attempts: 1,
        max_requests_per_file_per_hour: 100,
        // Longer than the demo: the mirror waits for the missing cdiff
        // rather than publish without it.
        missing_cdiff_grace: Duration::from_secs(3_600),
        retry_base: Duration::from_millis(200),
        signatures: sync::SignaturePolicy::default(),
        sign_verifier: crate::cvd::sign::SignVerifier::new(crate::cvd::sign::SignRoots::official()),
        sign_grace: sync::DEFAULT_SIGN_GRACE,
    }
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
