//! The one validated configuration every component is built from.
//!
//! Resolution happens in stages (ripgrep's pattern): built-in defaults, then
//! the TOML file, then command-line flags and their environment variables.
//! The result is checked as a whole, and every error names the file and line
//! that caused it, so a bad config refuses to start (or, on `SIGHUP`, is
//! rejected while the running one stays) with a reason a person can act on.

mod control;
mod file;
pub mod flags;
mod fleet;
pub mod observe;
mod services;
mod tls;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub use cvdmirror_access_log::AccessLogTarget;
pub use cvdmirror_pipeline::site::{SiteConfig, SitesConfig};
pub use cvdmirror_server::{ConnectionLimits, ServerConfig};
use file::FileConfig;
use flags::ServeArgs;
pub use fleet::{DEFAULT_REDIRECT_ABOVE, FleetSettings};
pub use services::{AdminSettings, BeaconSettings, SyncSettings};
use toml::Spanned;

/// Port of the built-in listen addresses.
pub const DEFAULT_PORT: u16 = 8080;
/// Root of the default site when neither flag nor file names one.
pub const DEFAULT_ROOT: &str = "mirror";
/// Default connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time to receive a request head (also the keep-alive idle timeout).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time shutdown waits for transfers in flight.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Most connection-serving threads `workers` accepts.
pub const MAX_WORKERS: usize = 1024;

/// Default `workers`: one per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Default largest request head. freshclam sends well under 1 KiB.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 16 * 1024;

/// The validated settings of `cvdmirror serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// True when `listen` is the built-in dual-stack default, which tolerates
    /// a host without IPv6.
    pub listen_is_default: bool,
    /// The site for requests whose Host matches no other.
    pub default_site: SiteConfig,
    /// Virtual hosts, matched in order.
    pub sites: Vec<SiteConfig>,
    /// Where the access log goes.
    pub access_log: AccessLogTarget,
    /// Connection handling limits.
    pub limits: ConnectionLimits,
    /// How long shutdown waits for transfers in flight.
    pub shutdown_grace: Duration,
    /// Threads serving connections, each with its own event loop.
    pub workers: usize,
    /// The file this was read from, re-read on `SIGHUP`.
    pub source: Option<PathBuf>,
    /// Upstream and sync engine.
    pub sync: SyncSettings,
    /// DNS consistency beacon, if enabled.
    pub beacon: Option<BeaconSettings>,
    /// Fleet membership through Redis, if enabled.
    pub fleet: Option<FleetSettings>,
    /// Admin API, if enabled.
    pub admin: Option<AdminSettings>,
    /// Bandwidth shaping.
    pub shape: crate::shape::ShapeConfig,
    /// Admission limits.
    pub admission: crate::limits::LimitsConfig,
    /// Status page, metrics and alerts.
    pub observe: crate::observe::ObserveConfig,
    /// `Cache-Control` per kind of answer.
    pub cache_control: crate::pipeline::cache_control::CacheControl,
    /// HTTPS listeners, certificates and client-certificate rules; `None`
    /// without an HTTPS listener.
    pub tls: Option<crate::tls::TlsConfig>,
}

/// Why the configuration was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names line and column.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{}{reason}", location(.path, *.line))]
    Invalid {
        /// The file, if the value came from one.
        path: Option<PathBuf>,
        /// 1-based line in that file.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

fn location(path: &Option<PathBuf>, line: Option<usize>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!("config file {}, line {l}: ", p.display()),
        (Some(p), None) => format!("config file {}: ", p.display()),
        _ => String::new(),
    }
}

impl Config {
    /// The virtual hosts, as the request pipeline's router takes them.
    pub fn sites(&self) -> SitesConfig {
        SitesConfig {
            default_site: self.default_site.clone(),
            sites: self.sites.clone(),
            cache_control: self.cache_control.clone(),
        }
    }

    /// What the HTTP server is built from.
    pub fn server(&self) -> ServerConfig {
        let shape = &self.shape;
        let socket_pacing = shape
            .kernel_pacing
            .then(|| cvdmirror_formats::Rate::min_cap(shape.client_rate, shape.link_rate))
            .flatten()
            .map(|rate| rate.bytes_per_sec());
        ServerConfig {
            sites: self.sites(),
            proxies: self.admission.proxies.clone(),
            connections: self.limits,
            shutdown_grace: self.shutdown_grace,
            socket_pacing,
            workers: self.workers,
            tls: self.tls.clone(),
        }
    }

    /// Resolves flags over the config file (if any) over the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let (file, text) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = FileConfig::parse(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (file, text)
            }
            None => (FileConfig::default(), String::new()),
        };
        Resolver {
            path: args.config.as_deref(),
            text: &text,
        }
        .resolve(args, file)
    }
}

/// Turns byte spans of the file into line numbers for error messages.
struct Resolver<'a> {
    path: Option<&'a Path>,
    text: &'a str,
}

impl Resolver<'_> {
    fn invalid(&self, span: Option<std::ops::Range<usize>>, reason: String) -> ConfigError {
        let line = span.map(|s| {
            self.text
                .get(..s.start)
                .unwrap_or(self.text)
                .matches('\n')
                .count()
                + 1
        });
        ConfigError::Invalid {
            path: self.path.map(Path::to_path_buf),
            line,
            reason,
        }
    }

    fn resolve(&self, args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        let (listen, listen_is_default) = if !args.listen.is_empty() {
            (args.listen.clone(), false)
        } else if let Some(listen) = file.listen {
            if listen.is_empty() {
                return Err(self.invalid(None, "`listen` must name at least one address".into()));
            }
            (listen, false)
        } else {
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, DEFAULT_PORT));
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT));
            (vec![v6, v4], true)
        };
        if let Some(dup) = listen
            .iter()
            .enumerate()
            .find(|(i, a)| listen[..*i].contains(a))
        {
            return Err(self.invalid(None, format!("listen address {} is given twice", dup.1)));
        }

        let default_root = match (&args.root, &file.root) {
            (Some(root), _) => root.clone(),
            (None, Some(root)) => self.relative_to_file(root.get_ref()),
            (None, None) => PathBuf::from(DEFAULT_ROOT),
        };
        let default_site_root = default_root.clone();
        let default_site = SiteConfig {
            name: "default".into(),
            hosts: Vec::new(),
            root: default_root,
            directory_listing: args.directory_listing || file.directory_listing.unwrap_or(false),
        };

        let site_tls: Vec<tls::SiteTlsKeys> = file.site.iter().map(tls::SiteTlsKeys::of).collect();
        let mut sites = Vec::with_capacity(file.site.len());
        for site in file.site {
            let span = site.hosts.span();
            let mut hosts = Vec::new();
            for host in site.hosts.into_inner() {
                let host = normalize_host_pattern(&host).ok_or_else(|| {
                    self.invalid(
                        Some(span.clone()),
                        format!("`{host}` is not a valid host name"),
                    )
                })?;
                hosts.push(host);
            }
            if hosts.is_empty() {
                return Err(self.invalid(Some(span), "a [[site]] needs at least one host".into()));
            }
            let taken = sites
                .iter()
                .flat_map(|s: &SiteConfig| &s.hosts)
                .find(|h| hosts.contains(h));
            if let Some(host) = taken {
                return Err(self.invalid(Some(span), format!("host `{host}` belongs to two sites")));
            }
            let root_span = site.root.span();
            let root = self.relative_to_file(site.root.get_ref());
            if !root.is_dir() {
                return Err(self.invalid(
                    Some(root_span),
                    format!("site root {} is not a directory", root.display()),
                ));
            }
            sites.push(SiteConfig {
                name: site.name.unwrap_or_else(|| hosts[0].clone()),
                hosts,
                root,
                directory_listing: site.directory_listing,
            });
        }

        let access_log = match args.access_log.as_deref().or(file.access_log.as_deref()) {
            None | Some("-") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                return Err(self.invalid(None, "access_log must be a path, `-` or `off`".into()));
            }
            Some(path) => AccessLogTarget::File(PathBuf::from(path)),
        };

        let max_connections = match (args.max_conns, &file.max_connections) {
            (Some(n), _) => n,
            (None, Some(n)) => *n.get_ref(),
            (None, None) => DEFAULT_MAX_CONNECTIONS,
        };
        if max_connections == 0 {
            let span = file.max_connections.as_ref().map(Spanned::span);
            return Err(self.invalid(span, "max_connections must be at least 1".into()));
        }
        let max_request_header_bytes = file
            .max_request_header_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_REQUEST_HEADER_BYTES, |n| *n.get_ref());
        if !(1024..=1024 * 1024).contains(&max_request_header_bytes) {
            let span = file.max_request_header_bytes.as_ref().map(Spanned::span);
            return Err(self.invalid(
                span,
                "max_request_header_bytes must be between 1024 and 1048576".into(),
            ));
        }
        let header_read_timeout = file
            .header_read_timeout
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
        if header_read_timeout.is_zero() {
            return Err(self.invalid(None, "header_read_timeout must be positive".into()));
        }

        let workers = match &file.workers {
            None => default_workers(),
            Some(n) if (1..=MAX_WORKERS).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(self.invalid(
                    Some(n.span()),
                    format!("workers must be between 1 and {MAX_WORKERS}"),
                ));
            }
        };

        let tls = self.tls(args, file.tls, site_tls, &listen, &sites)?;
        Ok(Config {
            listen,
            listen_is_default,
            default_site,
            sites,
            access_log,
            limits: ConnectionLimits {
                max_connections,
                header_read_timeout,
                max_request_header_bytes,
            },
            shutdown_grace: file.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            workers,
            source: self.path.map(Path::to_path_buf),
            sync: self.sync(args, file.sync)?,
            beacon: self.beacon(args, file.beacon)?,
            fleet: self.fleet(args, file.fleet)?,
            admin: self.admin(args, file.admin)?,
            shape: self.shape(args, file.shape)?,
            admission: self.limits(args, file.limits, &default_site_root)?,
            observe: self.observe(file.observe, file.alerts)?,
            cache_control: self.cache_control(file.cache_control)?,
            tls,
        })
    }

    fn cache_control(
        &self,
        file: Option<file::FileCacheControl>,
    ) -> Result<crate::pipeline::cache_control::CacheControl, ConfigError> {
        use crate::pipeline::cache_control::CacheControl;
        let mut policy = CacheControl::default();
        let Some(file) = file else {
            return Ok(policy);
        };
        for (key, slot, value) in [
            ("changing", &mut policy.changing, file.changing),
            ("versioned", &mut policy.versioned, file.versioned),
            ("missing", &mut policy.missing, file.missing),
        ] {
            if let Some(text) = value {
                *slot = CacheControl::value(text.get_ref()).map_err(|e| {
                    self.invalid(Some(text.span()), format!("cache_control.{key}: {e}"))
                })?;
            }
        }
        Ok(policy)
    }

    /// The line `key = ...` of the table whose header is at `table`, if
    /// the key is written there (a key left at its default has no line).
    fn key_span(
        &self,
        table: &std::ops::Range<usize>,
        key: &str,
    ) -> Option<std::ops::Range<usize>> {
        let text = self.text.get(table.start..)?;
        let mut offset = table.start;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let line_start = line.trim_start();
            if i > 0 && line_start.starts_with('[') {
                return None;
            }
            let rest = line_start.strip_prefix(key).map(str::trim_start);
            if rest.is_some_and(|r| r.starts_with('=')) {
                return Some(offset..offset + line.len());
            }
            offset += line.len();
        }
        None
    }

    /// Relative paths in the file are relative to the file, not the working directory.
    fn relative_to_file(&self, path: &Path) -> PathBuf {
        match self.path.and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// Lower-cases a host pattern and checks its characters; `None` if invalid.
fn normalize_host_pattern(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let ipv6 = host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1].parse::<Ipv6Addr>().is_ok();
    (valid || ipv6).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml: &str, args: ServeArgs) -> Result<Config, ConfigError> {
        let file = FileConfig::parse(toml).unwrap();
        Resolver {
            path: Some(Path::new("/etc/cvdmirror.toml")),
            text: toml,
        }
        .resolve(&args, file)
    }

    #[test]
    fn defaults_are_dual_stack_on_8080_serving_mirror() {
        let c = resolve("", ServeArgs::default()).unwrap();
        assert!(c.listen_is_default);
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen.iter().all(|a| a.port() == 8080));
        assert_eq!(c.default_site.root, PathBuf::from("mirror"));
        assert_eq!(c.access_log, AccessLogTarget::Stdout);
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn flags_override_the_file() {
        let args = ServeArgs {
            max_conns: Some(5),
            root: Some("/x".into()),
            ..Default::default()
        };
        let c = resolve("max_connections = 7\nroot = \"/y\"", args).unwrap();
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.default_site.root, PathBuf::from("/x"));
    }

    #[test]
    fn relative_roots_are_relative_to_the_file() {
        let c = resolve("root = \"db\"", ServeArgs::default()).unwrap();
        assert_eq!(c.default_site.root, PathBuf::from("/etc/db"));
    }

    #[test]
    fn a_burst_that_cannot_reach_the_cap_names_its_line() {
        let text =
            "root = \"/x\"\n\n[shape]\nlink_rate = \"85Mbit\"\ntick = \"2ms\"\nburst = \"2ms\"\n";
        let err = resolve(text, ServeArgs::default()).unwrap_err().to_string();
        assert!(
            err.contains("line 6") && err.contains("burst 2ms cannot reach the cap"),
            "{err}"
        );
        // A key left at its default has no line: the table's is named.
        let text = "[shape]\nlink_rate = \"85Mbit\"\ntick = \"5ms\"\n";
        let err = resolve(text, ServeArgs::default()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("7ms"), "{err}");
    }

    #[test]
    fn a_fleet_resolves_with_its_affinity_and_refuses_what_cannot_work() {
        let args = ServeArgs {
            fleet: Some("redis://:secret@127.0.0.1:6379/0".into()),
            node: Some("a".into()),
            public_url: Some("http://a.example".into()),
            ..Default::default()
        };
        let text = "root = \"/x\"\n[fleet]\nredirect_above = 0.5\n\n\
                    [[fleet.affinity]]\nclients = \"10.1.2.3/16\"\nnode = \"b\"\n";
        let fleet = resolve(text, args.clone()).unwrap().fleet.unwrap();
        assert_eq!(fleet.redirect_above, 0.5);
        assert_eq!(fleet.fleet.node, "a");
        assert_eq!(
            fleet.affinity,
            vec![("10.1.0.0/16".parse().unwrap(), "b".to_owned())]
        );
        let err = resolve(
            "root = \"/x\"\n[fleet]\nredirect_above = 1.5\n",
            args.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3") && err.contains("redirect_above"),
            "{err}"
        );
        let err = resolve("[fleet]\nnode = \"a\"\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Redis URL"), "{err}");
        let no_url = ServeArgs {
            public_url: None,
            ..args
        };
        let err = resolve("root = \"/x\"", no_url).unwrap_err().to_string();
        assert!(err.contains("--public-url"), "{err}");
        assert!(
            resolve("root = \"/x\"", ServeArgs::default())
                .unwrap()
                .fleet
                .is_none()
        );
    }

    #[test]
    fn workers_default_to_one_per_cpu_and_refuse_zero() {
        let c = resolve("root = \"/x\"", ServeArgs::default()).unwrap();
        assert_eq!(c.workers, default_workers());
        assert!(c.workers >= 1);
        let c = resolve("workers = 3\nroot = \"/x\"", ServeArgs::default()).unwrap();
        assert_eq!(c.workers, 3);
        let err = resolve("root = \"/x\"\nworkers = 0\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("workers"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_line() {
        let err = resolve("\n\nmax_connections = 0\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("max_connections"),
            "{err}"
        );
        let err = resolve(
            "[[site]]\nhosts = [\"bad host\"]\nroot = \"/\"\n",
            ServeArgs::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn signature_settings_resolve_and_bad_ones_name_their_line() {
        let c = resolve("", ServeArgs::default()).unwrap();
        assert_eq!(c.sync.signatures, crate::sync::SignaturePolicy::Either);
        assert_eq!(
            c.sync.sign_verifier.roots().names().len(),
            1,
            "the production root"
        );
        assert_eq!(
            c.sync.sign_verifier.feature_level(),
            crate::cvd::sign::CLAMAV_FLEVEL
        );
        assert_eq!(
            c.sync.missing_cdiff_grace,
            std::time::Duration::from_secs(300)
        );

        let c = resolve(
            "[sync]\nsignatures = \"both\"\nsign_flevel = 240\n",
            ServeArgs::default(),
        )
        .unwrap();
        assert_eq!(c.sync.signatures, crate::sync::SignaturePolicy::Both);
        assert_eq!(c.sync.sign_verifier.feature_level(), 240);

        let err = resolve("[sync]\n\nsignatures = \"any\"\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("either"), "{err}");
        let err = resolve("[sync]\nsign_flevel = 229\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("230"), "{err}");
        let err = resolve(
            "[sync]\nsign_roots = [\"/nonexistent/root.pem\"]\n",
            ServeArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 2") && err.contains("/nonexistent/root.pem"),
            "{err}"
        );

        // The production root again: two roots with one name are refused.
        let dir = tempfile::tempdir().unwrap();
        let again = dir.path().join("again.pem");
        std::fs::write(&again, crate::cvd::sign::OFFICIAL_ROOT_PEM).unwrap();
        let args = ServeArgs {
            sync: crate::config::flags::SyncArgs {
                trust: crate::config::flags::TrustArgs {
                    sign_roots: vec![again],
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let err = resolve("", args).unwrap_err().to_string();
        assert!(
            err.contains("--sign-root") && err.contains("already trusted"),
            "{err}"
        );
    }

    #[test]
    fn a_host_cannot_belong_to_two_sites() {
        let toml = "[[site]]\nhosts = [\"a.example\"]\nroot = \"/\"\n[[site]]\nhosts = [\"A.example.\"]\nroot = \"/\"\n";
        let err = resolve(toml, ServeArgs::default()).unwrap_err().to_string();
        assert!(err.contains("two sites") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn host_patterns_are_normalized() {
        assert_eq!(
            normalize_host_pattern("Mirror.Example.ORG."),
            Some("mirror.example.org".into())
        );
        assert_eq!(
            normalize_host_pattern("*.example.org"),
            Some("*.example.org".into())
        );
        assert_eq!(normalize_host_pattern("[::1]"), Some("[::1]".into()));
        assert_eq!(normalize_host_pattern("a b"), None);
        assert_eq!(normalize_host_pattern(""), None);
    }
}
