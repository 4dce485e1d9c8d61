//! The TOML config file as written by the operator, before validation.
//!
//! Every field is optional so that the file only says what differs from the
//! defaults; unknown keys are errors so a typo never silently does nothing.
//! Values that can be wrong in ways serde cannot see keep their span, so the
//! validation error can still name the line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen addresses.
    pub listen: Option<Vec<SocketAddr>>,
    /// Root of the default site.
    pub root: Option<Spanned<PathBuf>>,
    /// Access log target: path, `-` or `off`.
    pub access_log: Option<String>,
    /// HTML listings for the default site.
    pub directory_listing: Option<bool>,
    /// Connection limit.
    pub max_connections: Option<Spanned<usize>>,
    /// Time a client may take to send request headers (and idle keep-alive).
    #[serde(default, with = "humantime_serde::option")]
    pub header_read_timeout: Option<Duration>,
    /// How long shutdown waits for transfers in flight.
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_grace: Option<Duration>,
    /// Largest accepted request head in bytes.
    pub max_request_header_bytes: Option<Spanned<usize>>,
    /// Virtual hosts.
    #[serde(default)]
    pub site: Vec<FileSite>,
    /// Upstream and sync engine.
    pub sync: Option<FileSync>,
    /// DNS consistency beacon.
    pub beacon: Option<FileBeacon>,
    /// Admin API.
    pub admin: Option<FileAdmin>,
}

/// The `[sync]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Upstream base URL.
    pub upstream: Option<Spanned<String>>,
    /// TXT record name.
    pub dns_name: Option<String>,
    /// Nameserver for the TXT lookup.
    pub nameserver: Option<SocketAddr>,
    /// `dns` or `http`.
    pub version_check: Option<crate::cli::VersionCheck>,
    /// Databases to mirror.
    pub databases: Option<Spanned<Vec<String>>>,
    /// Background sync interval in `serve`.
    #[serde(default, with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    /// cdiff history fetched when missing.
    pub backfill: Option<u32>,
    /// cdiff retention.
    #[serde(default, with = "humantime_serde::option")]
    pub retention: Option<Duration>,
    /// Extra trusted keys, `ROLE:n=..,e=..`.
    pub trusted_keys: Option<Spanned<Vec<String>>>,
    /// Connect timeout upstream.
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    /// Abandon a transfer after this long without a byte.
    #[serde(default, with = "humantime_serde::option")]
    pub stall_timeout: Option<Duration>,
    /// Attempts per file per pass for retryable errors.
    pub attempts: Option<Spanned<u32>>,
    /// Request budget per upstream file per hour.
    pub max_requests_per_file_per_hour: Option<Spanned<u32>>,
    /// Wait for a required cdiff missing upstream.
    #[serde(default, with = "humantime_serde::option")]
    pub missing_cdiff_grace: Option<Duration>,
}

/// The `[beacon]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBeacon {
    /// UDP and TCP address.
    pub listen: Option<SocketAddr>,
    /// Record name answered.
    pub name: Option<Spanned<String>>,
    /// TTL of answers.
    #[serde(default, with = "humantime_serde::option")]
    pub ttl: Option<Duration>,
}

/// The `[admin]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Address of the admin listener.
    pub listen: Option<SocketAddr>,
    /// File with the bearer token for mutating actions.
    pub token_file: Option<PathBuf>,
}

/// One `[[site]]` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSite {
    /// Name used in logs and (later) metrics; defaults to the first host.
    pub name: Option<String>,
    /// Host names this site answers; `*.example.org` matches subdomains.
    pub hosts: Spanned<Vec<String>>,
    /// Directory it serves.
    pub root: Spanned<PathBuf>,
    /// HTML listings for directories.
    #[serde(default)]
    pub directory_listing: bool,
}

impl FileConfig {
    /// Parses the file's text; the error text names line and column.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_valid() {
        let f = FileConfig::parse("").unwrap();
        assert!(f.listen.is_none() && f.site.is_empty());
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err = FileConfig::parse("root = \"/srv\"\nlisten_on = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("listen_on"), "{msg}");
    }

    #[test]
    fn durations_are_human_readable() {
        let f = FileConfig::parse("header_read_timeout = \"2s\"\nshutdown_grace = \"1m\"").unwrap();
        assert_eq!(f.header_read_timeout, Some(Duration::from_secs(2)));
        assert_eq!(f.shutdown_grace, Some(Duration::from_secs(60)));
    }
}
