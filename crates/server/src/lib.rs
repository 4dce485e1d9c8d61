//! The HTTP server: accepts connections on listeners it is given, runs each
//! through the [`Pipeline`], and stops on a shutdown signal.
//!
//! Following mini-redis, [`Server::run`] takes listeners it did not bind and
//! a shutdown future, so tests bind port 0 and stop it at will. Shutdown
//! stops accepting at once, lets every transfer in flight finish within the
//! grace period, closes idle keep-alive connections, and then cuts whatever
//! is left.
//!
//! HTTPS listeners run beside the plain ones on the same workers: a TLS
//! connection is counted, limited, paced, shaped and logged as a plain one
//! is, after its handshake (`tls`). Certificates are swapped on reload for
//! new handshakes; connections keep the ones they were accepted with.

use cvdmirror_exchange::body;
use cvdmirror_exchange::hooks;
use cvdmirror_exchange::sendfile;
use cvdmirror_pipeline as pipeline;

mod connection;
pub mod listen;
pub mod pacing;
mod tls;
mod workers;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hooks::Hooks;
use crate::pipeline::site::SitesConfig;
use crate::pipeline::{Pipeline, Router};
use cvdmirror_exchange::TrustedProxies;
use cvdmirror_tls::TlsConfig;

/// Connections beyond the limit that are still answered `503` (the rest are
/// closed unanswered, so a flood cannot turn refusals into a cost).
const MAX_REFUSING: usize = 1024;

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Concurrent connections served; more get `503`.
    pub max_connections: usize,
    /// Time to receive a request head, and the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (`431` beyond).
    pub max_request_header_bytes: usize,
}

/// Everything a [`Server`] is built from.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The virtual hosts served.
    pub sites: SitesConfig,
    /// Whose forwarding headers are believed.
    pub proxies: TrustedProxies,
    /// Connection handling limits.
    pub connections: ConnectionLimits,
    /// How long shutdown waits for transfers in flight.
    pub shutdown_grace: Duration,
    /// `SO_MAX_PACING_RATE` for every client socket, bytes per second.
    pub socket_pacing: Option<u64>,
    /// Threads serving connections, each with its own event loop (fixed
    /// until restart).
    pub workers: usize,
    /// HTTPS certificates and client-certificate rules; `None` without an
    /// HTTPS listener.
    pub tls: Option<TlsConfig>,
}

/// Settings that a reload may change for new connections.
#[derive(Debug, Clone, Copy)]
struct Settings {
    limits: ConnectionLimits,
    shutdown_grace: Duration,
    /// `SO_MAX_PACING_RATE` for every client socket, bytes per second.
    socket_pacing: Option<u64>,
}

impl Settings {
    fn of(config: &ServerConfig) -> Self {
        Self {
            limits: config.connections,
            shutdown_grace: config.shutdown_grace,
            socket_pacing: config.socket_pacing,
        }
    }
}

/// A configured server, ready to run on listeners.
pub struct Server {
    pipeline: Arc<Pipeline>,
    settings: ArcSwap<Settings>,
    active: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    /// Threads serving connections (fixed until restart).
    workers: usize,
    /// HTTPS certificates and client-certificate rules, if configured.
    tls: ArcSwapOption<tls::Rules>,
    /// The pipeline's hooks, for requests refused before the pipeline.
    hooks: Hooks,
}

impl Server {
    /// Builds the server for `config`, with `hooks` in its pipeline.
    pub fn new(config: ServerConfig, hooks: Hooks) -> io::Result<Self> {
        let settings = Settings::of(&config);
        let workers = config.workers.max(1);
        let router = Router::build(config.sites)?;
        let tls = tls_rules(config.tls.as_ref(), &hooks)?;
        Ok(Self {
            pipeline: Arc::new(Pipeline::new(router, hooks.clone(), config.proxies)),
            settings: ArcSwap::from_pointee(settings),
            active: Arc::new(AtomicUsize::new(0)),
            refusing: Arc::new(AtomicUsize::new(0)),
            workers,
            tls: ArcSwapOption::new(tls),
            hooks,
        })
    }

    /// Applies a new configuration to requests and connections that start
    /// from now on; transfers in flight are untouched.
    pub fn reload(&self, config: ServerConfig) -> io::Result<()> {
        let settings = Settings::of(&config);
        let router = Router::build(config.sites)?;
        let tls = tls_rules(config.tls.as_ref(), &self.hooks)?;
        if config.workers != self.workers {
            tracing::warn!(
                running = self.workers,
                configured = config.workers,
                "a new number of workers applies at the next start"
            );
        }
        self.pipeline.set_router(router);
        self.pipeline.set_proxies(config.proxies);
        self.settings.store(Arc::new(settings));
        match tls {
            Some(rules) => self.tls.store(Some(rules)),
            // Without HTTPS listeners configured there is nothing to
            // serve them with; running ones keep their certificates.
            None if self.tls.load().is_some() => tracing::warn!(
                "HTTPS is no longer configured; the HTTPS listeners keep their certificates until a restart"
            ),
            None => {}
        }
        Ok(())
    }

    /// Client connections open right now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Serves `listeners` on the worker threads until `shutdown`
    /// completes, then drains.
    pub async fn run(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.run_with_tls(listeners, Vec::new(), shutdown).await
    }

    /// [`run`](Self::run) with HTTPS on `tls` beside plain HTTP on
    /// `listeners` (the certificates come from the config).
    pub async fn run_with_tls(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        tls: Vec<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        if !tls.is_empty() && self.tls.load().is_none() {
            return Err(io::Error::other(
                "HTTPS listeners without certificates (--tls-cert, --tls-key)",
            ));
        }
        // Plain first: worker sockets come back in this order.
        let first_tls = listeners.len();
        let mut listeners = listeners;
        listeners.extend(tls);
        for listener in &listeners {
            listen::no_delay(listener)?;
        }
        let graceful = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let acceptors = TaskTracker::new();
        let started = workers::Workers::start(self.workers, &listeners, |copies| {
            // Each worker's connections wait on the worker's own tokens
            // (cancelled with the parents), so they never contend with
            // another worker's for a token's lock.
            let (graceful, abort) = (graceful.child_token(), abort.child_token());
            copies
                .into_iter()
                .enumerate()
                .map(|(i, listener)| {
                    acceptors.track_future(Arc::clone(&self).accept_loop(
                        listener,
                        i >= first_tls,
                        tracker.clone(),
                        graceful.clone(),
                        abort.clone(),
                    ))
                })
                .collect()
        });
        let workers = match started {
            Ok(workers) => workers,
            Err(e) => {
                graceful.cancel();
                return Err(e);
            }
        };
        drop(listeners);
        acceptors.close();
        tracing::debug!(workers = self.workers, "serving");
        shutdown.await;

        let grace = self.settings.load().shutdown_grace;
        tracing::info!(connections = self.active_connections(), grace = ?grace, "shutting down: no new connections; letting transfers finish");
        graceful.cancel();
        acceptors.wait().await;
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                connections = self.active_connections(),
                "grace period over; closing remaining connections"
            );
            abort.cancel();
            tracker.wait().await;
        }
        workers.stop().await;
        tracing::info!("stopped");
        Ok(())
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        secure: bool,
        tracker: TaskTracker,
        graceful: CancellationToken,
        abort: CancellationToken,
    ) {
        // One wait on the token for the loop's life: a fresh one per accept
        // would join and leave the token's waiter list on every connection.
        let stopping = graceful.cancelled();
        tokio::pin!(stopping);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stopping => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the
                    // backlog holds clients until descriptors free up.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let settings = **self.settings.load();
            let limits = settings.limits;
            if let Some(rate) = settings.socket_pacing
                && let Err(e) = pacing::set_max_pacing_rate(&stream, rate)
            {
                tracing::debug!(error = %e, "kernel pacing unavailable on this socket");
            }
            let Some(guard) = self.admit_connection(limits.max_connections) else {
                tracing::debug!(%peer, "refusing connection unanswered: too many refusals in flight");
                continue;
            };
            // Plain connections need the rules only when a site requires
            // client certificates; TLS ones always (their certificates).
            let tls = self
                .tls
                .load()
                .as_ref()
                .filter(|rules| secure || rules.certificates.client_auth())
                .map(Arc::clone);
            let conn = Box::new(connection::Connection {
                stream,
                info: crate::pipeline::ConnectionInfo {
                    peer,
                    over_limit: guard.over_limit,
                    sendfile: Some(crate::sendfile::SendfileQueue::default()),
                },
                pipeline: Arc::clone(&self.pipeline),
                limits,
                tls,
            });
            let (graceful, abort) = (graceful.clone(), abort.clone());
            if secure {
                tracker.spawn(conn.serve_tls(graceful, abort, guard));
            } else {
                tracker.spawn(conn.serve(graceful, abort, guard));
            }
            // One accept per turn (nginx's `multi_accept off`): the new
            // connection is served before the next is taken, and a burst of
            // clients spreads over the workers instead of piling onto the
            // one that woke first.
            tokio::task::yield_now().await;
        }
    }

    /// Counts a new connection: normal, over the limit (answered `503`), or
    /// `None` when even refusals are saturated.
    fn admit_connection(&self, max: usize) -> Option<ConnectionGuard> {
        if self.active.fetch_add(1, Ordering::AcqRel) < max {
            return Some(ConnectionGuard {
                counter: Arc::clone(&self.active),
                over_limit: false,
            });
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
        if self.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
            return Some(ConnectionGuard {
                counter: Arc::clone(&self.refusing),
                over_limit: true,
            });
        }
        self.refusing.fetch_sub(1, Ordering::AcqRel);
        None
    }
}

/// The HTTPS rules for `config`, if HTTPS is configured.
fn tls_rules(config: Option<&TlsConfig>, hooks: &Hooks) -> io::Result<Option<Arc<tls::Rules>>> {
    let Some(settings) = config else {
        return Ok(None);
    };
    let certificates = cvdmirror_tls::Certificates::build(settings)
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    Ok(Some(Arc::new(tls::Rules {
        certificates: Arc::new(certificates),
        hooks: hooks.clone(),
    })))
}

/// Releases a connection slot when the connection ends.
struct ConnectionGuard {
    counter: Arc<AtomicUsize>,
    over_limit: bool,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}
