//! A TXT server for tests and demos, not for production: it advertises
//! whatever text it is told, including malformed records and versions the
//! mirror does not have yet, and can play dead or deny the name.
//!
//! It is the beacon's own answering core with a settable answer instead of
//! the publish channel, so other suites (the sync engine's, the freshclam
//! end-to-end ones) can stand up "upstream DNS" on `127.0.0.1:0` in one
//! line, and it stops when dropped.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::serve::{Answer, AnswerSource, Authority, Listeners, serve};

/// TTL of the test server's answers: zero, so nothing caches them.
const TEST_TTL: Duration = Duration::ZERO;

/// How the test server answers TXT queries for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer with this text, verbatim.
    Txt(String),
    /// Answer with several TXT records, in this order.
    TxtRecords(Vec<String>),
    /// Answer `SERVFAIL`.
    ServFail,
    /// Answer `NXDOMAIN`.
    NxDomain,
    /// Never answer, so clients time out.
    NoAnswer,
}

/// A running TXT server on loopback; stops when dropped.
#[derive(Debug)]
pub struct TxtServer {
    behaviour: Arc<Mutex<Behaviour>>,
    addr: SocketAddr,
    name: String,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Shared(Arc<Mutex<Behaviour>>);

impl AnswerSource for Shared {
    fn answer(&self) -> Answer {
        match &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Behaviour::Txt(text) => Answer::Txt(vec![text.clone()]),
            Behaviour::TxtRecords(texts) => Answer::Txt(texts.clone()),
            Behaviour::ServFail => Answer::ServFail,
            Behaviour::NxDomain => Answer::NxDomain,
            Behaviour::NoAnswer => Answer::Silence,
        }
    }
}

impl TxtServer {
    /// Starts answering TXT for `name` with `text` on `127.0.0.1`, UDP and
    /// TCP on the same free port. Must be called within a tokio runtime.
    pub async fn start(name: &str, text: impl Into<String>) -> io::Result<Self> {
        Self::start_at(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            name,
            Behaviour::Txt(text.into()),
        )
        .await
    }

    /// Starts at `addr` (UDP and TCP; port 0 picks one) with `behaviour`.
    /// `127.0.0.1:53` is what an unshared freshclam with a bind-mounted
    /// `resolv.conf` asks.
    pub async fn start_at(addr: SocketAddr, name: &str, behaviour: Behaviour) -> io::Result<Self> {
        let fqdn = super::absolute_name(name)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
        let listeners = Listeners::bind(addr, Some(addr)).await?;
        let addr = listeners.udp_addr()?;
        let behaviour = Arc::new(Mutex::new(behaviour));
        let authority = Authority::new(&fqdn, TEST_TTL, Shared(Arc::clone(&behaviour)));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listeners, authority, stop.clone().cancelled_owned()));
        Ok(Self {
            behaviour,
            addr,
            name: fqdn.to_ascii(),
            stop,
        })
    }

    /// The address to query, over UDP or TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name answered for, fully qualified.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Advertises `text` from the next query on.
    pub fn set_record(&self, text: impl Into<String>) {
        self.set_behaviour(Behaviour::Txt(text.into()));
    }

    /// Answers as `behaviour` says from the next query on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }
}

impl Drop for TxtServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
