//! Resolution of the settings beyond serving: the sync engine (`[sync]`),
//! the DNS consistency beacon (`[beacon]`) and the admin API (`[admin]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{FileAdmin, FileBeacon, FileSync};
use super::{ConfigError, Resolver};
use crate::config::flags::{ServeArgs, VersionCheck};
use crate::cvd::TrustedKeys;
use crate::cvd::sign::{self, SignRoots, SignVerifier};
use crate::sync::{self, SignaturePolicy, SyncConfig, VersionSource};

/// Default TTL of beacon answers.
pub const DEFAULT_BEACON_TTL: Duration = Duration::from_secs(60);

/// Resolved `[sync]` settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Upstream base URL.
    pub upstream: String,
    /// Where versions come from.
    pub versions: VersionSource,
    /// Databases to mirror.
    pub databases: Vec<String>,
    /// Background interval in `serve` (`None`: no background sync).
    pub interval: Option<Duration>,
    /// cdiff history fetched when missing.
    pub backfill: u32,
    /// cdiff retention.
    pub retention: Duration,
    /// Trusted signing keys.
    pub keys: TrustedKeys,
    /// Proxy for upstream requests.
    pub proxy: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Stall timeout.
    pub stall_timeout: Duration,
    /// Attempts per file per pass.
    pub attempts: u32,
    /// Request budget per file per hour.
    pub max_requests_per_file_per_hour: u32,
    /// Wait for a required cdiff missing upstream.
    pub missing_cdiff_grace: Duration,
    /// First retry delay after a retryable error.
    pub retry_base: Duration,
    /// Which signatures a file must carry.
    pub signatures: SignaturePolicy,
    /// Roots and feature level for `.sign` files.
    pub sign_verifier: SignVerifier,
    /// How long a replaced CVD's `.sign` stays published.
    pub sign_grace: Duration,
}

impl SyncSettings {
    /// The engine configuration for publishing into `root`.
    pub fn engine_config(&self, root: PathBuf) -> SyncConfig {
        let mut config = SyncConfig::new(root, &self.upstream);
        config.versions = self.versions.clone();
        config.databases = self.databases.clone();
        config.backfill = self.backfill;
        config.retention = self.retention;
        config.keys = self.keys.clone();
        config.proxy = self.proxy.clone();
        config.connect_timeout = self.connect_timeout;
        config.stall_timeout = self.stall_timeout;
        config.attempts = self.attempts;
        config.max_requests_per_file_per_hour = self.max_requests_per_file_per_hour;
        config.missing_cdiff_grace = self.missing_cdiff_grace;
        config.retry_base = self.retry_base;
        config.signatures = self.signatures;
        config.sign_verifier = self.sign_verifier.clone();
        config.sign_grace = self.sign_grace;
        config
    }
}

/// Resolved `[beacon]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconSettings {
    /// UDP and TCP address.
    pub listen: SocketAddr,
    /// Record name.
    pub name: String,
    /// Answer TTL.
    pub ttl: Duration,
}

/// Resolved `[admin]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Bearer token file (mutating actions are refused without one).
    pub token_file: Option<PathBuf>,
}

impl Resolver<'_> {
    pub(super) fn sync(
        &self,
        args: &ServeArgs,
        file: Option<FileSync>,
    ) -> Result<SyncSettings, ConfigError> {
        let file = file.unwrap_or_default();
        let flags = &args.sync;
        let upstream = match (&flags.upstream, &file.upstream) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.get_ref().clone(),
            (None, None) => sync::DEFAULT_UPSTREAM.to_owned(),
        };
        // `file:///path`: a bundle from `cvdmirror export`, or a directory.
        let local = upstream.starts_with("file://");
        if !(upstream.starts_with("http://") || upstream.starts_with("https://") || local) {
            let span = file.upstream.as_ref().map(|u| u.span());
            return Err(self.invalid(
                span,
                format!("upstream `{upstream}` must be an http://, https:// or file:// URL"),
            ));
        }
        let check = flags
            .version_check
            .or(file.version_check)
            .unwrap_or(VersionCheck::Dns);
        let versions = match check {
            VersionCheck::Dns => VersionSource::Dns {
                name: flags
                    .dns_name
                    .clone()
                    .or(file.dns_name)
                    .unwrap_or_else(|| sync::versions::DEFAULT_DNS_NAME.to_owned()),
                nameserver: flags.nameserver.or(file.nameserver),
            },
            VersionCheck::Http => {
                if sync::versions::is_official_cdn(&upstream) {
                    return Err(self.invalid(
                        None,
                        "version_check = \"http\" is not allowed against the official ClamAV CDN (it counts header checks as downloads)".into(),
                    ));
                }
                VersionSource::Http
            }
        };
        let databases_span = file.databases.as_ref().map(|d| d.span());
        let databases = if !flags.databases.is_empty() {
            flags.databases.clone()
        } else if let Some(dbs) = file.databases {
            dbs.into_inner()
        } else {
            sync::DEFAULT_DATABASES
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        if databases.is_empty() {
            return Err(self.invalid(
                databases_span,
                "at least one database must be mirrored".into(),
            ));
        }
        if let Some(bad) = databases.iter().find(|db| {
            db.is_empty()
                || !db
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(self.invalid(
                databases_span,
                format!("`{bad}` is not a database name (like daily, main, bytecode)"),
            ));
        }
        let mut keys = TrustedKeys::official();
        if let Some(entries) = &file.trusted_keys {
            for entry in entries.get_ref() {
                keys.add_config(entry).map_err(|e| {
                    self.invalid(
                        Some(entries.span()),
                        format!("trusted key `{}`: {e}", abbreviate(entry)),
                    )
                })?;
            }
        }
        for entry in &flags.trust.trusted_keys {
            keys.add_config(entry).map_err(|e| {
                self.invalid(None, format!("--trusted-key `{}`: {e}", abbreviate(entry)))
            })?;
        }
        let attempts = file.attempts.as_ref().map_or(3, |a| *a.get_ref());
        if attempts == 0 {
            return Err(self.invalid(
                file.attempts.as_ref().map(|a| a.span()),
                "attempts must be at least 1".into(),
            ));
        }
        let budget = file
            .max_requests_per_file_per_hour
            .as_ref()
            .map_or(sync::DEFAULT_MAX_REQUESTS_PER_FILE_PER_HOUR, |b| {
                *b.get_ref()
            });
        if !(1..=10).contains(&budget) {
            return Err(self.invalid(
                file.max_requests_per_file_per_hour
                    .as_ref()
                    .map(|b| b.span()),
                "max_requests_per_file_per_hour must be between 1 and 10 (upstream etiquette)"
                    .into(),
            ));
        }
        let signatures = match (&flags.trust.signatures, &file.signatures) {
            (Some(policy), _) => *policy,
            (None, Some(text)) => text
                .get_ref()
                .parse()
                .map_err(|e| self.invalid(Some(text.span()), format!("signatures: {e}")))?,
            (None, None) => SignaturePolicy::default(),
        };
        let mut roots = SignRoots::official();
        if let Some(paths) = &file.sign_roots {
            for path in paths.get_ref() {
                roots
                    .add_file(std::path::Path::new(path))
                    .map_err(|e| self.invalid(Some(paths.span()), format!("sign_roots: {e}")))?;
            }
        }
        for path in &flags.trust.sign_roots {
            roots
                .add_file(path)
                .map_err(|e| self.invalid(None, format!("--sign-root: {e}")))?;
        }
        let flevel = file
            .sign_flevel
            .as_ref()
            .map_or(sign::CLAMAV_FLEVEL, |f| *f.get_ref());
        if flevel < sign::MIN_SIGN_FLEVEL {
            return Err(self.invalid(
                file.sign_flevel.as_ref().map(|f| f.span()),
                format!(
                    "sign_flevel must be at least {} (the level that introduced .sign files)",
                    sign::MIN_SIGN_FLEVEL
                ),
            ));
        }
        let proxy = match (&flags.proxy, &file.proxy) {
            (Some(url), _) => {
                Some(check_proxy(url).map_err(|e| self.invalid(None, format!("--proxy: {e}")))?)
            }
            (None, Some(url)) => Some(
                check_proxy(url.get_ref())
                    .map_err(|e| self.invalid(Some(url.span()), format!("proxy: {e}")))?,
            ),
            (None, None) => None,
        };
        let interval = args.sync_interval.or(file.interval);
        if interval.is_some_and(|i| i < Duration::from_secs(60)) {
            return Err(self.invalid(None, "sync interval must be at least 1m".into()));
        }
        Ok(SyncSettings {
            upstream,
            versions,
            databases,
            interval,
            backfill: file.backfill.unwrap_or(sync::DEFAULT_BACKFILL),
            retention: file.retention.unwrap_or(sync::DEFAULT_RETENTION),
            keys,
            proxy,
            connect_timeout: file.connect_timeout.unwrap_or(Duration::from_secs(30)),
            stall_timeout: file.stall_timeout.unwrap_or(Duration::from_secs(60)),
            attempts,
            max_requests_per_file_per_hour: budget,
            missing_cdiff_grace: file
                .missing_cdiff_grace
                .unwrap_or(sync::DEFAULT_MISSING_CDIFF_GRACE),
            retry_base: file.retry_base.unwrap_or(Duration::from_secs(2)),
            signatures,
            sign_verifier: SignVerifier::new(roots).flevel(flevel),
            sign_grace: file.sign_grace.unwrap_or(sync::DEFAULT_SIGN_GRACE),
        })
    }

    pub(super) fn beacon(
        &self,
        args: &ServeArgs,
        file: Option<FileBeacon>,
    ) -> Result<Option<BeaconSettings>, ConfigError> {
        let (file_listen, file_name, ttl) = match file {
            Some(f) => (f.listen, f.name, f.ttl),
            None => (None, None, None),
        };
        let listen = args.beacon_listen.or(file_listen);
        let name_span = file_name.as_ref().map(|n| n.span());
        let name = args
            .beacon_name
            .clone()
            .or(file_name.map(|n| n.into_inner()));
        match (listen, name) {
            (None, None) => Ok(None),
            (Some(listen), Some(name)) => Ok(Some(BeaconSettings {
                listen,
                name: name.trim_end_matches('.').to_ascii_lowercase(),
                ttl: ttl.unwrap_or(DEFAULT_BEACON_TTL),
            })),
            (Some(_), None) => Err(self.invalid(
                None,
                "the beacon needs a name (--beacon-name or [beacon] name)".into(),
            )),
            (None, Some(_)) => Err(self.invalid(
                name_span,
                "the beacon needs an address (--beacon-listen or [beacon] listen)".into(),
            )),
        }
    }

    pub(super) fn admin(
        &self,
        args: &ServeArgs,
        file: Option<FileAdmin>,
    ) -> Result<Option<AdminSettings>, ConfigError> {
        let (file_listen, file_token) = match file {
            Some(f) => (f.listen, f.token_file),
            None => (None, None),
        };
        let token_file = args
            .admin_token_file
            .clone()
            .or(file_token)
            .map(|p| self.relative_to_file(&p));
        match args.admin_listen.or(file_listen) {
            Some(listen) => Ok(Some(AdminSettings { listen, token_file })),
            None if token_file.is_some() => Err(self.invalid(
                None,
                "an admin token file is set but no admin listener (--admin-listen)".into(),
            )),
            None => Ok(None),
        }
    }
}

/// Keys are long; error messages show their start.
fn abbreviate(entry: &str) -> String {
    let mut short: String = entry.chars().take(24).collect();
    if short.len() < entry.len() {
        short.push('…');
    }
    short
}

/// A proxy URL reqwest can use: `http://` or `https://` (or `socks5://`
/// would need a feature we do not build), with a host.
fn check_proxy(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "proxy scheme `{}` is not supported (use http:// or https://)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the proxy URL names no host".into());
    }
    Ok(url.to_owned())
}
