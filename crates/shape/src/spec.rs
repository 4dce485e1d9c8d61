//! What a caller says about a response when it asks for a shaped flow.
//!
//! The shaper does not decide who a client is: admission control already
//! groups addresses (an IPv6 /64 is one household, not 2^64 clients), so the
//! key arrives ready-made. Anything printable works; two flows with equal
//! keys in the same site and class share one client's fair share, whatever
//! number of connections they open.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::rate::Rate;

/// Identifies a client for fair sharing; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Arc<str>);

impl ClientKey {
    /// A key from anything printable (an address, a prefix, a user name).
    pub fn new(key: impl fmt::Display) -> Self {
        Self(Arc::from(key.to_string()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl From<Arc<str>> for ClientKey {
    fn from(key: Arc<str>) -> Self {
        Self(key)
    }
}

impl From<&str> for ClientKey {
    fn from(key: &str) -> Self {
        Self(Arc::from(key))
    }
}

impl From<IpAddr> for ClientKey {
    /// The address itself; callers wanting IPv6 /64 grouping pass that key.
    fn from(ip: IpAddr) -> Self {
        Self::new(ip)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a flow sits in the tree and what its client may have.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Site name (`Exchange::site`).
    pub site: Arc<str>,
    /// Class name, usually from [`Shaper::classify`](super::Shaper::classify).
    pub class: Arc<str>,
    /// Client key.
    pub client: ClientKey,
    /// Client's share relative to other clients of the class (at least 1).
    pub client_weight: u32,
    /// Cap for this client in this class, overriding the class's
    /// `client_rate`.
    pub client_rate: Option<Rate>,
}

impl FlowSpec {
    /// A flow with weight 1 and the class's client cap.
    pub fn new(
        site: impl Into<Arc<str>>,
        class: impl Into<Arc<str>>,
        client: impl Into<ClientKey>,
    ) -> Self {
        Self {
            site: site.into(),
            class: class.into(),
            client: client.into(),
            client_weight: 1,
            client_rate: None,
        }
    }

    /// Sets the client's weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.client_weight = weight;
        self
    }

    /// Sets a cap for the client.
    pub fn with_client_rate(mut self, rate: Rate) -> Self {
        self.client_rate = Some(rate);
        self
    }
}
