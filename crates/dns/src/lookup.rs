//! Looking up a version record: how the mirror's sync learns what upstream
//! has without touching the CDN (the etiquette ClamAV asks of mirrors).
//!
//! Each lookup builds its own resolver, so nothing is cached between calls:
//! the record's TTL is short and the sync asks rarely, and a fresh resolver
//! means a test sees a changed record at once. Errors say what failed in
//! words an operator can act on, and whether trying again later may help.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, RecordType};
use thiserror::Error;

use super::record::{ParseError, VersionRecord};

/// How to reach the name server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP, and TCP only when an answer comes back truncated.
    #[default]
    Udp,
    /// TCP only.
    Tcp,
}

/// Settings for [`lookup_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupOptions {
    /// Ask this server (any port) instead of the system's resolvers from
    /// `/etc/resolv.conf`.
    pub nameserver: Option<SocketAddr>,
    /// Give up after this long in total.
    pub timeout: Duration,
    /// Transport to an explicit `nameserver` (the system configuration
    /// decides otherwise).
    pub transport: Transport,
}

/// Why no version record could be had.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LookupError {
    /// The name is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The system resolver configuration could not be read.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    /// No answer in time.
    #[error("DNS lookup of {name} timed out after {timeout:?}")]
    Timeout {
        /// The name asked for.
        name: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The name does not exist.
    #[error("{name} does not exist (NXDOMAIN)")]
    NxDomain {
        /// The name asked for.
        name: String,
    },
    /// The name exists but has no TXT record.
    #[error("{name} has no TXT record")]
    NoTxt {
        /// The name asked for.
        name: String,
    },
    /// The server answered with an error code such as `SERVFAIL`.
    #[error("DNS server answered {code} for {name}")]
    ServerError {
        /// The name asked for.
        name: String,
        /// The response code, e.g. `Server Failure`.
        code: String,
    },
    /// No TXT record of the name is a version record.
    #[error("TXT record of {name} is not a version record ({text:?}): {source}")]
    Malformed {
        /// The name asked for.
        name: String,
        /// The first TXT record's text (cut to 255 bytes).
        text: String,
        /// Why it does not parse.
        source: ParseError,
    },
    /// Any other failure: network unreachable, connection refused, ...
    #[error("DNS lookup of {name} failed: {reason}")]
    Transport {
        /// The name asked for.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl LookupError {
    /// Whether asking again soon may succeed (as opposed to a record that
    /// is missing or wrong, which needs someone to fix it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::ServerError { .. } | Self::Transport { .. }
        )
    }
}

/// Looks up the version record at `name`, asking `nameserver` if given and
/// the system resolvers otherwise, within `timeout`.
///
/// The strings of one TXT record are joined (RFC 7208 style) before
/// parsing. When there are several TXT records, the first (in answer order)
/// that parses wins; if none parses, the first one's error is returned.
pub async fn lookup(
    name: &str,
    nameserver: Option<SocketAddr>,
    timeout: Duration,
) -> Result<VersionRecord, LookupError> {
    let options = LookupOptions {
        nameserver,
        timeout,
        transport: Transport::Udp,
    };
    lookup_with(name, &options).await
}

/// [`lookup`] with every setting spelled out.
pub async fn lookup_with(
    name: &str,
    options: &LookupOptions,
) -> Result<VersionRecord, LookupError> {
    let fqdn = super::absolute_name(name).map_err(|reason| LookupError::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let shown = fqdn.to_ascii();
    let resolver = resolver(options)?;
    let timed_out = || LookupError::Timeout {
        name: shown.clone(),
        timeout: options.timeout,
    };
    let answer = tokio::time::timeout(options.timeout, resolver.lookup(fqdn, RecordType::TXT))
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| classify(error, &shown, options.timeout))?;
    let texts = answer
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(joined(txt)),
            _ => None,
        });
    first_version_record(&shown, texts)
}

/// The strings of one TXT record as one text. Invalid UTF-8 is replaced,
/// so the parser reports it instead of the lookup hiding it.
fn joined(txt: &TXT) -> String {
    txt.txt_data
        .iter()
        .map(|part| String::from_utf8_lossy(part))
        .collect()
}

/// The first text that is a version record; else the first one's error,
/// or [`LookupError::NoTxt`] when there is no text at all.
fn first_version_record(
    name: &str,
    texts: impl IntoIterator<Item = String>,
) -> Result<VersionRecord, LookupError> {
    let mut first_error = None;
    for text in texts {
        match VersionRecord::parse(&text) {
            Ok(record) => return Ok(record),
            Err(source) => {
                first_error.get_or_insert((text, source));
            }
        }
    }
    match first_error {
        Some((text, source)) => Err(LookupError::Malformed {
            name: name.to_owned(),
            text: text.chars().take(255).collect(),
            source,
        }),
        None => Err(LookupError::NoTxt {
            name: name.to_owned(),
        }),
    }
}

/// A resolver for one lookup: no cache worth keeping, a per-try timeout
/// that leaves room for one retry within the total.
fn resolver(options: &LookupOptions) -> Result<TokioResolver, LookupError> {
    let mut builder = match options.nameserver {
        Some(server) => {
            let mut config = match options.transport {
                Transport::Udp => NameServerConfig::udp_and_tcp(server.ip()),
                Transport::Tcp => NameServerConfig::tcp(server.ip()),
            };
            for connection in &mut config.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![config]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|error| LookupError::SystemConfig(error.to_string()))?,
    };
    let opts = builder.options_mut();
    opts.timeout = (options.timeout / 2).max(Duration::from_millis(100));
    opts.attempts = 2;
    opts.cache_size = 1;
    builder
        .build()
        .map_err(|error| LookupError::SystemConfig(error.to_string()))
}

/// Turns hickory's error into one that says what failed.
fn classify(error: NetError, name: &str, timeout: Duration) -> LookupError {
    let name = name.to_owned();
    match error {
        NetError::Timeout => LookupError::Timeout { name, timeout },
        NetError::Dns(DnsError::NoRecordsFound(none))
            if none.response_code == ResponseCode::NXDomain =>
        {
            LookupError::NxDomain { name }
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => LookupError::NoTxt { name },
        NetError::Dns(DnsError::ResponseCode(code)) => LookupError::ServerError {
            name,
            code: code.to_string(),
        },
        other => LookupError::Transport {
            name,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "1.4.3:62:27500:1600000000:0:90:1:339";

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn strings_of_a_record_are_joined() {
        let txt = TXT::from_bytes(vec![b"1.4.3:62:275", b"00:1600000000"]);
        assert_eq!(joined(&txt), "1.4.3:62:27500:1600000000");
    }

    #[test]
    fn first_record_that_parses_wins() {
        let got = first_version_record("n.", texts(&["v=spf1 -all", GOOD, "0:1:2:3"])).unwrap();
        assert_eq!(got.to_string(), GOOD);
    }

    #[test]
    fn none_parsing_reports_the_first_error() {
        let err = first_version_record("n.", texts(&["junk", "1:2:3"])).unwrap_err();
        let LookupError::Malformed { text, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(text, "junk");
        assert!(!err.is_transient());
    }

    #[test]
    fn no_text_is_no_txt() {
        let err = first_version_record("n.", Vec::new()).unwrap_err();
        assert_eq!(err, LookupError::NoTxt { name: "n.".into() });
    }
}
