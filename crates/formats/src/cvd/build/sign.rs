//! ClamAV 1.5 `.sign` fixtures: a throw-away certificate chain and the
//! detached `#clamsign-1.0` signature files it makes, for tests, the demo
//! and benchmarks, never for real clients (ClamAV trusts only its own root,
//! so nothing signed here verifies there unless the generated root is put in
//! its certificate directory).
//!
//! [`TestPki`] mirrors the shape of ClamAV's own test PKI: a root CA, an
//! intermediate CA and a signing certificate (key usage digitalSignature,
//! extended key usage codeSigning and emailProtection), RSA 2048 with
//! SHA-256, each common name carrying a random suffix so that several
//! generated roots can be trusted at once. [`TestPki::sign`] writes a `.sign`
//! file exactly as `sigtool --sign` does: `PKCS7_sign` with the flags
//! `DETACHED | BINARY`, the signing certificate and the intermediate
//! embedded, one `230::pkcs7-pem:<base64 DER>` line.
//!
//! Everything a verifier must refuse can be made too: certificates issued
//! with the wrong purpose or validity ([`PkiOptions`], [`TestPki::reissue`]),
//! signature lines with other feature levels, formats, digests, embedded
//! certificates or a damaged payload ([`LineOptions`]), and files with
//! another header, comments, blank lines or CRLF line endings
//! ([`SignFile`]).
//!
//! ```
//! use std::time::SystemTime;
//! use cvdmirror_formats::cvd::build::sign::TestPki;
//! use cvdmirror_formats::cvd::sign::SignVerifier;
//!
//! let pki = TestPki::shared().unwrap();
//! let sign = pki.sign(b"database bytes").unwrap();
//! assert!(sign.starts_with(b"#clamsign-1.0\n230::pkcs7-pem:"));
//! let verifier = SignVerifier::new(pki.roots().unwrap());
//! let by = verifier.verify(b"database bytes", &sign, SystemTime::now()).unwrap();
//! assert_eq!(by.signer, pki.signer_name());
//! ```

use std::io;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::{MessageDigest, hash};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder};

use crate::cvd::sign::{MIN_SIGN_FLEVEL, SIGN_HEADER, SignRoots};

/// RSA modulus size of every generated key.
const KEY_BITS: u32 = 2048;

const DAY: Duration = Duration::from_secs(86_400);
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// When a certificate is valid, relative to the moment it is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validity {
    /// From one day before issue to 20 years after.
    #[default]
    Current,
    /// From two years before issue to one day before: expired.
    Expired,
    /// From one day after issue to two years after: not yet valid.
    NotYetValid,
    /// An explicit period.
    Between {
        /// First moment of validity.
        not_before: SystemTime,
        /// Last moment of validity.
        not_after: SystemTime,
    },
}

impl Validity {
    /// The period as `(not_before, not_after)`, for a certificate issued now.
    pub fn period(&self) -> (SystemTime, SystemTime) {
        let now = SystemTime::now();
        match *self {
            Self::Current => (now - DAY, now + 20 * YEAR),
            Self::Expired => (now - 2 * YEAR, now - DAY),
            Self::NotYetValid => (now + DAY, now + 2 * YEAR),
            Self::Between {
                not_before,
                not_after,
            } => (not_before, not_after),
        }
    }
}

/// The extended key usage of the signing certificate. `PKCS7_verify`
/// checks the purpose S/MIME signing: an extended key usage, if present,
/// must include emailProtection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafPurpose {
    /// codeSigning and emailProtection, critical, as ClamAV's test signing
    /// certificate.
    #[default]
    CodeSigningAndEmailProtection,
    /// emailProtection only.
    EmailProtection,
    /// codeSigning only: unsuitable for S/MIME signing, so refused.
    CodeSigningOnly,
    /// No extended key usage extension (any purpose).
    Unrestricted,
}

/// The key usage of the signing certificate. `PKCS7_verify` accepts a key
/// usage, if present, only with digitalSignature or nonRepudiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafKeyUsage {
    /// digitalSignature, critical, as ClamAV's test signing certificate.
    #[default]
    DigitalSignature,
    /// nonRepudiation only (no digitalSignature): still accepted by
    /// OpenSSL's S/MIME signing purpose.
    NonRepudiationOnly,
    /// keyEncipherment only (no digitalSignature): refused.
    KeyEnciphermentOnly,
    /// No key usage extension (any usage).
    Unrestricted,
}

/// The extended key usage of the intermediate CA. OpenSSL checks the
/// purpose on CA certificates too: an extended key usage there must include
/// emailProtection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntermediatePurpose {
    /// OCSPSigning and emailProtection, as ClamAV's test intermediate.
    #[default]
    OcspSigningAndEmailProtection,
    /// No extended key usage extension.
    Unrestricted,
    /// OCSPSigning only: no emailProtection, so refused.
    OcspSigningOnly,
}

/// How the certificates of a [`TestPki`] are issued. The default is a
/// chain ClamAV 1.5 accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PkiOptions {
    /// Validity of the root certificate.
    pub root_validity: Validity,
    /// Validity of the intermediate certificate.
    pub intermediate_validity: Validity,
    /// Extended key usage of the intermediate certificate.
    pub intermediate_purpose: IntermediatePurpose,
    /// Validity of the signing certificate.
    pub leaf_validity: Validity,
    /// Extended key usage of the signing certificate.
    pub leaf_purpose: LeafPurpose,
    /// Key usage of the signing certificate.
    pub leaf_key_usage: LeafKeyUsage,
}

/// The message digest of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignDigest {
    /// SHA-256, what `PKCS7_sign` picks for an RSA key and ClamAV uses.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl SignDigest {
    fn message_digest(self) -> MessageDigest {
        match self {
            Self::Sha256 => MessageDigest::sha256(),
            Self::Sha512 => MessageDigest::sha512(),
        }
    }

    /// DER of the AlgorithmIdentifier (OID and NULL parameters).
    fn algorithm_identifier(self) -> Vec<u8> {
        let oid: &[u8] = match self {
            Self::Sha256 => &OID_SHA256,
            Self::Sha512 => &OID_SHA512,
        };
        der(TAG_SEQUENCE, &[oid, &NULL].concat())
    }
}

/// Damage done to the base64 payload of a signature line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadDamage {
    /// No damage.
    #[default]
    Intact,
    /// A character in the middle replaced with `!`: not base64, so the line
    /// does not parse (ClamAV: cannot verify, falls back).
    InvalidCharacter,
    /// Cut to half its length (on a 4-character boundary): valid base64 of
    /// a truncated structure, so the line does not parse.
    Truncated,
    /// The last byte of the DER (inside the RSA signature value) flipped:
    /// the line parses but the signature fails (ClamAV: invalid).
    SignatureValueFlipped,
}

/// How one signature line is made. The default is the line `sigtool`
/// writes: `230::pkcs7-pem:` and a SHA-256 PKCS#7 with signed attributes,
/// signing certificate and intermediate embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOptions {
    /// The minimum feature level field.
    pub min_flevel: u32,
    /// The maximum feature level field; `None` leaves it empty.
    pub max_flevel: Option<u32>,
    /// The format field (ClamAV knows only `pkcs7-pem`).
    pub format: String,
    /// The message digest.
    pub digest: SignDigest,
    /// Whether the signature has signed attributes (content type, signing
    /// time, message digest); `false` is `openssl cms -sign -noattr`.
    pub signed_attributes: bool,
    /// Whether the signing certificate is embedded.
    pub embed_signer: bool,
    /// Whether the intermediate certificate is embedded.
    pub embed_intermediate: bool,
    /// Whether the root certificate is embedded too (ClamAV's test files do
    /// not embed it; a verifier must ignore an embedded root it does not
    /// trust).
    pub embed_root: bool,
    /// Damage done to the base64 payload.
    pub damage: PayloadDamage,
    /// Fields appended after the payload, each after a `:` (ClamAV ignores
    /// them).
    pub extra_fields: Vec<String>,
}

impl Default for LineOptions {
    fn default() -> Self {
        Self {
            min_flevel: MIN_SIGN_FLEVEL,
            max_flevel: None,
            format: PKCS7_PEM.to_owned(),
            digest: SignDigest::Sha256,
            signed_attributes: true,
            embed_signer: true,
            embed_intermediate: true,
            embed_root: false,
            damage: PayloadDamage::Intact,
            extra_fields: Vec::new(),
        }
    }
}

impl LineOptions {
    /// The line `sigtool --sign` writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the minimum feature level field.
    #[must_use]
    pub fn min_flevel(mut self, flevel: u32) -> Self {
        self.min_flevel = flevel;
        self
    }

    /// Sets the maximum feature level field.
    #[must_use]
    pub fn max_flevel(mut self, flevel: u32) -> Self {
        self.max_flevel = Some(flevel);
        self
    }

    /// Sets the format field.
    #[must_use]
    pub fn format(mut self, format: &str) -> Self {
        format.clone_into(&mut self.format);
        self
    }

    /// Sets the message digest.
    #[must_use]
    pub fn digest(mut self, digest: SignDigest) -> Self {
        self.digest = digest;
        self
    }

    /// Signs without signed attributes (`-noattr`).
    #[must_use]
    pub fn without_signed_attributes(mut self) -> Self {
        self.signed_attributes = false;
        self
    }

    /// Leaves the signing certificate out of the PKCS#7.
    #[must_use]
    pub fn without_signer(mut self) -> Self {
        self.embed_signer = false;
        self
    }

    /// Leaves the intermediate certificate out of the PKCS#7.
    #[must_use]
    pub fn without_intermediate(mut self) -> Self {
        self.embed_intermediate = false;
        self
    }

    /// Embeds the root certificate too.
    #[must_use]
    pub fn with_root(mut self) -> Self {
        self.embed_root = true;
        self
    }

    /// Damages the payload.
    #[must_use]
    pub fn damage(mut self, damage: PayloadDamage) -> Self {
        self.damage = damage;
        self
    }

    /// Appends a field after the payload.
    #[must_use]
    pub fn extra_field(mut self, field: &str) -> Self {
        self.extra_fields.push(field.to_owned());
        self
    }
}

/// The only signature format ClamAV 1.5 knows.
const PKCS7_PEM: &str = "pkcs7-pem";

/// A `.sign` file assembled line by line: the header, then signature lines,
/// blank lines and comments in any order.
///
/// ```
/// use cvdmirror_formats::cvd::build::sign::SignFile;
///
/// let file = SignFile::new().comment("made by hand").blank().line("230::pkcs7-pem:AAAA").crlf(true);
/// assert_eq!(
///     file.to_bytes(),
///     b"#clamsign-1.0\r\n# made by hand\r\n\r\n230::pkcs7-pem:AAAA\r\n"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignFile {
    /// The first line (`#clamsign-1.0`).
    pub header: String,
    /// The following lines, without line endings.
    pub lines: Vec<String>,
    /// Whether lines end with `\r\n` instead of `\n`.
    pub crlf: bool,
}

impl Default for SignFile {
    fn default() -> Self {
        Self {
            header: SIGN_HEADER.to_owned(),
            lines: Vec::new(),
            crlf: false,
        }
    }
}

impl SignFile {
    /// A file with the header `#clamsign-1.0` and no other line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the header line.
    #[must_use]
    pub fn header(mut self, header: &str) -> Self {
        header.clone_into(&mut self.header);
        self
    }

    /// Appends a line as is (a signature line, or anything else).
    #[must_use]
    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }

    /// Appends an empty line (as `sigtool --append` puts before each
    /// further signature).
    #[must_use]
    pub fn blank(self) -> Self {
        self.line("")
    }

    /// Appends the comment line `# text`.
    #[must_use]
    pub fn comment(self, text: &str) -> Self {
        self.line(format!("# {text}"))
    }

    /// Ends lines with `\r\n` (`true`) or `\n` (`false`).
    #[must_use]
    pub fn crlf(mut self, crlf: bool) -> Self {
        self.crlf = crlf;
        self
    }

    /// The file's bytes: every line, the last one included, ends with a
    /// line ending.
    pub fn to_bytes(&self) -> Vec<u8> {
        let end = if self.crlf { "\r\n" } else { "\n" };
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.lines) {
            out.push_str(line);
            out.push_str(end);
        }
        out.into_bytes()
    }
}

/// One generated key and its certificate.
#[derive(Clone)]
struct Issued {
    key: PKey<Private>,
    cert: X509,
    name: String,
}

/// A throw-away root → intermediate → signing-certificate chain and the
/// `.sign` files it signs.
#[derive(Clone)]
pub struct TestPki {
    root: Issued,
    intermediate: Issued,
    leaf: Issued,
    options: PkiOptions,
    root_pem: Vec<u8>,
    intermediate_pem: Vec<u8>,
    signer_pem: Vec<u8>,
    signer_key_pem: Vec<u8>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("root", &self.root.name)
            .field("intermediate", &self.intermediate.name)
            .field("signer", &self.leaf.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generates a new chain ClamAV 1.5 accepts (three RSA keys: about a
    /// second in a debug build; see [`TestPki::shared`]).
    pub fn generate() -> io::Result<Self> {
        Self::generate_with(&PkiOptions::default())
    }

    /// Generates a new chain issued as `options` say.
    pub fn generate_with(options: &PkiOptions) -> io::Result<Self> {
        let suffix = hex(&random_bytes(4)?);
        let root_key = new_key()?;
        let intermediate_key = new_key()?;
        let leaf_key = new_key()?;
        let root = issue_root(
            root_key,
            format!("cvdmirror TEST Root CA {suffix}"),
            options,
        )?;
        let intermediate = issue_intermediate(
            intermediate_key,
            format!("cvdmirror TEST Intermediate CA {suffix}"),
            &root,
            options,
        )?;
        let leaf = issue_leaf(
            leaf_key,
            format!("cvdmirror TEST CVD Signing Cert {suffix}"),
            &intermediate,
            options,
        )?;
        Self::assemble(root, intermediate, leaf, *options)
    }

    /// A chain generated once per process with the default options, for
    /// tests that need any valid chain.
    pub fn shared() -> io::Result<&'static Self> {
        static SHARED: OnceLock<Result<TestPki, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::generate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| io::Error::other(format!("cannot generate the test PKI: {e}")))
    }

    /// The same keys and names with certificates issued anew as `options`
    /// say: cheap (no key generation), and the root keeps its name and key,
    /// so a chain reissued with a bad leaf still leads to this PKI's root.
    /// Only the certificates whose options differ are reissued.
    pub fn reissue(&self, options: &PkiOptions) -> io::Result<Self> {
        let old = &self.options;
        let root = if options.root_validity == old.root_validity {
            self.root.clone()
        } else {
            issue_root(self.root.key.clone(), self.root.name.clone(), options)?
        };
        let intermediate = if options.intermediate_validity == old.intermediate_validity
            && options.intermediate_purpose == old.intermediate_purpose
        {
            self.intermediate.clone()
        } else {
            issue_intermediate(
                self.intermediate.key.clone(),
                self.intermediate.name.clone(),
                &root,
                options,
            )?
        };
        let leaf = if options.leaf_validity == old.leaf_validity
            && options.leaf_purpose == old.leaf_purpose
            && options.leaf_key_usage == old.leaf_key_usage
        {
            self.leaf.clone()
        } else {
            issue_leaf(
                self.leaf.key.clone(),
                self.leaf.name.clone(),
                &intermediate,
                options,
            )?
        };
        Self::assemble(root, intermediate, leaf, *options)
    }

    fn assemble(
        root: Issued,
        intermediate: Issued,
        leaf: Issued,
        options: PkiOptions,
    ) -> io::Result<Self> {
        Ok(Self {
            root_pem: root.cert.to_pem().map_err(io::Error::other)?,
            intermediate_pem: intermediate.cert.to_pem().map_err(io::Error::other)?,
            signer_pem: leaf.cert.to_pem().map_err(io::Error::other)?,
            signer_key_pem: leaf
                .key
                .private_key_to_pem_pkcs8()
                .map_err(io::Error::other)?,
            root,
            intermediate,
            leaf,
            options,
        })
    }

    /// The options the certificates were issued with.
    pub fn options(&self) -> &PkiOptions {
        &self.options
    }

    /// The root certificate, PEM: what goes into ClamAV's certificate
    /// directory (`root.crt`) or [`SignRoots::add_pem`].
    pub fn root_pem(&self) -> Vec<u8> {
        self.root_pem.clone()
    }

    /// The intermediate certificate, PEM.
    pub fn intermediate_pem(&self) -> Vec<u8> {
        self.intermediate_pem.clone()
    }

    /// The signing certificate, PEM (`sigtool --sign --cert`).
    pub fn signer_pem(&self) -> Vec<u8> {
        self.signer_pem.clone()
    }

    /// The signing key, PKCS#8 PEM (`sigtool --sign --key`).
    pub fn signer_key_pem(&self) -> Vec<u8> {
        self.signer_key_pem.clone()
    }

    /// The root's common name.
    pub fn root_name(&self) -> &str {
        &self.root.name
    }

    /// The intermediate's common name.
    pub fn intermediate_name(&self) -> &str {
        &self.intermediate.name
    }

    /// The signing certificate's common name: [`SignedBy::signer`] of a
    /// verified file.
    ///
    /// [`SignedBy::signer`]: crate::cvd::sign::SignedBy::signer
    pub fn signer_name(&self) -> &str {
        &self.leaf.name
    }

    /// The root alone, as trusted roots for a verifier.
    pub fn roots(&self) -> io::Result<SignRoots> {
        let mut roots = SignRoots::none();
        roots
            .add_pem(&self.root_pem, &format!("test PKI {}", self.root.name))
            .map_err(io::Error::other)?;
        Ok(roots)
    }

    /// The `.sign` file `sigtool --sign` would write for `data` with this
    /// chain: `#clamsign-1.0\n230::pkcs7-pem:<base64 DER>\n`.
    pub fn sign(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.sign_with(data, &LineOptions::default())
    }

    /// A `.sign` file with the single signature line `options` describe.
    pub fn sign_with(&self, data: &[u8], options: &LineOptions) -> io::Result<Vec<u8>> {
        Ok(SignFile::new()
            .line(self.signature_line(data, options)?)
            .to_bytes())
    }

    /// One signature line over `data`, without line ending.
    pub fn signature_line(&self, data: &[u8], options: &LineOptions) -> io::Result<String> {
        let der = self.pkcs7_der(data, options)?;
        let payload = damaged(&der, options.damage);
        let max = options
            .max_flevel
            .map(|m| m.to_string())
            .unwrap_or_default();
        let mut line = format!("{}:{max}:{}:{payload}", options.min_flevel, options.format);
        for field in &options.extra_fields {
            line.push(':');
            line.push_str(field);
        }
        Ok(line)
    }

    /// The DER PKCS#7 SignedData over `data` (the digest, attributes and
    /// embedded certificates of `options`; its damage and line fields are
    /// ignored). Embedded certificates come in the order signer,
    /// intermediate, root.
    ///
    /// SHA-256 signatures come from `PKCS7_sign` (flags `DETACHED | BINARY`,
    /// plus `NOATTR` and `NOCERTS` as asked), exactly as ClamAV's
    /// `Signer::sign`. `PKCS7_sign` cannot choose another digest nor embed
    /// other certificates without the signer, so those are encoded here by
    /// hand: the same structure, with content type and message digest as
    /// the only signed attributes.
    pub fn pkcs7_der(&self, data: &[u8], options: &LineOptions) -> io::Result<Vec<u8>> {
        let by_openssl = options.digest == SignDigest::Sha256
            && (options.embed_signer || !(options.embed_intermediate || options.embed_root));
        if by_openssl {
            self.pkcs7_by_openssl(data, options)
        } else {
            self.pkcs7_by_hand(data, options)
        }
    }

    fn pkcs7_by_openssl(&self, data: &[u8], options: &LineOptions) -> io::Result<Vec<u8>> {
        let mut certs = Stack::<X509>::new().map_err(io::Error::other)?;
        for (cert, embed) in [
            (&self.intermediate.cert, options.embed_intermediate),
            (&self.root.cert, options.embed_root),
        ] {
            if embed {
                certs.push(cert.clone()).map_err(io::Error::other)?;
            }
        }
        let mut flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
        if !options.signed_attributes {
            flags |= Pkcs7Flags::NOATTR;
        }
        if !options.embed_signer {
            // Leaves out every certificate, the intermediate too.
            flags |= Pkcs7Flags::NOCERTS;
        }
        Pkcs7::sign(&self.leaf.cert, &self.leaf.key, &certs, data, flags)
            .and_then(|p7| p7.to_der())
            .map_err(io::Error::other)
    }

    fn pkcs7_by_hand(&self, data: &[u8], options: &LineOptions) -> io::Result<Vec<u8>> {
        let md = options.digest.message_digest();
        let digest_algorithm = options.digest.algorithm_identifier();
        let mut signer = Signer::new(md, &self.leaf.key).map_err(io::Error::other)?;
        let attributes = if options.signed_attributes {
            let content_digest = hash(md, data).map_err(io::Error::other)?;
            let mut attributes = [
                attribute(&OID_CONTENT_TYPE, &OID_DATA),
                attribute(&OID_MESSAGE_DIGEST, &der(TAG_OCTET_STRING, &content_digest)),
            ];
            // DER orders the members of a SET OF by their encodings.
            attributes.sort();
            let attributes = attributes.concat();
            // The signature covers the attributes encoded as a SET OF.
            signer
                .update(&der(TAG_SET, &attributes))
                .map_err(io::Error::other)?;
            Some(attributes)
        } else {
            signer.update(data).map_err(io::Error::other)?;
            None
        };
        let signature = signer.sign_to_vec().map_err(io::Error::other)?;

        let issuer = self
            .leaf
            .cert
            .issuer_name()
            .to_der()
            .map_err(io::Error::other)?;
        let serial = self
            .leaf
            .cert
            .serial_number()
            .to_bn()
            .map_err(io::Error::other)?
            .to_vec();
        let mut signer_info = [
            VERSION_1.to_vec(),
            der(TAG_SEQUENCE, &[issuer, der_unsigned(&serial)].concat()),
            digest_algorithm.clone(),
        ]
        .concat();
        if let Some(attributes) = attributes {
            signer_info.extend(der(TAG_CONTEXT_0, &attributes));
        }
        signer_info.extend(der(
            TAG_SEQUENCE,
            &[&OID_RSA_ENCRYPTION[..], &NULL].concat(),
        ));
        signer_info.extend(der(TAG_OCTET_STRING, &signature));

        let mut certificates = Vec::new();
        for (cert, embed) in [
            (&self.leaf.cert, options.embed_signer),
            (&self.intermediate.cert, options.embed_intermediate),
            (&self.root.cert, options.embed_root),
        ] {
            if embed {
                certificates.extend(cert.to_der().map_err(io::Error::other)?);
            }
        }
        let mut signed_data = [
            VERSION_1.to_vec(),
            der(TAG_SET, &digest_algorithm),
            der(TAG_SEQUENCE, &OID_DATA),
        ]
        .concat();
        if !certificates.is_empty() {
            signed_data.extend(der(TAG_CONTEXT_0, &certificates));
        }
        signed_data.extend(der(TAG_SET, &der(TAG_SEQUENCE, &signer_info)));
        Ok(der(
            TAG_SEQUENCE,
            &[
                OID_SIGNED_DATA.to_vec(),
                der(TAG_CONTEXT_0, &der(TAG_SEQUENCE, &signed_data)),
            ]
            .concat(),
        ))
    }
}

/// The base64 payload of `der`, damaged as asked.
fn damaged(der: &[u8], damage: PayloadDamage) -> String {
    match damage {
        PayloadDamage::Intact => openssl::base64::encode_block(der),
        PayloadDamage::InvalidCharacter => {
            let mut text = openssl::base64::encode_block(der);
            let middle = text.len() / 2;
            text.replace_range(middle..=middle, "!");
            text
        }
        PayloadDamage::Truncated => {
            let text = openssl::base64::encode_block(der);
            let keep = text.len() / 2 / 4 * 4;
            text.get(..keep).unwrap_or_default().to_owned()
        }
        PayloadDamage::SignatureValueFlipped => {
            let mut der = der.to_vec();
            if let Some(last) = der.last_mut() {
                *last ^= 0x01;
            }
            openssl::base64::encode_block(&der)
        }
    }
}

fn new_key() -> io::Result<PKey<Private>> {
    Rsa::generate(KEY_BITS)
        .and_then(PKey::from_rsa)
        .map_err(io::Error::other)
}

fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; n];
    openssl::rand::rand_bytes(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    crate::cvd::info::hex(bytes)
}

/// A certificate builder with version 3, a random positive 64-bit serial,
/// the subject `O=cvdmirror test, CN=<name>`, the key and the validity.
fn builder(name: &str, key: &PKey<Private>, validity: Validity) -> io::Result<X509Builder> {
    let mut builder = X509Builder::new().map_err(io::Error::other)?;
    builder.set_version(2).map_err(io::Error::other)?;
    let mut serial = BigNum::new().map_err(io::Error::other)?;
    serial
        .rand(64, MsbOption::MAYBE_ZERO, false)
        .map_err(io::Error::other)?;
    let serial = Asn1Integer::from_bn(&serial).map_err(io::Error::other)?;
    builder
        .set_serial_number(&serial)
        .map_err(io::Error::other)?;
    let subject = subject_name(name)?;
    builder
        .set_subject_name(&subject)
        .map_err(io::Error::other)?;
    builder.set_pubkey(key).map_err(io::Error::other)?;
    let (not_before, not_after) = validity.period();
    let (not_before, not_after) = (asn1_time(not_before)?, asn1_time(not_after)?);
    builder
        .set_not_before(&not_before)
        .map_err(io::Error::other)?;
    builder
        .set_not_after(&not_after)
        .map_err(io::Error::other)?;
    Ok(builder)
}

fn asn1_time(at: SystemTime) -> io::Result<Asn1Time> {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()),
        Err(e) => i64::try_from(e.duration().as_secs()).map(|s| -s),
    }
    .map_err(io::Error::other)?;
    let secs = libc::time_t::try_from(secs).map_err(io::Error::other)?;
    Asn1Time::from_unix(secs).map_err(io::Error::other)
}

fn issue_root(key: PKey<Private>, name: String, options: &PkiOptions) -> io::Result<Issued> {
    let mut builder = builder(&name, &key, options.root_validity)?;
    let issuer = subject_name(&name)?;
    builder.set_issuer_name(&issuer).map_err(io::Error::other)?;
    let extensions = [
        BasicConstraints::new().critical().ca().build(),
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build(),
        SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None)),
    ];
    for extension in extensions {
        builder
            .append_extension(extension.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    builder
        .sign(&key, MessageDigest::sha256())
        .map_err(io::Error::other)?;
    Ok(Issued {
        cert: builder.build(),
        key,
        name,
    })
}

fn issue_intermediate(
    key: PKey<Private>,
    name: String,
    root: &Issued,
    options: &PkiOptions,
) -> io::Result<Issued> {
    let mut builder = builder(&name, &key, options.intermediate_validity)?;
    builder
        .set_issuer_name(root.cert.subject_name())
        .map_err(io::Error::other)?;
    let mut extensions = vec![
        BasicConstraints::new().critical().ca().build(),
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build(),
        SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&root.cert), None)),
        AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&root.cert), None)),
    ];
    match options.intermediate_purpose {
        IntermediatePurpose::OcspSigningAndEmailProtection => extensions.push(
            ExtendedKeyUsage::new()
                .other("OCSPSigning")
                .email_protection()
                .build(),
        ),
        IntermediatePurpose::OcspSigningOnly => {
            extensions.push(ExtendedKeyUsage::new().other("OCSPSigning").build());
        }
        IntermediatePurpose::Unrestricted => {}
    }
    for extension in extensions {
        builder
            .append_extension(extension.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    sign_cert(builder, key, name, root)
}

fn issue_leaf(
    key: PKey<Private>,
    name: String,
    intermediate: &Issued,
    options: &PkiOptions,
) -> io::Result<Issued> {
    let mut builder = builder(&name, &key, options.leaf_validity)?;
    builder
        .set_issuer_name(intermediate.cert.subject_name())
        .map_err(io::Error::other)?;
    let mut extensions = vec![
        BasicConstraints::new().critical().build(),
        SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&intermediate.cert), None)),
        AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&intermediate.cert), None)),
    ];
    match options.leaf_key_usage {
        LeafKeyUsage::DigitalSignature => {
            extensions.push(KeyUsage::new().critical().digital_signature().build());
        }
        LeafKeyUsage::NonRepudiationOnly => {
            extensions.push(KeyUsage::new().critical().non_repudiation().build());
        }
        LeafKeyUsage::KeyEnciphermentOnly => {
            extensions.push(KeyUsage::new().critical().key_encipherment().build());
        }
        LeafKeyUsage::Unrestricted => {}
    }
    match options.leaf_purpose {
        LeafPurpose::CodeSigningAndEmailProtection => extensions.push(
            ExtendedKeyUsage::new()
                .critical()
                .code_signing()
                .email_protection()
                .build(),
        ),
        LeafPurpose::EmailProtection => {
            extensions.push(
                ExtendedKeyUsage::new()
                    .critical()
                    .email_protection()
                    .build(),
            );
        }
        LeafPurpose::CodeSigningOnly => {
            extensions.push(ExtendedKeyUsage::new().critical().code_signing().build());
        }
        LeafPurpose::Unrestricted => {}
    }
    for extension in extensions {
        builder
            .append_extension(extension.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    sign_cert(builder, key, name, intermediate)
}

/// `O=cvdmirror test, CN=<name>`.
fn subject_name(name: &str) -> io::Result<X509Name> {
    let mut subject = X509NameBuilder::new().map_err(io::Error::other)?;
    subject
        .append_entry_by_text("O", "cvdmirror test")
        .map_err(io::Error::other)?;
    subject
        .append_entry_by_text("CN", name)
        .map_err(io::Error::other)?;
    Ok(subject.build())
}

fn sign_cert(
    mut builder: X509Builder,
    key: PKey<Private>,
    name: String,
    issuer: &Issued,
) -> io::Result<Issued> {
    builder
        .sign(&issuer.key, MessageDigest::sha256())
        .map_err(io::Error::other)?;
    Ok(Issued {
        cert: builder.build(),
        key,
        name,
    })
}

// DER building blocks for the hand-encoded PKCS#7.
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_INTEGER: u8 = 0x02;
/// `[0]`, constructed: explicit content, implicit certificate and attribute sets.
const TAG_CONTEXT_0: u8 = 0xa0;
const NULL: [u8; 2] = [0x05, 0x00];
const VERSION_1: [u8; 3] = [TAG_INTEGER, 0x01, 0x01];
/// 1.2.840.113549.1.7.1
const OID_DATA: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];
/// 1.2.840.113549.1.7.2
const OID_SIGNED_DATA: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
/// 1.2.840.113549.1.9.3
const OID_CONTENT_TYPE: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03,
];
/// 1.2.840.113549.1.9.4
const OID_MESSAGE_DIGEST: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04,
];
/// 1.2.840.113549.1.1.1
const OID_RSA_ENCRYPTION: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// 2.16.840.1.101.3.4.2.1
const OID_SHA256: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
/// 2.16.840.1.101.3.4.2.3
const OID_SHA512: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
];

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if let Ok(short @ 0..0x80) = u8::try_from(len) {
        out.push(short);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let long = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | u8::try_from(long.len()).unwrap_or(0));
        out.extend_from_slice(long);
    }
    out.extend_from_slice(content);
    out
}

/// The DER INTEGER of a non-negative big-endian magnitude.
fn der_unsigned(magnitude: &[u8]) -> Vec<u8> {
    let magnitude = match magnitude.iter().position(|&b| b != 0) {
        Some(first) => magnitude.get(first..).unwrap_or_default(),
        None => &[],
    };
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der(TAG_INTEGER, &content)
}

/// An Attribute: `SEQUENCE { type, SET { value } }`.
fn attribute(oid: &[u8], value: &[u8]) -> Vec<u8> {
    der(TAG_SEQUENCE, &[oid.to_vec(), der(TAG_SET, value)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvd::sign::{SignError, SignVerifier};
    use openssl::x509::X509Ref;

    /// Whether `cert` was issued by `issuer`'s key.
    fn issued_by(cert: &X509Ref, issuer: &X509Ref) -> bool {
        issuer
            .public_key()
            .and_then(|key| cert.verify(&key))
            .unwrap_or(false)
    }

    fn pki() -> &'static TestPki {
        TestPki::shared().unwrap()
    }

    fn verify(pki: &TestPki, data: &[u8], sign: &[u8]) -> Result<String, SignError> {
        SignVerifier::new(pki.roots().unwrap())
            .verify(data, sign, SystemTime::now())
            .map(|by| by.signer)
    }

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(der(0x04, &[]), [0x04, 0x00]);
        assert_eq!(der(0x04, &[7; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(der(0x04, &[7; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der(0x04, &[7; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(der_unsigned(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(der_unsigned(&[0, 0, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der_unsigned(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
    }

    #[test]
    fn the_chain_has_clamavs_shape() {
        let pki = pki();
        assert!(issued_by(&pki.intermediate.cert, &pki.root.cert));
        assert!(issued_by(&pki.leaf.cert, &pki.intermediate.cert));
        assert!(pki.root_name().starts_with("cvdmirror TEST Root CA "));
        let other = TestPki::generate().unwrap();
        assert_ne!(pki.root_name(), other.root_name(), "names are unique");
        let roots = {
            let mut roots = pki.roots().unwrap();
            roots.add_pem(&other.root_pem(), "other").unwrap();
            roots
        };
        assert_eq!(roots.names().len(), 2);
    }

    #[test]
    fn sign_writes_what_sigtool_writes() {
        let sign = pki().sign(b"data").unwrap();
        let text = String::from_utf8(sign.clone()).unwrap();
        let (header, rest) = text.split_once('\n').unwrap();
        assert_eq!(header, "#clamsign-1.0");
        let line = rest.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'));
        let payload = line.strip_prefix("230::pkcs7-pem:").unwrap();
        let der = openssl::base64::decode_block(payload).unwrap();
        let p7 = Pkcs7::from_der(&der).unwrap();
        assert_eq!(
            p7.signed().and_then(|s| s.certificates()).map(|c| c.len()),
            Some(2)
        );
        assert_eq!(verify(pki(), b"data", &sign).unwrap(), pki().signer_name());
        let with_root = pki()
            .pkcs7_der(b"data", &LineOptions::new().with_root())
            .unwrap();
        let p7 = Pkcs7::from_der(&with_root).unwrap();
        assert_eq!(
            p7.signed().and_then(|s| s.certificates()).map(|c| c.len()),
            Some(3)
        );
        assert!(verify(pki(), b"datA", &sign).unwrap_err().is_invalid());
    }

    #[test]
    fn hand_encoded_signatures_verify() {
        let pki = pki();
        for options in [
            LineOptions::new().digest(SignDigest::Sha512),
            LineOptions::new()
                .digest(SignDigest::Sha512)
                .without_signed_attributes(),
        ] {
            let der = pki.pkcs7_der(b"data", &options).unwrap();
            let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
            assert!(contains(&OID_SHA512) && !contains(&OID_SHA256));
            assert_eq!(contains(&OID_MESSAGE_DIGEST), options.signed_attributes);
            let sign = pki.sign_with(b"data", &options).unwrap();
            assert_eq!(
                verify(pki, b"data", &sign).unwrap(),
                pki.signer_name(),
                "{options:?}"
            );
            assert!(verify(pki, b"datA", &sign).unwrap_err().is_invalid());
        }
        // Without the intermediate the chain is broken.
        let sign = pki
            .sign_with(
                b"data",
                &LineOptions::new()
                    .digest(SignDigest::Sha512)
                    .without_intermediate(),
            )
            .unwrap();
        let err = verify(pki, b"data", &sign).unwrap_err();
        assert!(
            err.is_invalid() && err.to_string().contains("issuer"),
            "{err}"
        );
        // The intermediate without the signer: no signer to find.
        let sign = pki
            .sign_with(b"data", &LineOptions::new().without_signer())
            .unwrap();
        assert!(!verify(pki, b"data", &sign).unwrap_err().is_invalid());
    }

    #[test]
    fn reissue_keeps_keys_and_root() {
        let pki = pki();
        let expired = pki
            .reissue(&PkiOptions {
                leaf_validity: Validity::Expired,
                ..PkiOptions::default()
            })
            .unwrap();
        assert_eq!(expired.root_pem(), pki.root_pem());
        assert_eq!(expired.intermediate_pem(), pki.intermediate_pem());
        assert_ne!(expired.signer_pem(), pki.signer_pem());
        assert_eq!(expired.signer_key_pem(), pki.signer_key_pem());
        let sign = expired.sign(b"data").unwrap();
        let err = verify(pki, b"data", &sign).unwrap_err();
        assert!(
            err.is_invalid() && err.to_string().contains("expired"),
            "{err}"
        );
    }

    #[test]
    fn damage_is_what_it_says() {
        let pki = pki();
        let line = |damage| {
            pki.signature_line(b"data", &LineOptions::new().damage(damage))
                .unwrap()
        };
        assert!(line(PayloadDamage::InvalidCharacter).contains('!'));
        assert!(line(PayloadDamage::Truncated).len() < line(PayloadDamage::Intact).len());
        let flipped = SignFile::new()
            .line(line(PayloadDamage::SignatureValueFlipped))
            .to_bytes();
        assert!(verify(pki, b"data", &flipped).unwrap_err().is_invalid());
        let options = LineOptions::new()
            .min_flevel(231)
            .max_flevel(240)
            .format("pkcs7-der")
            .extra_field("x");
        let line = pki.signature_line(b"data", &options).unwrap();
        assert!(line.starts_with("231:240:pkcs7-der:"), "{line}");
        assert!(line.ends_with(":x"), "{line}");
    }
}
