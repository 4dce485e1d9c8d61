//! Resolution of `[observe]` (status page, public view) and `[alerts]`
//! (thresholds, webhook) into the [`ObserveConfig`] the observer is built
//! from. `link_capacity` is a [`crate::shape::Rate`], written like every
//! other rate (`"100Mbit"`, `"10MB/s"`), so a bad one is refused while the
//! file is parsed, with its line and what to write instead.

use std::time::Duration;

use toml::Spanned;

use super::file::{FileAlerts, FileObserve};
use super::{ConfigError, Resolver};
use crate::observe::ObserveConfig;
use crate::observe::alerts::AlertConfig;
use crate::observe::alerts::deliver::WebhookConfig;
use crate::shape::Rate;

/// Default path of the public status page.
pub const DEFAULT_PUBLIC_PATH: &str = "/_status";

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cvdmirror".into())
}

impl Resolver<'_> {
    pub(super) fn observe(
        &self,
        observe: Option<FileObserve>,
        alerts: Option<FileAlerts>,
    ) -> Result<ObserveConfig, ConfigError> {
        let mut config = ObserveConfig {
            name: host_name(),
            ..ObserveConfig::default()
        };
        if let Some(o) = observe {
            if o.public_status.unwrap_or(false) {
                let path = match o.public_path {
                    Some(p) => {
                        let span = p.span();
                        let path = p.into_inner().trim_end_matches('/').to_owned();
                        let valid = path.starts_with('/')
                            && path.len() > 1
                            && !path.contains("/.")
                            && path.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.')
                            });
                        if !valid {
                            return Err(self.invalid(
                                Some(span),
                                "public_path must be an absolute path of letters, digits, `_`, `-`, `.` and `/`, without dot-segments (the pipeline refuses those), e.g. \"/_status\"".into(),
                            ));
                        }
                        path
                    }
                    None => DEFAULT_PUBLIC_PATH.into(),
                };
                config.public_path = Some(path);
            }
            config.public_clients = o.public_clients.unwrap_or(false);
            if let Some(top) = o.top {
                let span = top.span();
                let top = top.into_inner();
                if !(1..=500).contains(&top) {
                    return Err(self.invalid(Some(span), "top must be between 1 and 500".into()));
                }
                config.top = top;
            }
            if let Some(name) = o.name {
                config.name = name;
            }
        }
        if let Some(a) = alerts {
            self.alerts(a, &mut config)?;
        }
        Ok(config)
    }

    fn alerts(&self, a: FileAlerts, config: &mut ObserveConfig) -> Result<(), ConfigError> {
        let defaults = AlertConfig::default();
        let link_threshold = match a.link_threshold_percent {
            Some(p) if !(1.0..=100.0).contains(p.get_ref()) => {
                return Err(self.invalid(
                    Some(p.span()),
                    "link_threshold_percent must be between 1 and 100".into(),
                ));
            }
            Some(p) => p.into_inner() / 100.0,
            None => defaults.link_threshold,
        };
        let herd_factor = match a.herd_factor {
            Some(f) if *f.get_ref() < 1.0 || !f.get_ref().is_finite() => {
                return Err(self.invalid(Some(f.span()), "herd_factor must be at least 1".into()));
            }
            Some(f) => f.into_inner(),
            None => defaults.herd_factor,
        };
        config.alerts = AlertConfig {
            link_capacity: a.link_capacity.map(Rate::bytes_per_sec),
            link_threshold,
            link_for: a.link_for.unwrap_or(defaults.link_for),
            herd_factor,
            herd_min_per_minute: a
                .herd_min_per_minute
                .unwrap_or(defaults.herd_min_per_minute),
            behind_versions: a.behind_versions.unwrap_or(defaults.behind_versions),
            behind_for: a.behind_for.unwrap_or(defaults.behind_for),
            sync_failures: a.sync_failures.unwrap_or(defaults.sync_failures),
            quota_hold: a.quota_hold.unwrap_or(defaults.quota_hold),
            clear_for: a.clear_for.unwrap_or(defaults.clear_for),
        };
        config.webhook = match a.webhook {
            Some(url) => {
                Some(self.webhook(url, &a.webhook_attempts, a.webhook_timeout, a.webhook_retry)?)
            }
            None => None,
        };
        Ok(())
    }

    fn webhook(
        &self,
        url: Spanned<String>,
        attempts: &Option<Spanned<u32>>,
        timeout: Option<Duration>,
        retry: Option<Duration>,
    ) -> Result<WebhookConfig, ConfigError> {
        let span = url.span();
        let url = url.into_inner();
        let ok = reqwest::Url::parse(&url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(self.invalid(
                Some(span),
                format!("webhook `{url}` is not an http:// or https:// URL"),
            ));
        }
        let attempts = match attempts {
            Some(n) if !(1..=20).contains(n.get_ref()) => {
                return Err(self.invalid(
                    Some(n.span()),
                    "webhook_attempts must be between 1 and 20".into(),
                ));
            }
            Some(n) => *n.get_ref(),
            None => 5,
        };
        Ok(WebhookConfig {
            url,
            timeout: timeout.unwrap_or(Duration::from_secs(10)),
            attempts,
            retry_base: retry.unwrap_or(Duration::from_secs(2)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::FileConfig;
    use super::*;

    fn alerts(toml: &str) -> Result<AlertConfig, String> {
        let file = FileConfig::parse(toml).map_err(|e| e.to_string())?;
        let resolver = Resolver {
            path: None,
            text: toml,
        };
        resolver
            .observe(file.observe, file.alerts)
            .map(|c| c.alerts)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn link_capacity_is_written_like_every_other_rate() {
        let capacity = |rate: &str| {
            alerts(&format!("[alerts]\nlink_capacity = \"{rate}\"\n"))
                .unwrap()
                .link_capacity
        };
        assert_eq!(capacity("100Mbit"), Some(12_500_000));
        assert_eq!(capacity("100 Mbit/s"), Some(12_500_000));
        assert_eq!(capacity("100Mbps"), Some(12_500_000));
        assert_eq!(capacity("8kbit"), Some(1000));
        assert_eq!(capacity("10MB/s"), Some(10_000_000));
        assert_eq!(capacity("1MiB/s"), Some(1_048_576));
        assert_eq!(capacity("1Gbit"), Some(125_000_000));
        assert_eq!(alerts("[alerts]\n").unwrap().link_capacity, None);
    }

    #[test]
    fn a_bad_link_capacity_names_its_line_and_what_to_write() {
        for (bad, reason) in [
            ("100", "has no unit"),
            ("100mbps", "ambiguous"),
            ("12.5MB", "add `/s`"),
            ("fast", "not a rate"),
            ("0bit", "zero"),
        ] {
            let err = alerts(&format!("# c\n[alerts]\nlink_capacity = \"{bad}\"\n")).unwrap_err();
            assert!(
                err.contains("line 3") && err.contains(reason),
                "{bad}: {err}"
            );
        }
    }
}
