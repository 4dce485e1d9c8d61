//! `cvdmirror serve`: resolve the config, bind, announce, serve; reload on
//! `SIGHUP`, drain on `SIGTERM`/`SIGINT` (a second one stops at once).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::access_log::AccessLog;
use crate::cli::ServeArgs;
use crate::config::{Config, DEFAULT_ROOT};
use crate::hooks::Hooks;
use crate::server::{Server, listen};

/// Runs the server until a shutdown signal; errors are for a person to read.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    prepare_default_root(&config)?;
    let access_log = AccessLog::start(&config.access_log)?;
    let mut hooks = Hooks::new();
    hooks.push(Arc::new(access_log.clone()));
    let server = Arc::new(Server::new(&config, hooks)?);
    let listeners = listen::bind_all(&config.listen, config.listen_is_default)?;

    announce(&config, &listeners)?;
    let reloader = tokio::spawn(reload_on_hangup(args, Arc::clone(&server), access_log));
    let result = Arc::clone(&server).run(listeners, shutdown_signal()).await;
    reloader.abort();
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
fn announce(config: &Config, listeners: &[std::net::TcpListener]) -> anyhow::Result<()> {
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
    for site in &config.sites {
        tracing::info!(site = %site.name, hosts = ?site.hosts, root = %site.root.display(), "virtual host");
    }
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

async fn reload_on_hangup(args: ServeArgs, server: Arc<Server>, access_log: AccessLog) {
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
                match server.reload(&config) {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; keeping the running configuration")
                    }
                }
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
