//! Which virtual host a name picks: exact names and `*.suffix` wildcards,
//! looked up the same way for a request's `Host` header (the pipeline's
//! router) and a TLS ClientHello's server name (the certificate table), so
//! the two can never disagree about which site a client is talking to.

// Keys come from the config (a request's Host only looks up): foldhash.
use foldhash::{HashMap, HashMapExt as _};

/// Host names to site indexes.
#[derive(Debug, Default)]
pub struct HostTable {
    exact: HashMap<String, usize>,
    /// (suffix including the leading dot, site index), longest first.
    wildcard: Vec<(String, usize)>,
}

impl HostTable {
    /// A table of each site's host patterns, sites numbered in order: a
    /// pattern is a lower-case name without trailing dot, or `*.example`
    /// for every name below it. Of wildcards, the longest suffix wins.
    pub fn new<'a>(sites: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (index, hosts) in sites.into_iter().enumerate() {
            for host in hosts {
                match host.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), index)),
                    None => {
                        exact.insert(host.clone(), index);
                    }
                }
            }
        }
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Self { exact, wildcard }
    }

    /// The site a name picks (trailing dot ignored, any case); `None` when
    /// no pattern matches and the default site answers.
    pub fn lookup(&self, name: Option<&str>) -> Option<usize> {
        // A mirror with one site (the default) has nothing to look up.
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        let name = name?.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|&(_, i)| i)
    }

    /// The site a `Host` header value picks (its port ignored).
    pub fn lookup_host(&self, host: Option<&str>) -> Option<usize> {
        self.lookup(host.map(strip_port))
    }
}

/// `host[:port]` or `[v6]:port` without the port.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.find(']').map_or(host, |end| &host[..end + 2]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}
