//! Stage 2: virtual hosts. The Host header picks a site; unknown or absent
//! hosts get the default site.
//!
//! Each site holds its root directory open, so requests resolve paths
//! beneath that descriptor (see `file`) and a root renamed or replaced while
//! running is noticed only on reload, never half-way through a request.

use cvdmirror_exchange::host::HostTable;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, Version};

use super::cache_control::CacheControl;
use super::fields::Fields;

/// One virtual host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// Name for logs.
    pub name: String,
    /// Lower-case host names without trailing dot; `*.x` matches subdomains of x.
    pub hosts: Vec<String>,
    /// Directory served.
    pub root: PathBuf,
    /// Whether directories are listed as HTML.
    pub directory_listing: bool,
}

/// The virtual hosts a [`Router`] is built from.
#[derive(Debug, Clone)]
pub struct SitesConfig {
    /// Serves every host no other site names.
    pub default_site: SiteConfig,
    /// Sites selected by their `hosts`, in configured order.
    pub sites: Vec<SiteConfig>,
    /// The `Cache-Control` values answers are sent with.
    pub cache_control: CacheControl,
}

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
    hosts: HostTable,
    /// The `Cache-Control` values sent (a `404` is sent with `missing`).
    pub cache_control: CacheControl,
}

impl Router {
    /// Opens every site's root.
    pub fn build(config: SitesConfig) -> std::io::Result<Self> {
        let default = Site::open(&config.default_site, &config.cache_control)?;
        let mut sites = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            sites.push(Site::open(site, &config.cache_control)?);
        }
        let hosts = HostTable::new(config.sites.iter().map(|site| site.hosts.as_slice()));
        Ok(Self {
            default,
            sites,
            hosts,
            cache_control: config.cache_control,
        })
    }

    /// The site for a Host value (port and trailing dot ignored, any case).
    pub fn select(&self, host: Option<&str>) -> &Site {
        self.hosts
            .lookup_host(host)
            .map_or(&self.default, |i| &self.sites[i])
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

#[cfg(test)]
mod tests {
    use super::*;
    use cvdmirror_exchange::host::strip_port;

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
        let config = SitesConfig {
            default_site: site("default", &[], dir.path()),
            sites: vec![
                site("a", &["a.example"], dir.path()),
                site("w", &["*.example"], dir.path()),
            ],
            cache_control: Default::default(),
        };
        let router = Router::build(config).unwrap();
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
