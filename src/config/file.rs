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
    /// Threads serving connections.
    pub workers: Option<Spanned<usize>>,
    /// Virtual hosts.
    #[serde(default)]
    pub site: Vec<FileSite>,
    /// Upstream and sync engine.
    pub sync: Option<FileSync>,
    /// DNS consistency beacon.
    pub beacon: Option<FileBeacon>,
    /// Admin API.
    pub admin: Option<FileAdmin>,
    /// Several nodes through Redis.
    pub fleet: Option<super::fleet::FileFleet>,
    /// Bandwidth shaping.
    pub shape: Option<Spanned<crate::shape::ShapeConfig>>,
    /// Admission limits.
    pub limits: Option<Spanned<crate::limits::LimitsConfig>>,
    /// Status page and metrics.
    pub observe: Option<FileObserve>,
    /// Alert rules and webhook.
    pub alerts: Option<FileAlerts>,
    /// `Cache-Control` values.
    pub cache_control: Option<FileCacheControl>,
    /// HTTPS.
    pub tls: Option<Spanned<FileTls>>,
}

/// The `[tls]` table: HTTPS listeners and the default site's certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Addresses to serve HTTPS on.
    pub listen: Option<Vec<SocketAddr>>,
    /// Certificate chain (PEM, leaf first).
    pub cert: Option<Spanned<PathBuf>>,
    /// Its private key (PEM).
    pub key: Option<Spanned<PathBuf>>,
    /// CA file client certificates of the default site must chain to.
    pub client_ca: Option<Spanned<PathBuf>>,
}

/// The `[cache_control]` table: a `Cache-Control` value per kind of
/// answer; an empty string sends none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheControl {
    /// Files whose name stays while their content changes (`daily.cvd`).
    pub changing: Option<Spanned<String>>,
    /// Versioned names (`daily-N.cdiff`, `*.sign`).
    pub versioned: Option<Spanned<String>>,
    /// `404 Not Found`.
    pub missing: Option<Spanned<String>>,
}

/// The `[observe]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObserve {
    /// Serve the read-only status page on the public listener too.
    pub public_status: Option<bool>,
    /// Its path there.
    pub public_path: Option<Spanned<String>>,
    /// Show client addresses in the public view.
    pub public_clients: Option<bool>,
    /// Rows of the top tables.
    pub top: Option<Spanned<usize>>,
    /// This mirror's name in alerts.
    pub name: Option<String>,
}

/// The `[alerts]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlerts {
    /// Link capacity, a rate with units (`"100Mbit"`, `"10MB/s"`).
    pub link_capacity: Option<crate::shape::Rate>,
    /// Share of capacity that counts as saturated, in percent.
    pub link_threshold_percent: Option<Spanned<f64>>,
    /// How long saturation must last.
    #[serde(default, with = "humantime_serde::option")]
    pub link_for: Option<Duration>,
    /// Herd: multiple of the baseline.
    pub herd_factor: Option<Spanned<f64>>,
    /// Herd: floor per minute.
    pub herd_min_per_minute: Option<u64>,
    /// Versions behind upstream that count.
    pub behind_versions: Option<u32>,
    /// For how long.
    #[serde(default, with = "humantime_serde::option")]
    pub behind_for: Option<Duration>,
    /// Consecutive failed sync passes.
    pub sync_failures: Option<u32>,
    /// How long a quota alert holds after the last event.
    #[serde(default, with = "humantime_serde::option")]
    pub quota_hold: Option<Duration>,
    /// Clear time before an alert resolves.
    #[serde(default, with = "humantime_serde::option")]
    pub clear_for: Option<Duration>,
    /// Webhook URL.
    pub webhook: Option<Spanned<String>>,
    /// Time limit of one webhook attempt.
    #[serde(default, with = "humantime_serde::option")]
    pub webhook_timeout: Option<Duration>,
    /// Attempts per event.
    pub webhook_attempts: Option<Spanned<u32>>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde::option")]
    pub webhook_retry: Option<Duration>,
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
    pub version_check: Option<crate::config::flags::VersionCheck>,
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
    /// First retry delay after a retryable error.
    #[serde(default, with = "humantime_serde::option")]
    pub retry_base: Option<Duration>,
    /// HTTP proxy for upstream requests.
    pub proxy: Option<Spanned<String>>,
    /// Which signatures a file must carry: `either`, `sign` or `both`.
    pub signatures: Option<Spanned<String>>,
    /// Extra trusted roots for `.sign` files (PEM files).
    pub sign_roots: Option<Spanned<Vec<String>>>,
    /// Feature level `.sign` lines are selected for.
    pub sign_flevel: Option<Spanned<u32>>,
    /// How long a replaced CVD's `.sign` stays published.
    #[serde(default, with = "humantime_serde::option")]
    pub sign_grace: Option<Duration>,
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
    /// This site's HTTPS certificate chain (PEM); the default one without.
    pub tls_cert: Option<Spanned<PathBuf>>,
    /// Its private key.
    pub tls_key: Option<Spanned<PathBuf>>,
    /// Require HTTPS client certificates issued by a CA in this PEM file.
    pub tls_client_ca: Option<Spanned<PathBuf>>,
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
