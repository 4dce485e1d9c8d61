//! The `[limits]` configuration table.
//!
//! Everything is off unless configured: an empty `[limits]` only groups
//! clients and counts connections. Rates are written with explicit units
//! (`"2Mbit"`, `"250KB/s"`, parsed by [`cvdmirror_formats::Rate`]) and held as
//! bytes per second.
//! Durations use humantime (`"10s"`, `"1d"`).
//!
//! ```toml
//! [limits]
//! state_file = "/var/lib/cvdmirror/limits-state"
//! [limits.clients]
//! ipv6 = 64
//! [limits.proxies]
//! trusted = ["10.0.0.0/8"]
//! header = "x-forwarded-for"
//! [limits.requests]
//! requests = 60
//! per = "1m"
//! burst = 20
//! [limits.client_quota]
//! limit = 2_000_000_000
//! period = "1d"
//! slices = 24
//! on_exceed = { action = "redirect", url = "https://mirror2.example/clamav" }
//! [limits.herd]
//! bulk_min_rate = "2Mbit"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::action::{Action, RejectStatus};
use super::client::ClientPrefixes;
use super::proxy::TrustedProxies;

/// The whole `[limits]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// How addresses are grouped into clients.
    pub clients: ClientPrefixes,
    /// Reverse proxies whose forwarding headers are believed.
    pub proxies: TrustedProxies,
    /// Requests per client (GCRA); off if absent.
    pub requests: Option<RequestRateConfig>,
    /// Concurrent requests per client.
    pub client_connections: Option<ConnectionLimitConfig>,
    /// Concurrent requests per site.
    pub site_connections: Option<ConnectionLimitConfig>,
    /// Transfer quota of each site.
    pub site_quota: Option<QuotaConfig>,
    /// Transfer quota of each client on each site.
    pub client_quota: Option<QuotaConfig>,
    /// Herd gate for bulk downloads; off if absent.
    pub herd: Option<HerdConfig>,
    /// Responses with at least this many body bytes are bulk: judged by the
    /// quotas and the herd gate (default 1 MiB). Smaller ones (header
    /// checks, cdiffs, `304`, `404`) are only charged, never refused by them.
    pub bulk_threshold: u64,
    /// Where quota usage is persisted; in memory only if absent.
    pub state_file: Option<PathBuf>,
    /// How often usage is saved and idle clients are forgotten (default 10 s).
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
    /// Most clients tracked per table (default 1 000 000; ~50 bytes each).
    pub max_tracked_clients: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            clients: ClientPrefixes::default(),
            proxies: TrustedProxies::default(),
            requests: None,
            client_connections: None,
            site_connections: None,
            site_quota: None,
            client_quota: None,
            herd: None,
            bulk_threshold: 1 << 20,
            state_file: None,
            save_interval: Duration::from_secs(10),
            max_tracked_clients: 1_000_000,
        }
    }
}

/// A request rate per client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRateConfig {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The window `requests` refers to.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Requests allowed at once (default 1).
    #[serde(default = "one")]
    pub burst: u32,
    /// What to do beyond it (default `429`, 60 s jitter).
    #[serde(default)]
    pub on_exceed: Action,
}

/// A cap on concurrent requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimitConfig {
    /// Most concurrent requests.
    pub max: u32,
    /// What to do beyond it (default `429`, 60 s jitter).
    #[serde(default)]
    pub on_exceed: Action,
}

/// A transfer quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Bytes per period.
    pub limit: u64,
    /// Period length, aligned to the Unix epoch (`1d` starts 00:00 UTC).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Slices the limit is released in (default 1: all at once).
    #[serde(default = "one")]
    pub slices: u32,
    /// What to do beyond it (default `429`, 60 s jitter).
    #[serde(default)]
    pub on_exceed: Action,
}

/// The herd gate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HerdConfig {
    /// Minimum rate each admitted bulk transfer must keep, written with
    /// units (`"2Mbit"`, `"250KB/s"`); held as bytes per second.
    #[serde(deserialize_with = "rate_bytes_per_sec")]
    pub bulk_min_rate: u64,
    /// Shortest `Retry-After` (default 60 s); the queue's estimate is
    /// never rounded below it.
    #[serde(default = "retry_min", with = "humantime_serde")]
    pub retry_after_min: Duration,
    /// Longest `Retry-After` (default 15 min); clients further back in the
    /// queue are told this and, when they come back early, the rest.
    #[serde(default = "retry_max", with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// `429` (default) or `503`.
    #[serde(default)]
    pub status: RejectStatus,
}

fn one() -> u32 {
    1
}

impl HerdConfig {
    /// The gate at `bulk_min_rate` bytes per second, other settings default.
    pub fn with_min_rate(bulk_min_rate: u64) -> Self {
        Self {
            bulk_min_rate,
            retry_after_min: retry_min(),
            retry_after_max: retry_max(),
            status: RejectStatus::default(),
        }
    }
}

fn retry_min() -> Duration {
    Duration::from_secs(60)
}

fn retry_max() -> Duration {
    Duration::from_secs(900)
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[limits] {0}")]
pub struct LimitsConfigError(pub String);

fn check_action(what: &str, action: &Action) -> Result<(), LimitsConfigError> {
    match action {
        Action::Slow { rate: 0 } => Err(LimitsConfigError(format!(
            "{what}: a slow action needs a rate above 0"
        ))),
        Action::Redirect { url, .. }
            if !(url.starts_with("http://") || url.starts_with("https://")) =>
        {
            Err(LimitsConfigError(format!(
                "{what}: redirect url must be http:// or https://, not {url:?}"
            )))
        }
        _ => Ok(()),
    }
}

impl LimitsConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        let err = |m: &str| Err(LimitsConfigError(m.to_owned()));
        if self.clients.ipv4 > 32 || self.clients.ipv6 > 128 {
            return err("clients: prefixes are at most 32 (IPv4) and 128 (IPv6)");
        }
        if let Some(r) = &self.requests {
            if r.requests == 0 || r.per.is_zero() || r.burst == 0 {
                return err("requests: requests, per and burst must be above 0");
            }
            check_action("requests", &r.on_exceed)?;
        }
        for (what, c) in [
            ("client_connections", &self.client_connections),
            ("site_connections", &self.site_connections),
        ] {
            if let Some(c) = c {
                if c.max == 0 {
                    return Err(LimitsConfigError(format!("{what}: max must be above 0")));
                }
                check_action(what, &c.on_exceed)?;
            }
        }
        for (what, q) in [
            ("site_quota", &self.site_quota),
            ("client_quota", &self.client_quota),
        ] {
            if let Some(q) = q {
                if q.period < Duration::from_secs(1) || q.slices == 0 {
                    return Err(LimitsConfigError(format!(
                        "{what}: period must be at least 1s and slices at least 1"
                    )));
                }
                check_action(what, &q.on_exceed)?;
            }
        }
        if let Some(h) = &self.herd {
            if h.bulk_min_rate == 0 {
                return err("herd: bulk_min_rate must be above 0");
            }
            if h.retry_after_min > h.retry_after_max {
                return err("herd: retry_after_min is above retry_after_max");
            }
        }
        if self.save_interval.is_zero() {
            return err("save_interval must be above 0");
        }
        Ok(())
    }
}

/// Deserializes a rate with units (`"2Mbit"`) into bytes per second; bare
/// numbers are refused as ambiguous.
pub fn rate_bytes_per_sec<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    let rate: cvdmirror_formats::Rate = text.parse().map_err(serde::de::Error::custom)?;
    Ok(rate.bytes_per_sec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        limits: LimitsConfig,
    }

    fn parse(text: &str) -> Result<LimitsConfig, String> {
        let c = toml::from_str::<File>(text)
            .map_err(|e| e.to_string())?
            .limits;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| *l != "[limits]")
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.requests.unwrap().burst, 20);
        assert_eq!(c.client_quota.unwrap().slices, 24);
        let herd = c.herd.unwrap();
        assert_eq!(herd.retry_after_max, Duration::from_secs(900));
        assert_eq!(c.proxies.trusted.len(), 1);
    }

    #[test]
    fn empty_table_is_the_default() {
        assert_eq!(parse("[limits]").unwrap(), LimitsConfig::default());
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "[limits]\nbogus = 1",
            "[limits.requests]\nrequests = 0\nper = \"1s\"",
            "[limits.requests]\nrequests = 1\nper = \"1s\"\nextra = 2",
            "[limits.herd]\nbulk_min_rate = \"0bit\"",
            "[limits.herd]\nbulk_min_rate = \"8bit\"\nretry_after_min = \"1h\"\nretry_after_max = \"1m\"",
            "[limits.herd]\nbulk_min_rate = \"8bit\"\nstatus = 403",
            "[limits.site_quota]\nlimit = 1\nperiod = \"1d\"\nslices = 0",
            "[limits.client_quota]\nlimit = 1\nperiod = \"1d\"\non_exceed = { action = \"redirect\", url = \"ftp://x\" }",
            "[limits.client_connections]\nmax = 2\non_exceed = { action = \"slow\", rate = \"0bit\" }",
            "[limits.clients]\nipv6 = 129",
            "[limits.proxies]\ntrusted = [\"10.0.0.0/33\"]",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }
}
