//! Where the newest versions come from: the DNS TXT record (as freshclam
//! learns them), or, for upstreams that allow it, the headers of the CVDs
//! themselves. Header checks are refused against the official CDN, which
//! counts a partial download as a full one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::dns;

/// How to learn the newest versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// TXT record, e.g. `current.cvd.clamav.net`.
    Dns {
        /// Record name.
        name: String,
        /// Nameserver to ask instead of the system resolver.
        nameserver: Option<SocketAddr>,
    },
    /// `Range: bytes=0-511` of each `<db>.cvd` upstream.
    Http,
}

/// Default TXT record name.
pub const DEFAULT_DNS_NAME: &str = "current.cvd.clamav.net";

/// How long a DNS lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

impl VersionSource {
    /// Versions of `databases` and the whole TXT record, in DNS mode (empty
    /// in HTTP mode, where the engine reads CVD headers itself); a database
    /// the record does not list is an error.
    pub async fn lookup(
        &self,
        databases: &[String],
    ) -> Result<(BTreeMap<String, u32>, Option<dns::VersionRecord>), String> {
        let mut versions = BTreeMap::new();
        let mut txt = None;
        match self {
            VersionSource::Dns { name, nameserver } => {
                let record = dns::lookup(name, *nameserver, DNS_TIMEOUT)
                    .await
                    .map_err(|e| format!("DNS TXT {name}: {e}"))?;
                for db in databases {
                    let version = record
                        .version_of(db)
                        .ok_or_else(|| format!("DNS TXT {name} has no version for {db}"))?;
                    versions.insert(db.clone(), version);
                }
                txt = Some(record);
            }
            // Header checks go through the engine, which applies the same
            // cool-downs, budget and 403 handling as any other request.
            VersionSource::Http => {}
        }
        Ok((versions, txt))
    }
}

/// Whether `base` is the official ClamAV CDN (where header checks are banned).
pub fn is_official_cdn(base: &str) -> bool {
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or(base)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "clamav.net" || host.ends_with(".clamav.net")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_official_cdn() {
        assert!(is_official_cdn("https://database.clamav.net"));
        assert!(is_official_cdn("http://Database.ClamAV.net:80/"));
        assert!(!is_official_cdn("http://127.0.0.1:8080"));
        assert!(!is_official_cdn("https://notclamav.net"));
    }
}
