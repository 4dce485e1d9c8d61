//! How one node joins its fleet: where the shared Redis is, the node's own
//! name and public URL, the key prefix that keeps several fleets (or a
//! staging fleet) apart in one Redis, and the timings of heartbeats, leases
//! and staleness. It is plain data the application fills in from its own
//! configuration; [`FleetConfig::validate`] refuses what cannot work before
//! anything is started. Every node of a fleet is expected to use the same
//! prefix and timings.

use std::fmt;
use std::time::Duration;

use crate::FleetError;

/// The configuration of one fleet node.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `redis://[:password@]host:port/db`, or `rediss://…` for TLS.
    pub redis_url: String,
    /// This node's name, unique in the fleet: no whitespace or control
    /// characters.
    pub node: String,
    /// The URL under which clients reach this node (`https://a.example.org`):
    /// what other nodes redirect to.
    pub public_url: String,
    /// The prefix of every key the fleet writes (`{prefix}:node:{name}`, …).
    pub key_prefix: String,
    /// How often the node writes its report, reads the others' and renews
    /// the lease.
    pub heartbeat: Duration,
    /// How long a node's report outlives its last heartbeat.
    pub node_ttl: Duration,
    /// How long the lease outlives its holder's last renewal.
    pub lease_ttl: Duration,
    /// How long the last view may still be used for redirects after Redis
    /// was lost.
    pub stale_after: Duration,
    /// The bound on every single Redis call.
    pub op_timeout: Duration,
    /// How long a node may publish an older database than the fleet's
    /// newest before it counts as lagging.
    pub lag_grace: Duration,
    /// Whether this node may hold the upstream lease: only a node that
    /// syncs should pull for the fleet.
    pub pulls: bool,
}

impl FleetConfig {
    /// The default key prefix.
    pub const DEFAULT_KEY_PREFIX: &str = "cvdmirror";
    /// The default heartbeat interval.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
    /// The default node TTL.
    pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(10);
    /// The default lease TTL.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
    /// The default time after which a view without Redis is stale.
    pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);
    /// The default bound on one Redis call.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);
    /// The default lag grace.
    pub const DEFAULT_LAG_GRACE: Duration = Duration::from_secs(600);

    /// A configuration with the default prefix and timings.
    pub fn new(
        redis_url: impl Into<String>,
        node: impl Into<String>,
        public_url: impl Into<String>,
    ) -> Self {
        Self {
            redis_url: redis_url.into(),
            node: node.into(),
            public_url: public_url.into(),
            key_prefix: Self::DEFAULT_KEY_PREFIX.to_owned(),
            heartbeat: Self::DEFAULT_HEARTBEAT,
            node_ttl: Self::DEFAULT_NODE_TTL,
            lease_ttl: Self::DEFAULT_LEASE_TTL,
            stale_after: Self::DEFAULT_STALE_AFTER,
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            lag_grace: Self::DEFAULT_LAG_GRACE,
            pulls: true,
        }
    }

    /// Refuses a configuration that cannot work: a URL Redis's client does
    /// not accept, a node name that cannot stand in a key or in the lease's
    /// `"{node} {token}"` value, a public URL that is not HTTP(S), or
    /// timings under which reports or the lease would lapse between two
    /// heartbeats.
    pub fn validate(&self) -> Result<(), FleetError> {
        self.redis_client()?;
        let invalid = |what: String| Err(FleetError::Config(what));
        if self.node.is_empty()
            || self.node.len() > 200
            || self
                .node
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(format!(
                "node name {:?} must be 1 to 200 characters without spaces",
                self.node
            ));
        }
        let scheme_ok = ["http://", "https://"].iter().any(|scheme| {
            self.public_url
                .get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        });
        if !scheme_ok
            || self.public_url.len() <= "https://".len()
            || self
                .public_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(format!(
                "public URL {:?} must be an http:// or https:// URL",
                self.public_url
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(char::is_whitespace) {
            return invalid(format!("key prefix {:?} must be a word", self.key_prefix));
        }
        if self.heartbeat.is_zero() || self.op_timeout.is_zero() || self.stale_after.is_zero() {
            return invalid("heartbeat, op timeout and stale-after must be positive".to_owned());
        }
        if self.node_ttl < self.heartbeat * 2 || self.lease_ttl < self.heartbeat * 2 {
            return invalid(format!(
                "node TTL ({:?}) and lease TTL ({:?}) must be at least two heartbeats ({:?})",
                self.node_ttl, self.lease_ttl, self.heartbeat
            ));
        }
        Ok(())
    }

    /// A report older than this is kept in the view but no longer trusted
    /// for versions and redirects: the node missed several heartbeats and
    /// is probably gone before its key expires.
    pub fn fresh_within(&self) -> Duration {
        self.node_ttl / 2
    }

    /// The Redis client for [`redis_url`](Self::redis_url).
    pub(crate) fn redis_client(&self) -> Result<redis::Client, FleetError> {
        redis::Client::open(self.redis_url.as_str()).map_err(|error| {
            FleetError::Config(format!(
                "redis URL {}: {error}",
                redacted_url(&self.redis_url)
            ))
        })
    }

    pub(crate) fn node_key(&self, node: &str) -> String {
        format!("{}{node}", self.node_key_prefix())
    }

    pub(crate) fn node_key_prefix(&self) -> String {
        format!("{}:node:", self.key_prefix)
    }

    pub(crate) fn nodes_key(&self) -> String {
        format!("{}:nodes", self.key_prefix)
    }

    pub(crate) fn peer_token_key(&self) -> String {
        format!("{}:peer-token", self.key_prefix)
    }

    pub(crate) fn lease_key(&self) -> String {
        format!("{}:lease", self.key_prefix)
    }

    pub(crate) fn lease_token_key(&self) -> String {
        format!("{}:lease:token", self.key_prefix)
    }

    pub(crate) fn quota_key(&self, key: &str) -> String {
        format!("{}:quota:{key}", self.key_prefix)
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis_url", &redacted_url(&self.redis_url))
            .field("node", &self.node)
            .field("public_url", &self.public_url)
            .field("key_prefix", &self.key_prefix)
            .field("heartbeat", &self.heartbeat)
            .field("node_ttl", &self.node_ttl)
            .field("lease_ttl", &self.lease_ttl)
            .field("stale_after", &self.stale_after)
            .field("op_timeout", &self.op_timeout)
            .field("lag_grace", &self.lag_grace)
            .finish()
    }
}

/// `url` with the credentials between `://` and `@` replaced, for logs and
/// errors.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last `@` ends the credentials even when the password holds a
    // `/` or `@`; Redis URLs carry none in their path.
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FleetConfig {
        FleetConfig::new("redis://127.0.0.1:6379/0", "a", "https://a.example.org")
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config().validate().ok(), Some(()));
        assert_eq!(config().key_prefix, "cvdmirror");
        assert_eq!(config().heartbeat, Duration::from_secs(2));
        assert_eq!(config().fresh_within(), Duration::from_secs(5));
    }

    #[test]
    fn what_cannot_work_is_refused() {
        let cases: [fn(&mut FleetConfig); 7] = [
            |c| c.redis_url = "http://127.0.0.1".to_owned(),
            |c| c.node = "a b".to_owned(),
            |c| c.node = String::new(),
            |c| c.public_url = "a.example.org".to_owned(),
            |c| c.key_prefix = String::new(),
            |c| c.lease_ttl = c.heartbeat,
            |c| c.op_timeout = Duration::ZERO,
        ];
        for change in cases {
            let mut config = config();
            change(&mut config);
            assert!(
                matches!(config.validate(), Err(FleetError::Config(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn tls_urls_are_accepted() {
        let mut config = config();
        config.redis_url = "rediss://:secret@redis.example.org:6380/2".to_owned();
        assert_eq!(config.validate().ok(), Some(()));
    }

    #[test]
    fn passwords_never_reach_debug_output() {
        let mut config = config();
        config.redis_url = "redis://:hunter2@127.0.0.1:6379/0".to_owned();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://***@127.0.0.1:6379/0"), "{shown}");
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(
            redacted_url("rediss://u:p/a@ss@h:1/0"),
            "rediss://***@h:1/0"
        );
    }

    #[test]
    fn keys_sit_under_the_prefix() {
        let config = config();
        assert_eq!(config.node_key("a"), "cvdmirror:node:a");
        assert_eq!(config.nodes_key(), "cvdmirror:nodes");
        assert_eq!(config.lease_key(), "cvdmirror:lease");
        assert_eq!(config.lease_token_key(), "cvdmirror:lease:token");
        assert_eq!(
            config.quota_key("198.51.100.7"),
            "cvdmirror:quota:198.51.100.7"
        );
    }
}
