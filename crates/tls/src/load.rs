//! Reading certificates and keys from PEM files, with errors that name the
//! file and say what is wrong with it, in words an operator can act on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use thiserror::Error;

use super::{ClientCa, Identity, provider};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, Error)]
#[error("{what} {}: {reason}", .path.display())]
pub struct LoadError {
    /// Which kind of file: "certificate file", "key file", "client CA file".
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl LoadError {
    fn new(what: &'static str, path: &Path, reason: impl Into<String>) -> Self {
        Self {
            what,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

const CERT: &str = "certificate file";
const KEY: &str = "key file";
const CA: &str = "client CA file";

/// Reads a certificate chain (leaf first) and its private key (PKCS#8,
/// PKCS#1 or SEC1 PEM), and checks that the key is the leaf's.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, LoadError> {
    identity_from_pem(cert, &read(CERT, cert)?, key, &read(KEY, key)?)
}

/// [`load_identity`] on the files' contents.
pub(super) fn identity_from_pem(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<Identity, LoadError> {
    let chain = certificates(CERT, cert, cert_pem)?;
    let der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) => {
            return Err(LoadError::new(
                KEY,
                key,
                "no private key in it (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
            ));
        }
        Err(e) => return Err(LoadError::new(KEY, key, format!("not valid PEM: {e}"))),
    };
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => LoadError::new(
            KEY,
            key,
            format!("does not belong to the certificate in {}", cert.display()),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            LoadError::new(CERT, cert, format!("unusable certificate: {e}"))
        }
        other => LoadError::new(KEY, key, format!("unusable key: {other}")),
    })?;
    Ok(Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        certified: Arc::new(certified),
    })
}

/// Reads the CA certificates a site accepts client certificates from and
/// builds the verifier that requires one of them.
pub fn load_client_ca(path: &Path) -> Result<ClientCa, LoadError> {
    client_ca_from_pem(path, &read(CA, path)?)
}

/// [`load_client_ca`] on the file's contents.
pub(super) fn client_ca_from_pem(path: &Path, pem: &[u8]) -> Result<ClientCa, LoadError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(CA, path, pem)? {
        roots
            .add(cert)
            .map_err(|e| LoadError::new(CA, path, format!("unusable CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| LoadError::new(CA, path, format!("{e}")))?;
    Ok(ClientCa {
        path: path.to_path_buf(),
        verifier,
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::new(what, path, format!("cannot read it: {e}")))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn certificates(
    what: &'static str,
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let chain = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(what, path, format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(LoadError::new(
            what,
            path,
            "no certificate in it (expected PEM \"CERTIFICATE\" blocks)",
        ));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::TestPki;

    #[test]
    fn good_files_load_and_bad_ones_say_why() {
        let pki = TestPki::shared();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pki.write_server(dir.path(), "localhost");
        assert!(load_identity(&cert, &key).is_ok());

        let missing = dir.path().join("missing.pem");
        let err = load_identity(&missing, &key).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = load_identity(&empty, &key).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = load_identity(&cert, &empty).unwrap_err().to_string();
        assert!(
            err.contains("key file") && err.contains("no private key"),
            "{err}"
        );

        // The key of another certificate.
        let (_, other_key) = pki.write_server(&dir.path().join("other"), "localhost");
        let err = load_identity(&cert, &other_key).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        assert!(load_client_ca(&ca).is_ok());
        let err = load_client_ca(&empty).unwrap_err().to_string();
        assert!(
            err.contains("client CA file") && err.contains("no certificate"),
            "{err}"
        );
    }
}
