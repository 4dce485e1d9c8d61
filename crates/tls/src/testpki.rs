//! A throw-away certificate authority for tests and benchmarks: a CA, server
//! certificates for given names, and client certificates, all ECDSA P-256
//! (quick to generate and to handshake with), made with OpenSSL.
//!
//! Never for production: the keys live in memory and in whatever files the
//! caller writes them to.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

use super::{ClientCa, Identity, load};

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (`CERTIFICATE`).
    pub cert_pem: Vec<u8>,
    /// Its private key (PKCS#8 `PRIVATE KEY`).
    pub key_pem: Vec<u8>,
}

impl Issued {
    /// Writes `cert.pem` and `key.pem` into `dir` (created); returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A test certificate authority.
pub struct TestPki {
    name: String,
    cert: X509,
    key: PKey<Private>,
}

impl TestPki {
    /// A new CA named `name` (its common name).
    pub fn generate(name: &str) -> Result<Self, ErrorStack> {
        let key = new_key()?;
        let mut builder = builder(name, &key, Duration::from_secs(10 * 365 * 86_400))?;
        builder.set_issuer_name(builder_name(name)?.as_ref())?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            name: name.to_owned(),
            cert: builder.build(),
            key,
        })
    }

    /// One CA per process, for tests that do not care which.
    ///
    /// # Panics
    /// If OpenSSL cannot make a key (never in practice).
    #[allow(clippy::expect_used)]
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<TestPki> = OnceLock::new();
        SHARED.get_or_init(|| Self::generate("cvdmirror test CA").expect("test CA"))
    }

    /// The CA certificate, PEM (what clients trust).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap_or_default()
    }

    /// The CA's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// for a day, with common name `names[0]`.
    pub fn server(&self, names: &[&str]) -> Result<Issued, ErrorStack> {
        self.server_named(names, names.first().copied().unwrap_or("server"))
    }

    /// A server certificate for `names` with the common name `cn` (tests
    /// tell a rotated certificate from the old one by it).
    pub fn server_named(&self, names: &[&str], cn: &str) -> Result<Issued, ErrorStack> {
        self.issue(cn, names, false)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Result<Issued, ErrorStack> {
        self.issue(cn, &[], true)
    }

    /// Writes a server certificate for `name` (and the loopback addresses)
    /// and its key into `dir`.
    ///
    /// # Panics
    /// If the files cannot be written or OpenSSL fails (a test's failure).
    #[allow(clippy::expect_used)]
    pub fn write_server(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        self.server(&[name, "127.0.0.1", "::1"])
            .expect("server certificate")
            .write(dir)
            .expect("write the server certificate")
    }

    /// A loaded [`Identity`] for `name`, without files (the paths it names
    /// do not exist).
    ///
    /// # Panics
    /// If OpenSSL or rustls refuses what this made (a test's failure).
    #[allow(clippy::expect_used)]
    pub fn identity(&self, name: &str) -> Identity {
        let issued = self.server(&[name]).expect("server certificate");
        load::identity_from_pem(
            Path::new("test.crt"),
            &issued.cert_pem,
            Path::new("test.key"),
            &issued.key_pem,
        )
        .expect("identity")
    }

    /// A verifier requiring client certificates from this CA.
    ///
    /// # Panics
    /// If rustls refuses the CA (a test's failure).
    #[allow(clippy::expect_used)]
    pub fn client_ca(&self) -> ClientCa {
        load::client_ca_from_pem(Path::new("test-ca.crt"), &self.ca_pem()).expect("client CA")
    }

    fn issue(&self, cn: &str, names: &[&str], client: bool) -> Result<Issued, ErrorStack> {
        let key = new_key()?;
        let mut builder = builder(cn, &key, Duration::from_secs(86_400))?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()?,
        )?;
        let mut usage = ExtendedKeyUsage::new();
        if client {
            usage.client_auth();
        } else {
            usage.server_auth();
        }
        builder.append_extension(usage.build()?)?;
        if !names.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for name in names {
                if name.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(name);
                } else {
                    san.dns(name);
                }
            }
            let san = san.build(&builder.x509v3_context(Some(&self.cert), None))?;
            builder.append_extension(san)?;
        }
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        builder.sign(&self.key, MessageDigest::sha256())?;
        Ok(Issued {
            cert_pem: builder.build().to_pem()?,
            key_pem: key.private_key_to_pem_pkcs8()?,
        })
    }
}

/// A fresh P-256 key.
fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn builder_name(cn: &str) -> Result<Arc<openssl::x509::X509Name>, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(Arc::new(name.build()))
}

/// A v3 certificate for `cn` with `key`, valid from an hour ago for `valid`.
fn builder(cn: &str, key: &PKey<Private>, valid: Duration) -> Result<X509Builder, ErrorStack> {
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    builder.set_serial_number(Asn1Integer::from_bn(&serial)?.as_ref())?;
    builder.set_subject_name(builder_name(cn)?.as_ref())?;
    builder.set_pubkey(key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    builder.set_not_before(Asn1Time::from_unix(now - 3600)?.as_ref())?;
    let until = now.saturating_add(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX / 2));
    builder.set_not_after(Asn1Time::from_unix(until)?.as_ref())?;
    Ok(builder)
}
