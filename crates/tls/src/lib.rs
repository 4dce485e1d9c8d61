//! HTTPS: every site's certificate and client-certificate rule, and the
//! table a TLS listener picks them from for each new connection.
//!
//! The files are read and checked while the configuration is resolved
//! (`tls::load`), so a bad certificate refuses to start, or on `SIGHUP` is
//! rejected while the running ones stay. [`Certificates`] turns the
//! resolved [`TlsConfig`] into one rustls `ServerConfig` per site (its own
//! certificate or the default one, its own client verifier if it asks for
//! client certificates); the server holds the table behind an `ArcSwap`,
//! so a reload changes what new handshakes get while every connection
//! keeps the `ServerConfig` it was accepted with.
//!
//! A site is chosen by the ClientHello's SNI with the same host patterns
//! the pipeline matches the `Host` header against. The two can disagree
//! (a client may send any `Host` on a connection set up for another
//! name), which matters only when a site requires client certificates:
//! [`Certificates::for_host`] tells the server which site a request is
//! for, and the server refuses a request for such a site on a connection
//! that was not authenticated for it (see `server::tls`).
//!
//! rustls with *ring*, TLS 1.2 and 1.3, ALPN `http/1.1`: no OpenSSL in
//! the serving path.

mod load;
pub mod testpki;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, danger::ClientCertVerifier};
use rustls::sign::CertifiedKey;

pub use load::{LoadError, load_client_ca, load_identity};

/// A certificate chain with its private key, read from PEM files and
/// checked to belong together.
#[derive(Clone)]
pub struct Identity {
    /// The certificate file (leaf first, then intermediates).
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("chain", &self.certified.cert.len())
            .finish()
    }
}

/// The certificate authorities a site accepts client certificates from.
#[derive(Clone)]
pub struct ClientCa {
    /// The PEM file of CA certificates.
    pub path: PathBuf,
    /// Verifies a client's chain against them; a client without one is refused.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("path", &self.path)
            .finish()
    }
}

/// TLS settings of one `[[site]]`.
#[derive(Debug, Clone)]
pub struct SiteTls {
    /// The site's name, as in the pipeline and the logs.
    pub name: Arc<str>,
    /// Its host patterns, normalized as the pipeline's (`*.x` for subdomains).
    pub hosts: Vec<String>,
    /// Its own certificate; `None` serves the default one.
    pub identity: Option<Identity>,
    /// Client certificates required from this CA; `None` asks for none.
    pub client_ca: Option<ClientCa>,
}

/// The resolved HTTPS settings of `serve`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Addresses to accept TLS connections on.
    pub listen: Vec<SocketAddr>,
    /// The default site's certificate: for clients whose SNI names no
    /// site with its own (or who send none, as clients of an IP address do).
    pub default: Identity,
    /// Client certificates the default site requires, if any.
    pub default_client_ca: Option<ClientCa>,
    /// Every `[[site]]`, in the pipeline's order.
    pub sites: Vec<SiteTls>,
}

/// What a TLS connection for one site is set up with.
#[derive(Debug)]
pub struct TlsSite {
    /// The site's name.
    pub name: Arc<str>,
    /// Its rustls configuration (certificate, client verifier, sessions).
    pub config: Arc<ServerConfig>,
    /// Whether it requires a client certificate.
    pub client_auth: bool,
}

/// Every site's TLS configuration and the host lookup; built once per
/// (re)load and shared by every handshake until the next.
#[derive(Debug)]
pub struct Certificates {
    default: TlsSite,
    sites: Vec<TlsSite>,
    hosts: HostTable,
    client_auth: bool,
}

impl Certificates {
    /// Builds the table. Sites with neither a certificate nor a client CA
    /// of their own share the default site's configuration (and so its
    /// session cache).
    pub fn build(config: &TlsConfig) -> Result<Self, rustls::Error> {
        let default_config = Arc::new(server_config(
            &config.default,
            config.default_client_ca.as_ref(),
        )?);
        let default = TlsSite {
            name: Arc::from("default"),
            config: Arc::clone(&default_config),
            client_auth: config.default_client_ca.is_some(),
        };
        let mut sites = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            let shared = site.identity.is_none() && site.client_ca.is_none();
            let site_config = if shared {
                Arc::clone(&default_config)
            } else {
                let identity = site.identity.as_ref().unwrap_or(&config.default);
                Arc::new(server_config(identity, site.client_ca.as_ref())?)
            };
            sites.push(TlsSite {
                name: Arc::clone(&site.name),
                config: site_config,
                client_auth: site.client_ca.is_some(),
            });
        }
        let hosts = HostTable::new(config.sites.iter().map(|site| site.hosts.as_slice()));
        let client_auth = default.client_auth || sites.iter().any(|s| s.client_auth);
        Ok(Self {
            default,
            sites,
            hosts,
            client_auth,
        })
    }

    /// The site for a ClientHello's server name (none: the default site).
    pub fn for_server_name(&self, name: Option<&str>) -> &TlsSite {
        self.lookup(name)
    }

    /// The site the pipeline serves a request with this `Host` (or
    /// absolute-form authority) from: port and trailing dot ignored, any
    /// case, as `pipeline::site` matches it.
    pub fn for_host(&self, host: Option<&str>) -> &TlsSite {
        self.lookup(host.map(strip_port))
    }

    /// Whether any site requires client certificates.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    fn lookup(&self, name: Option<&str>) -> &TlsSite {
        self.hosts
            .lookup(name)
            .map_or(&self.default, |i| &self.sites[i])
    }
}

use cvdmirror_exchange::host::{HostTable, strip_port};

/// The crypto rustls uses here: *ring*, as everywhere in cvdmirror.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One site's rustls configuration: TLS 1.3 and 1.2, HTTP/1.1 by ALPN.
fn server_config(
    identity: &Identity,
    client_ca: Option<&ClientCa>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(Arc::clone(&ca.verifier)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::clone(&identity.certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Always the one certificate: the site was chosen before the handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::TestPki;

    fn site(name: &str, hosts: &[&str], own_cert: Option<Identity>, ca: bool) -> SiteTls {
        let pki = TestPki::shared();
        SiteTls {
            name: Arc::from(name),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            identity: own_cert,
            client_ca: ca.then(|| pki.client_ca()),
        }
    }

    #[test]
    fn sni_and_host_pick_the_same_site_as_the_pipeline() {
        let pki = TestPki::shared();
        let config = TlsConfig {
            listen: Vec::new(),
            default: pki.identity("localhost"),
            default_client_ca: None,
            sites: vec![
                site("a", &["a.example"], Some(pki.identity("a.example")), false),
                site("sub", &["*.example"], None, false),
                site("locked", &["locked.example"], None, true),
            ],
        };
        let certs = Certificates::build(&config).unwrap();
        assert_eq!(&*certs.for_server_name(Some("a.example")).name, "a");
        assert_eq!(&*certs.for_server_name(Some("x.example")).name, "sub");
        assert_eq!(&*certs.for_server_name(Some("example")).name, "default");
        assert_eq!(&*certs.for_server_name(None).name, "default");
        assert_eq!(&*certs.for_host(Some("A.Example.:8443")).name, "a");
        assert_eq!(&*certs.for_host(Some("[::1]:8443")).name, "default");
        assert!(certs.client_auth());
        assert!(certs.for_host(Some("locked.example")).client_auth);
        // A site with nothing of its own shares the default configuration.
        assert!(Arc::ptr_eq(
            &certs.for_server_name(Some("x.example")).config,
            &certs.for_server_name(None).config
        ));
        assert!(!Arc::ptr_eq(
            &certs.for_server_name(Some("a.example")).config,
            &certs.for_server_name(None).config
        ));
    }

    #[test]
    fn without_client_cas_nothing_is_guarded() {
        let pki = TestPki::shared();
        let config = TlsConfig {
            listen: Vec::new(),
            default: pki.identity("localhost"),
            default_client_ca: None,
            sites: vec![site("a", &["a.example"], None, false)],
        };
        assert!(!Certificates::build(&config).unwrap().client_auth());
    }
}
