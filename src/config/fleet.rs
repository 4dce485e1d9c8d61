//! Resolution of `[fleet]` (and `--fleet`, `--node`, `--public-url`): where
//! the fleet's Redis is, who this node is, and when it sends clients to
//! another node. Checked here, before anything starts, so a fleet that
//! cannot work refuses to start with the line that says why.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Resolver};
use crate::config::flags::ServeArgs;
use cvdmirror_fleet::FleetConfig;

/// The `[fleet]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFleet {
    /// `redis://[:password@]host:port/db` or `rediss://` (TLS).
    pub redis: Option<Spanned<String>>,
    /// A file holding the Redis password (kept out of the config file).
    pub password_file: Option<Spanned<PathBuf>>,
    /// This node's name in the fleet.
    pub node: Option<Spanned<String>>,
    /// The URL clients reach this node at (redirects point here).
    pub public_url: Option<Spanned<String>>,
    /// Prefix of every key the fleet writes.
    pub key_prefix: Option<String>,
    /// Heartbeat interval.
    #[serde(default, with = "humantime_serde::option")]
    pub heartbeat: Option<Duration>,
    /// How long a silent node stays in the fleet.
    #[serde(default, with = "humantime_serde::option")]
    pub node_ttl: Option<Duration>,
    /// How long the upstream-puller lease lasts without renewal.
    #[serde(default, with = "humantime_serde::option")]
    pub lease_ttl: Option<Duration>,
    /// How long the last view is trusted for redirects without Redis.
    #[serde(default, with = "humantime_serde::option")]
    pub stale_after: Option<Duration>,
    /// How long a node may lag before it is drained.
    #[serde(default, with = "humantime_serde::option")]
    pub lag_grace: Option<Duration>,
    /// Redirect whole-CVD downloads when this node's link load is above
    /// this share of its capacity (0 to 1).
    pub redirect_above: Option<Spanned<f64>>,
    /// Client prefixes sent to a chosen node when they are redirected.
    pub affinity: Option<Spanned<Vec<FileAffinity>>>,
}

/// One `[[fleet.affinity]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAffinity {
    /// The clients, e.g. `10.1.0.0/16`.
    pub clients: ipnet::IpNet,
    /// The node they go to.
    pub node: String,
}

/// Default share of the link above which whole CVDs are redirected.
pub const DEFAULT_REDIRECT_ABOVE: f64 = 0.9;

/// Resolved `[fleet]` settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// How the node joins the fleet.
    pub fleet: FleetConfig,
    /// Link share above which whole CVDs go to a node with headroom.
    pub redirect_above: f64,
    /// Client prefixes and the node each is redirected to when it can
    /// take them, first match first.
    pub affinity: Vec<(ipnet::IpNet, String)>,
}

impl Resolver<'_> {
    pub(super) fn fleet(
        &self,
        args: &ServeArgs,
        file: Option<FileFleet>,
    ) -> Result<Option<FleetSettings>, ConfigError> {
        let file = file.unwrap_or_default();
        let redis_span = file.redis.as_ref().map(|r| r.span());
        let Some(mut redis) = args.fleet.clone().or(file.redis.map(Spanned::into_inner)) else {
            if file.node.is_some() || file.public_url.is_some() {
                return Err(self.invalid(
                    file.node.as_ref().map(|n| n.span()),
                    "[fleet] needs the Redis URL (redis = \"redis://host:6379/0\" or --fleet)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        if let Some(path) = &file.password_file {
            let password = std::fs::read_to_string(path.get_ref()).map_err(|e| {
                self.invalid(
                    Some(path.span()),
                    format!("password_file {}: {e}", path.get_ref().display()),
                )
            })?;
            redis = with_password(&redis, password.trim()).ok_or_else(|| {
                self.invalid(
                    redis_span.clone(),
                    format!("`{redis}` is not a redis:// or rediss:// URL"),
                )
            })?;
        }
        let node = match (&args.node, &file.node) {
            (Some(node), _) => node.clone(),
            (None, Some(node)) => node.get_ref().clone(),
            (None, None) => {
                return Err(self.invalid(
                    redis_span,
                    "a fleet node needs a name (--node or [fleet] node)".into(),
                ));
            }
        };
        let public_url = match (&args.public_url, &file.public_url) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.get_ref().clone(),
            (None, None) => {
                return Err(self.invalid(
                    redis_span,
                    "a fleet node needs the URL clients reach it at (--public-url or [fleet] public_url)".into(),
                ));
            }
        };
        let mut fleet = FleetConfig::new(redis, node, public_url);
        if let Some(prefix) = file.key_prefix {
            fleet.key_prefix = prefix;
        }
        fleet.heartbeat = file.heartbeat.unwrap_or(fleet.heartbeat);
        fleet.node_ttl = file.node_ttl.unwrap_or(fleet.node_ttl);
        fleet.lease_ttl = file.lease_ttl.unwrap_or(fleet.lease_ttl);
        fleet.stale_after = file.stale_after.unwrap_or(fleet.stale_after);
        fleet.lag_grace = file.lag_grace.unwrap_or(fleet.lag_grace);
        fleet
            .validate()
            .map_err(|e| self.invalid(redis_span, format!("[fleet]: {e}")))?;
        let redirect_above = match &file.redirect_above {
            Some(share) if !(0.0..=1.0).contains(share.get_ref()) => {
                return Err(self.invalid(
                    Some(share.span()),
                    format!(
                        "redirect_above must be between 0 and 1, not {}",
                        share.get_ref()
                    ),
                ));
            }
            Some(share) => *share.get_ref(),
            None => DEFAULT_REDIRECT_ABOVE,
        };
        let affinity = match file.affinity {
            Some(entries) => {
                let span = entries.span();
                let entries = entries.into_inner();
                if let Some(bad) = entries.iter().find(|entry| entry.node.trim().is_empty()) {
                    return Err(self.invalid(
                        Some(span),
                        format!("[[fleet.affinity]] for {} names no node", bad.clients),
                    ));
                }
                entries
                    .into_iter()
                    .map(|entry| (entry.clients.trunc(), entry.node))
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Some(FleetSettings {
            fleet,
            redirect_above,
            affinity,
        }))
    }
}

/// `url` with its password replaced by `password`.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "redis" && scheme != "rediss" {
        return None;
    }
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!("{scheme}://:{encoded}@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_replaces_the_urls_password_encoded() {
        assert_eq!(
            with_password("redis://old@r.example:6379/2", "p@ss word").as_deref(),
            Some("redis://:p%40ss%20word@r.example:6379/2")
        );
        assert_eq!(
            with_password("rediss://r:6380", "x").as_deref(),
            Some("rediss://:x@r:6380")
        );
        assert_eq!(with_password("http://r", "x"), None);
    }
}
