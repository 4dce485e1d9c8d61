//! The consistency beacon: a tiny authoritative DNS server that answers the
//! TXT of the operator's own `DNSDatabaseInfo` name with the versions this
//! mirror actually publishes.
//!
//! Clients pointed at it never learn of a version before the mirror can
//! serve it, which is what turns "upstream moved, mirror lagging" from a
//! herd of full downloads into a quiet no-op. The sync engine publishes
//! through a `watch` channel; each answer reads the latest value.
//!
//! Two choices, both made for freshclam's sake:
//! - The record time (field 3) is set to *now* on every answer. The beacon
//!   asserts "this is what I publish right now", so the record is never
//!   stale in the client's eyes (older than 12 h makes freshclam ignore
//!   it), however long ago the versions last changed.
//! - Before anything is published the answer is `SERVFAIL`. freshclam then
//!   falls back to HTTP header checks against the mirror, which are always
//!   truthful. An empty `NOERROR` would do the same for freshclam, but it
//!   says authoritatively "there is no record", which a resolver may cache
//!   and which stops it from asking another beacon of the same zone;
//!   `SERVFAIL` says "ask again or elsewhere", which is the truth.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_server::proto::rr::Name;
use thiserror::Error;
use tokio::sync::watch;

use super::record::VersionRecord;
use super::serve::{Answer, AnswerSource, Authority, Listeners, serve};

/// How long resolvers may cache the answer unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Where the beacon reads the time for the record-time field.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The real clock: the one place the beacon calls `SystemTime::now`.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Settings for a [`Beacon`].
#[derive(Clone)]
pub struct BeaconConfig {
    /// UDP address to answer on (port 0 picks one).
    pub udp: SocketAddr,
    /// TCP address to answer on, `None` for UDP only. Equal to `udp` with
    /// port 0, TCP gets the same port as UDP.
    pub tcp: Option<SocketAddr>,
    /// The name to answer TXT for, e.g. `current.cvd.example.org`; its
    /// parent is the zone the beacon is authoritative for.
    pub name: String,
    /// TTL of the answer.
    pub ttl: Duration,
    /// Source of the record time.
    pub clock: Clock,
}

impl BeaconConfig {
    /// UDP and TCP on `listen` (as `--beacon-listen` gives it), TXT for
    /// `name` (as `--beacon-name` gives it), the default TTL, the real clock.
    pub fn new(listen: SocketAddr, name: impl Into<String>) -> Self {
        Self {
            udp: listen,
            tcp: Some(listen),
            name: name.into(),
            ttl: DEFAULT_TTL,
            clock: system_clock(),
        }
    }

    /// The same settings with TTL `ttl`.
    pub fn with_ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// The same settings reading the record time from `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }
}

impl fmt::Debug for BeaconConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeaconConfig")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why the beacon could not start or stopped.
#[derive(Debug, Error)]
pub enum BeaconError {
    /// The configured name is not a valid DNS name.
    #[error("invalid beacon name {name:?}: {reason}")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        /// The UDP (and TCP) address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// The server stopped with an error.
    #[error("DNS beacon failed: {0}")]
    Serve(io::Error),
}

/// A bound beacon, ready to [`run`](Beacon::run).
#[derive(Debug)]
pub struct Beacon {
    listeners: Listeners,
    name: Name,
    ttl: Duration,
    published: Published,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl Beacon {
    /// Validates the name and binds the sockets; nothing is answered until
    /// [`run`](Beacon::run). `versions` is what the mirror publishes now
    /// (`None` until its first sync).
    pub async fn bind(
        config: BeaconConfig,
        versions: watch::Receiver<Option<VersionRecord>>,
    ) -> Result<Self, BeaconError> {
        let name =
            super::absolute_name(&config.name).map_err(|reason| BeaconError::InvalidName {
                name: config.name.clone(),
                reason,
            })?;
        let bind_error = |source| BeaconError::Bind {
            addr: config.udp,
            source,
        };
        let listeners = Listeners::bind(config.udp, config.tcp)
            .await
            .map_err(bind_error)?;
        let udp_addr = listeners.udp_addr().map_err(bind_error)?;
        let tcp_addr = listeners.tcp_addr().map_err(bind_error)?;
        Ok(Self {
            listeners,
            name,
            ttl: config.ttl,
            published: Published {
                versions,
                clock: config.clock,
            },
            udp_addr,
            tcp_addr,
        })
    }

    /// The bound UDP address (with the real port when 0 was asked for).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address, if TCP is served.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The name answered for, fully qualified (`current.cvd.example.org.`).
    pub fn name(&self) -> String {
        self.name.to_ascii()
    }

    /// Answers queries until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BeaconError> {
        tracing::info!(
            name = %self.name,
            udp = %self.udp_addr,
            tcp = ?self.tcp_addr,
            "DNS beacon answering"
        );
        let authority = Authority::new(&self.name, self.ttl, self.published);
        serve(self.listeners, authority, shutdown)
            .await
            .map_err(BeaconError::Serve)
    }
}

/// The answer source: the latest published versions, stamped with now.
struct Published {
    versions: watch::Receiver<Option<VersionRecord>>,
    clock: Clock,
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Published")
            .field("versions", &*self.versions.borrow())
            .finish_non_exhaustive()
    }
}

impl AnswerSource for Published {
    fn answer(&self) -> Answer {
        match &*self.versions.borrow() {
            Some(record) => Answer::Txt(vec![record.stamped((self.clock)()).to_string()]),
            None => Answer::ServFail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXED: u64 = 1_800_000_000;

    fn fixed_clock() -> Clock {
        Arc::new(|| SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED))
    }

    #[test]
    fn nothing_published_is_servfail() {
        let (_tx, rx) = watch::channel(None);
        let source = Published {
            versions: rx,
            clock: fixed_clock(),
        };
        assert_eq!(source.answer(), Answer::ServFail);
    }

    #[test]
    fn published_record_is_stamped_with_now() {
        let old = VersionRecord::parse("1.4.3:62:27500:1600000000:0:90:1:339").unwrap();
        let (tx, rx) = watch::channel(Some(old));
        let source = Published {
            versions: rx,
            clock: fixed_clock(),
        };
        assert_eq!(
            source.answer(),
            Answer::Txt(vec![format!("1.4.3:62:27500:{FIXED}:0:90:1:339")])
        );
        tx.send_modify(|r| {
            if let Some(r) = r {
                r.daily = 27501;
            }
        });
        assert_eq!(
            source.answer(),
            Answer::Txt(vec![format!("1.4.3:62:27501:{FIXED}:0:90:1:339")])
        );
    }

    #[tokio::test]
    async fn invalid_name_is_rejected_before_binding() {
        let (_tx, rx) = watch::channel(None);
        let config = BeaconConfig::new("127.0.0.1:0".parse().unwrap(), "bad..name");
        let err = Beacon::bind(config, rx).await.unwrap_err();
        assert!(matches!(err, BeaconError::InvalidName { .. }), "{err}");
    }
}
