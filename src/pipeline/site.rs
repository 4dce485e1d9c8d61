//! Stage 2: virtual hosts. The Host header picks a site; unknown or absent
//! hosts get the default site.
//!
//! Each site holds its root directory open, so requests resolve paths
//! beneath that descriptor (see `file`) and a root renamed or replaced while
//! running is noticed only on reload, never half-way through a request.

// Keys come from the config (a request's Host only looks up): foldhash.
use foldhash::{HashMap, HashMapExt as _};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, Version};

use super::cache_control::CacheControl;
use super::fields::Fields;
use crate::config::{Config, SiteConfig};

/// One virtual host, ready to serve.
#[derive(Debug)]
pub struct Site {
    /// Name for logs and metrics.
    pub name: Arc<str>,
    /// The root as configured.
    pub root: PathBuf,
    /// The root directory, held open.
    pub root_dir: File,
    /// Whether directories are listed.
    pub directory_listing: bool,
    /// Validators and headers of recently served files.
    pub meta_cache: super::file::MetaCache,
    /// The `Cache-Control` values its files are served with.
    pub cache_control: CacheControl,
}

/// All sites and the host lookup.
#[derive(Debug)]
pub struct Router {
    default: Site,
    sites: Vec<Site>,
    exact: HashMap<String, usize>,
    /// (suffix including the leading dot, site index), longest first.
    wildcard: Vec<(String, usize)>,
    /// The `Cache-Control` values sent (a `404` is sent with `missing`).
    pub cache_control: CacheControl,
}

impl Router {
    /// Opens every site's root.
    pub fn build(config: &Config) -> std::io::Result<Self> {
        let default = Site::open(&config.default_site, &config.cache_control)?;
        let mut sites = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (index, site) in config.sites.iter().enumerate() {
            sites.push(Site::open(site, &config.cache_control)?);
            for host in &site.hosts {
                match host.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), index)),
                    None => {
                        exact.insert(host.clone(), index);
                    }
                }
            }
        }
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(Self {
            default,
            sites,
            exact,
            wildcard,
            cache_control: config.cache_control.clone(),
        })
    }

    /// The site for a Host value (port and trailing dot ignored, any case).
    pub fn select(&self, host: Option<&str>) -> &Site {
        // A mirror with one site (the default) has nothing to look up.
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return &self.default;
        }
        let Some(host) = host.map(strip_port) else {
            return &self.default;
        };
        let host = host.trim_end_matches('.');
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return &self.sites[i];
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map_or(&self.default, |&(_, i)| &self.sites[i])
    }
}

impl Site {
    fn open(config: &SiteConfig, cache_control: &CacheControl) -> std::io::Result<Self> {
        let root_dir = File::open(&config.root).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("site {}: root {}: {e}", config.name, config.root.display()),
            )
        })?;
        if !root_dir.metadata()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "site {}: root {} is not a directory",
                config.name,
                config.root.display()
            )));
        }
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            root: config.root.clone(),
            root_dir,
            directory_listing: config.directory_listing,
            meta_cache: Default::default(),
            cache_control: cache_control.clone(),
        })
    }
}

/// The request's host: the absolute-form authority, else the Host header.
/// `None` (outer) means the request is malformed: HTTP/1.1 requires Host.
pub fn request_host<'a, B>(req: &'a Request<B>, fields: &Fields<'a>) -> Option<Option<&'a str>> {
    if let Some(authority) = req.uri().authority() {
        return Some(Some(authority.host()));
    }
    match fields.host {
        // RFC 9112 §3.2: more than one Host line is a bad request; a proxy
        // in front might route on the other one.
        Some(_) if fields.several_hosts => None,
        Some(value) => value.to_str().ok().map(Some),
        None if req.version() == Version::HTTP_11 => None,
        None => Some(None),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port -> [v6]
        return rest.find(']').map_or(host, |end| &host[..end + 2]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessLogTarget, ConnectionLimits};

    fn site(name: &str, hosts: &[&str], root: &std::path::Path) -> SiteConfig {
        SiteConfig {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            root: root.into(),
            directory_listing: false,
        }
    }

    #[test]
    fn host_selects_site_case_and_port_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: vec![],
            listen_is_default: false,
            default_site: site("default", &[], dir.path()),
            sites: vec![
                site("a", &["a.example"], dir.path()),
                site("w", &["*.example"], dir.path()),
            ],
            access_log: AccessLogTarget::Off,
            limits: ConnectionLimits {
                max_connections: 1,
                header_read_timeout: std::time::Duration::from_secs(1),
                max_request_header_bytes: 8192,
            },
            shutdown_grace: std::time::Duration::from_secs(1),
            workers: 1,
            source: None,
            sync: crate::config::Config::resolve(&Default::default())
                .unwrap()
                .sync,
            beacon: None,
            admin: None,
            shape: Default::default(),
            admission: Default::default(),
            observe: Default::default(),
            cache_control: Default::default(),
            tls: None,
        };
        let router = Router::build(&config).unwrap();
        assert_eq!(&*router.select(Some("A.Example:8080")).name, "a");
        assert_eq!(&*router.select(Some("a.example.")).name, "a");
        assert_eq!(&*router.select(Some("b.example")).name, "w");
        assert_eq!(&*router.select(Some("example")).name, "default");
        assert_eq!(&*router.select(Some("[::1]:80")).name, "default");
        assert_eq!(&*router.select(None).name, "default");
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a"), "a");
    }
}
