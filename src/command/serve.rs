//! `cvdmirror serve`: resolve the config, bind, announce, serve; optionally
//! run the sync engine, the admin API and the DNS beacon beside it. Reload
//! on `SIGHUP`, drain on `SIGTERM`/`SIGINT` (a second one stops at once).
//! [`start`] wires the parts together (in `serve/wiring.rs`); the demo
//! runs its mirror through it too.

mod fleet;
mod wiring;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::flags::ServeArgs;
use crate::config::{Config, DEFAULT_ROOT};
use crate::control::Control;
use crate::server::Server;
pub use wiring::{Listeners, RunningSync, Serving, start};

/// Runs the server until a shutdown signal; errors are for a person to read.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    prepare_default_root(&config)?;
    let shutdown = CancellationToken::new();
    let listeners = Listeners::bind(&config)?;
    if config
        .admin
        .as_ref()
        .is_some_and(|a| a.token_file.is_none())
    {
        tracing::warn!("no admin token file: admin actions (POST) are disabled");
    }
    let serving = start(&config, listeners, &shutdown).await?;
    announce(
        &config,
        (serving.listeners(), serving.tls_listeners()),
        serving.admin,
        serving.beacon,
    )?;
    let reloader = tokio::spawn(reload_on_hangup(
        args,
        Arc::clone(&serving.server),
        serving.access_log.clone(),
        Arc::clone(&serving.control),
    ));
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
    };
    let result = serving.run().await;
    reloader.abort();
    signals.abort();
    result.context("server failed")
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
    (listeners, tls): (&[TcpListener], &[TcpListener]),
    admin: Option<SocketAddr>,
    beacon: Option<SocketAddr>,
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
    for listener in tls {
        let addr = listener.local_addr()?;
        writeln!(out, "listening on https://{addr}/")?;
        tracing::info!(%addr, root = %root.display(), "serving HTTPS");
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
    let listen = Config::resolve(&args)
        .map(|c| (c.listen, c.tls.map(|t| t.listen)))
        .ok();
    while hangups.recv().await.is_some() {
        access_log.reopen();
        match Config::resolve(&args) {
            Ok(config) => {
                let now = (
                    config.listen.clone(),
                    config.tls.as_ref().map(|t| t.listen.clone()),
                );
                if Some(&now) != listen.as_ref() {
                    tracing::warn!("listen addresses changed; they take effect after a restart");
                }
                // Everything that can still fail first, so a rejected reload changes nothing.
                if let Err(e) = server.reload(config.server()) {
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
