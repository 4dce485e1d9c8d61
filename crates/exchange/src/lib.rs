//! The vocabulary every request-path component shares: one [`Exchange`]
//! (a request and what is learned about it as it is served), the [`hooks`]
//! that admission, pacing, logging and metrics plug in through, the
//! response [`body`] with its `sendfile` path, and who the client is
//! ([`client`] keys, [`proxy`] forwarding rules), and which virtual
//! [`host`] a name picks.
//!
//! It sits above the formats crate and below every component: the pipeline
//! fills an [`Exchange`], hooks read it, and none of them needs another's
//! types to do so.

pub mod body;
pub mod client;
pub mod hooks;
pub mod host;
pub mod proxy;
pub mod sendfile;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::{Method, Version};
use tokio::time::Instant;

pub use client::{ClientKey, ClientPrefixes};
pub use cvdmirror_formats::FileKind;
pub use proxy::{ProxyHeader, TrustedProxies};

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection exceeded the connection limit: answer `503` and close.
    pub over_limit: bool,
    /// Where file bodies announce ranges for the connection to `sendfile`;
    /// `None` reads them into memory instead.
    pub sendfile: Option<crate::sendfile::SendfileQueue>,
}

/// One request and what the pipeline learned about it; shared with hooks.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The connection's remote address.
    pub peer: SocketAddr,
    /// The client's address: the peer, or what a trusted proxy forwarded.
    pub client: IpAddr,
    /// Request method.
    pub method: Method,
    /// The request target as received (for the log).
    pub target: http::Uri,
    /// HTTP version.
    pub version: Version,
    /// Name of the site that served it.
    pub site: Arc<str>,
    /// `Referer` header, as received.
    pub referer: Option<Box<[u8]>>,
    /// `User-Agent` header, as received.
    pub user_agent: Option<Box<[u8]>>,
    /// `Authorization` header, as received (a mirror's clients send none;
    /// a fleet node syncing from another sends the fleet's peer token).
    /// Never logged.
    pub authorization: Option<Box<[u8]>>,
    /// Wall-clock time the request head arrived.
    pub received: SystemTime,
    /// Monotonic time the request head arrived.
    pub started: Instant,
    /// The file served, if any.
    pub file: Option<ServedFileInfo>,
    /// State hooks keep for this exchange (see [`crate::hooks::Hook::admit`]).
    pub extensions: http::Extensions,
    /// Body bytes handed to the connection so far, counted by the outermost
    /// body as they go: hooks read live progress here instead of wrapping
    /// the body to count it.
    pub sent: SentBytes,
}

impl Exchange {
    /// An exchange for a request head that just arrived from `peer` (also
    /// taken as the client until forwarding headers say otherwise), on
    /// `site`, with no headers kept and nothing served yet.
    pub fn arrived(
        peer: SocketAddr,
        method: Method,
        target: http::Uri,
        version: Version,
        site: Arc<str>,
    ) -> Self {
        Self {
            peer,
            client: peer.ip(),
            method,
            target,
            version,
            site,
            referer: None,
            user_agent: None,
            authorization: None,
            received: SystemTime::now(),
            started: Instant::now(),
            file: None,
            extensions: http::Extensions::new(),
            sent: SentBytes::default(),
        }
    }

    /// A `GET` over HTTP/1.1 from `peer` for `target` on the site `default`:
    /// the exchange hooks are tested with.
    pub fn get(peer: SocketAddr, target: &str) -> Self {
        let target = target
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        Self::arrived(
            peer,
            Method::GET,
            target,
            Version::HTTP_11,
            Arc::from("default"),
        )
    }
}

/// The mark a hook leaves in [`Exchange::extensions`] on a request from
/// another node of the same fleet (it proved so with the fleet's peer
/// token): admission limits meant for clients (request rates, quotas, the
/// herd gate, connection limits) do not apply to it, while its bytes still
/// go through the link's shaping like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedPeer;

/// The mark a hook leaves in [`Exchange::extensions`] when it answered a
/// request for a file this server lacks with a redirect to a server that
/// has it (a fleet's fill-in): for the rest of the pipeline the file was
/// still missing here (the sync's heal hook treats it as a `404`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingHere;

/// A byte counter shared by the response body and whoever watches it.
#[derive(Debug, Default)]
pub struct SentBytes(AtomicU64);

impl SentBytes {
    /// Bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl Clone for SentBytes {
    /// A snapshot: the clone counts on its own from the current value.
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.get()))
    }
}

/// What hooks may want to know about the file being sent.
#[derive(Debug, Clone)]
pub struct ServedFileInfo {
    /// What kind of mirror file it is.
    pub kind: FileKind,
    /// Its full size (not the range).
    pub size: u64,
}
