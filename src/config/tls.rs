//! Resolution of the HTTPS settings: `--tls-*` flags over the `[tls]`
//! table, and the `tls_*` keys of each `[[site]]`.
//!
//! Certificates, keys and CA files are read and checked here, so a bad one
//! refuses to start, or on `SIGHUP` rejects the new configuration while the
//! running certificates stay, with the file, the reason and the line of
//! the config file that named it.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::file::{FileSite, FileTls};
use super::{ConfigError, Resolver, SiteConfig};
use crate::config::flags::ServeArgs;
use crate::tls::{self, ClientCa, Identity, LoadError, SiteTls, TlsConfig};

/// The TLS keys of one `[[site]]`, taken before the site is resolved.
pub(super) struct SiteTlsKeys {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    client_ca: Option<Spanned<PathBuf>>,
    /// The site's `hosts` line, for errors about the block as a whole.
    hosts: Range<usize>,
}

impl SiteTlsKeys {
    pub(super) fn of(site: &FileSite) -> Self {
        Self {
            cert: site.tls_cert.clone(),
            key: site.tls_key.clone(),
            client_ca: site.tls_client_ca.clone(),
            hosts: site.hosts.span(),
        }
    }

    fn any(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.client_ca.is_some()
    }
}

/// A path from a flag (no line) or from the file (its line; relative to it).
struct Named {
    path: PathBuf,
    span: Option<Range<usize>>,
    flag: Option<&'static str>,
}

impl Resolver<'_> {
    fn named(
        &self,
        flag: (&'static str, Option<&PathBuf>),
        file: Option<&Spanned<PathBuf>>,
    ) -> Option<Named> {
        match (flag.1, file) {
            (Some(path), _) => Some(Named {
                path: path.clone(),
                span: None,
                flag: Some(flag.0),
            }),
            (None, Some(path)) => Some(Named {
                path: self.relative_to_file(path.get_ref()),
                span: Some(path.span()),
                flag: None,
            }),
            (None, None) => None,
        }
    }

    fn load_error(&self, e: &LoadError, cert: &Named, key: Option<&Named>) -> ConfigError {
        let named = match key {
            Some(key) if e.path == key.path && e.what != "certificate file" => key,
            _ => cert,
        };
        let prefix = named.flag.map(|f| format!("{f}: ")).unwrap_or_default();
        self.invalid(named.span.clone(), format!("{prefix}{e}"))
    }

    fn identity(&self, cert: &Named, key: &Named) -> Result<Identity, ConfigError> {
        tls::load_identity(&cert.path, &key.path).map_err(|e| self.load_error(&e, cert, Some(key)))
    }

    fn client_ca(&self, ca: &Named) -> Result<ClientCa, ConfigError> {
        tls::load_client_ca(&ca.path).map_err(|e| self.load_error(&e, ca, None))
    }

    /// The HTTPS settings; `None` when nothing listens for HTTPS (and then
    /// no certificate may be configured, so a forgotten listener is not
    /// silently ignored).
    pub(super) fn tls(
        &self,
        args: &ServeArgs,
        file: Option<Spanned<FileTls>>,
        site_keys: Vec<SiteTlsKeys>,
        plain: &[SocketAddr],
        sites: &[SiteConfig],
    ) -> Result<Option<TlsConfig>, ConfigError> {
        let (table, span) = match file {
            Some(table) => {
                let span = table.span();
                (table.into_inner(), Some(span))
            }
            None => (FileTls::default(), None),
        };
        let listen = if !args.tls_listen.is_empty() {
            args.tls_listen.clone()
        } else {
            match table.listen {
                Some(listen) if listen.is_empty() => {
                    let line = span.as_ref().and_then(|s| self.key_span(s, "listen"));
                    return Err(self.invalid(
                        line.or(span),
                        "`[tls] listen` must name at least one address".into(),
                    ));
                }
                Some(listen) => listen,
                None => Vec::new(),
            }
        };
        let cert = self.named(("--tls-cert", args.tls_cert.as_ref()), table.cert.as_ref());
        let key = self.named(("--tls-key", args.tls_key.as_ref()), table.key.as_ref());
        let client_ca = self.named(
            ("--tls-client-ca", args.tls_client_ca.as_ref()),
            table.client_ca.as_ref(),
        );

        if listen.is_empty() {
            let configured = [&cert, &key, &client_ca]
                .into_iter()
                .flatten()
                .map(|n| n.span.clone())
                .chain(
                    site_keys
                        .iter()
                        .filter(|k| k.any())
                        .map(|k| Some(k.hosts.clone())),
                )
                .next();
            return match configured {
                Some(line) => Err(self.invalid(
                    line,
                    "a TLS certificate is configured but nothing listens for HTTPS: add \
                     --tls-listen or `[tls] listen`"
                        .into(),
                )),
                None => Ok(None),
            };
        }
        if let Some(dup) = listen
            .iter()
            .enumerate()
            .find(|(i, a)| listen[..*i].contains(a))
        {
            return Err(self.invalid(span, format!("HTTPS address {} is given twice", dup.1)));
        }
        if let Some(both) = listen.iter().find(|a| a.port() != 0 && plain.contains(a)) {
            return Err(self.invalid(
                span,
                format!("{both} cannot serve both HTTP and HTTPS: give it to one of them"),
            ));
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(self.invalid(
                span,
                "HTTPS needs the default site's certificate and key: --tls-cert and --tls-key, \
                 or `cert` and `key` in `[tls]`"
                    .into(),
            ));
        };
        let default = self.identity(&cert, &key)?;
        let default_client_ca = client_ca.map(|ca| self.client_ca(&ca)).transpose()?;

        let mut resolved = Vec::with_capacity(sites.len());
        for (site, keys) in sites.iter().zip(site_keys) {
            let cert = self.named(("", None), keys.cert.as_ref());
            let key = self.named(("", None), keys.key.as_ref());
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some(self.identity(&cert, &key)?),
                (None, None) => None,
                (Some(one), None) | (None, Some(one)) => {
                    return Err(self.invalid(
                        one.span,
                        format!("site {}: `tls_cert` and `tls_key` go together", site.name),
                    ));
                }
            };
            let client_ca = self
                .named(("", None), keys.client_ca.as_ref())
                .map(|ca| self.client_ca(&ca))
                .transpose()?;
            resolved.push(SiteTls {
                name: Arc::from(site.name.as_str()),
                hosts: site.hosts.clone(),
                identity,
                client_ca,
            });
        }
        Ok(Some(TlsConfig {
            listen,
            default,
            default_client_ca,
            sites: resolved,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use crate::tls::testpki::TestPki;
    use std::path::Path;

    fn resolve(toml: &str, args: ServeArgs) -> Result<Config, ConfigError> {
        let file = super::super::FileConfig::parse(toml).unwrap();
        Resolver {
            path: Some(Path::new("/etc/cvdmirror.toml")),
            text: toml,
        }
        .resolve(&args, file)
    }

    #[test]
    fn no_listener_no_tls_and_a_lone_certificate_is_an_error() {
        assert!(resolve("", ServeArgs::default()).unwrap().tls.is_none());
        let err = resolve(
            "[tls]\ncert = \"/x.pem\"\nkey = \"/y.pem\"\n",
            ServeArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 2") && err.contains("nothing listens"),
            "{err}"
        );
    }

    #[test]
    fn certificates_load_and_bad_files_name_file_reason_and_line() {
        let pki = TestPki::shared();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pki.write_server(dir.path(), "localhost");
        let site_root = dir.path().join("site");
        std::fs::create_dir(&site_root).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        let toml = format!(
            "[tls]\nlisten = [\"127.0.0.1:8443\"]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[site]]\nhosts = [\"locked.example\"]\nroot = \"{}\"\ntls_client_ca = \"{}\"\n",
            cert.display(),
            key.display(),
            site_root.display(),
            ca.display()
        );
        let c = resolve(&toml, ServeArgs::default()).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.listen, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert!(tls.default_client_ca.is_none());
        assert_eq!(&*tls.sites[0].name, "locked.example");
        assert!(tls.sites[0].client_ca.is_some() && tls.sites[0].identity.is_none());

        // A key file that holds no key: named, with the reason and its line.
        let bad = dir.path().join("bad-key.pem");
        std::fs::write(&bad, "nothing\n").unwrap();
        let toml2 = toml.replace(&key.display().to_string(), &bad.display().to_string());
        let err = resolve(&toml2, ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4") && err.contains("bad-key.pem") && err.contains("no private key"),
            "{err}"
        );
        // A missing CA file on the site's line.
        let toml3 = toml.replace(&ca.display().to_string(), "/nonexistent/ca.pem");
        let err = resolve(&toml3, ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 9")
                && err.contains("/nonexistent/ca.pem")
                && err.contains("cannot read"),
            "{err}"
        );
        // From flags: the flag is named instead of a line.
        let args = ServeArgs {
            tls_listen: vec!["127.0.0.1:8443".parse().unwrap()],
            tls_cert: Some(cert.clone()),
            tls_key: Some(bad),
            ..ServeArgs::default()
        };
        let err = resolve("", args).unwrap_err().to_string();
        assert!(err.contains("--tls-key: key file"), "{err}");
        // Listening without a certificate.
        let args = ServeArgs {
            tls_listen: vec!["127.0.0.1:8443".parse().unwrap()],
            ..ServeArgs::default()
        };
        let err = resolve("", args).unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
    }

    #[test]
    fn an_address_serves_http_or_https_not_both() {
        let args = ServeArgs {
            listen: vec!["127.0.0.1:8443".parse().unwrap()],
            tls_listen: vec!["127.0.0.1:8443".parse().unwrap()],
            ..ServeArgs::default()
        };
        let err = resolve("", args).unwrap_err().to_string();
        assert!(err.contains("both HTTP and HTTPS"), "{err}");
    }
}
