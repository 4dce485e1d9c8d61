//! ClamAV 1.5 detached signatures: the `#clamsign-1.0` files published as
//! `<db>-<version>.cvd.sign` beside each CVD and `<db>-<N>.cdiff.sign`
//! beside each cdiff, verified exactly as ClamAV 1.5.3 verifies them.
//!
//! A `.sign` file is a header line and one or more signature lines:
//!
//! ```text
//! #clamsign-1.0
//! 230::pkcs7-pem:<base64 of a DER PKCS#7 SignedData, one line>
//! ```
//!
//! Each signature line carries a feature-level range (`min:max`, max may be
//! empty) and a detached PKCS#7 signature over the *whole* signed file
//! (header and legacy footer included). Verification follows
//! `libclamav_rust/src/codesign.rs::verify_signed_file` line for line, with
//! OpenSSL's `PKCS7_verify` as ClamAV uses it: the signer certificate must
//! be embedded, the chain must lead to a trusted root at the verification
//! time, the leaf must suit S/MIME signing (extended key usage
//! emailProtection or none, key usage digitalSignature or none), no CRLs.
//!
//! The outcome keeps ClamAV's two kinds of failure apart, because clients
//! act on them differently:
//! - [`SignError::Invalid`]: a signature was checked and failed (wrong
//!   content, untrusted or expired chain, unsuitable purpose). freshclam 1.5
//!   refuses the file outright, even when its legacy signature is fine.
//! - [`SignError::Unusable`]: the file could not be used at all (missing
//!   header, a line that does not parse, a minimum feature level below 230,
//!   no line for our feature level, no embedded signer). freshclam 1.5 falls
//!   back to the legacy signature, as it does when the `.sign` is absent.
//!
//! The verification time is a parameter: the mirror passes "now", tests
//! pass a fixed date (ClamAV's test root expires on 2027-03-26).
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use cvdmirror_formats::cvd::sign::{SignError, SignRoots, SignVerifier};
//!
//! let verifier = SignVerifier::new(SignRoots::official());
//! let at = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
//! let err = verifier.verify(b"data", b"#clamsign-1.0\n", at).unwrap_err();
//! assert!(matches!(err, SignError::Unusable(_)));
//! ```

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509Ref};
use thiserror::Error;

mod pkcs7;

use pkcs7::Content;

/// The first line of a `.sign` file ClamAV 1.5 writes.
pub const SIGN_HEADER: &str = "#clamsign-1.0";

/// The lowest feature level a signature line may name: the level that
/// introduced `pkcs7-pem` signatures. A line naming less rejects the file.
pub const MIN_SIGN_FLEVEL: u32 = 230;

/// The feature level of ClamAV 1.5.3, the client this mirror verifies as
/// unless configured otherwise: lines whose range excludes it are skipped.
pub const CLAMAV_FLEVEL: u32 = 233;

/// Largest `.sign` file accepted (a real `daily` one is about 9 KiB).
pub const MAX_SIGN_BYTES: usize = 1 << 20;

/// The signature format ClamAV 1.5 understands.
const PKCS7_PEM: &str = "pkcs7-pem";

/// ClamAV's production root ("Cisco Software Identity Root CA RSA 4096
/// SHA512 2099"), as ClamAV 1.5 ships it in `certs/clamav.crt`.
pub const OFFICIAL_ROOT_PEM: &[u8] = include_bytes!("certs/clamav-root.crt");

/// Why a `.sign` file did not vouch for a file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignError {
    /// A signature was checked and failed: clients refuse the signed file.
    #[error("invalid signature: {0}")]
    Invalid(String),
    /// The `.sign` file could not be used: clients fall back to the legacy
    /// signature, as if it were absent.
    #[error("signature file unusable: {0}")]
    Unusable(String),
}

impl SignError {
    /// Whether clients would refuse the signed file because of this `.sign`
    /// (rather than ignore the `.sign` and use the legacy signature).
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }
}

/// Who signed a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// Common names of the signer certificates, joined by `", "` as
    /// ClamAV reports them (`ClamAV_datafiles_release` upstream).
    pub signer: String,
    /// Common name of the signer certificate's issuer.
    pub issuer: String,
    /// SHA-256 fingerprint of the signer certificate, lower-case hex: a
    /// change of signing certificate shows here even when names stay.
    pub fingerprint: String,
    /// Which signature line verified (1 is the first line after the header).
    pub line: usize,
}

/// A problem with a trusted root certificate.
#[derive(Debug, Error)]
pub enum RootError {
    /// The file could not be read.
    #[error("cannot read {origin}: {source}")]
    Read {
        /// Which file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate, or one that does not parse.
    #[error("{origin}: not a PEM certificate file: {reason}")]
    Parse {
        /// Which file.
        origin: String,
        /// OpenSSL's words.
        reason: String,
    },
    /// A certificate without a common name (ClamAV cannot use it).
    #[error("{origin}: a certificate has no common name (CN)")]
    NoCommonName {
        /// Which file.
        origin: String,
    },
    /// Two roots with one common name: OpenSSL would pick either, so
    /// ClamAV refuses such a certificate directory, and so do we.
    #[error(
        "{origin}: a root named {name:?} is already trusted (from {other}); common names must be unique"
    )]
    DuplicateName {
        /// Which file.
        origin: String,
        /// The common name.
        name: String,
        /// Where the first one came from.
        other: String,
    },
}

#[derive(Clone)]
struct Root {
    cert: X509,
    name: String,
    origin: String,
}

/// The root certificates a `.sign` must chain to.
#[derive(Clone, Default)]
pub struct SignRoots {
    roots: Vec<Root>,
}

impl fmt::Debug for SignRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.roots
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.origin)),
            )
            .finish()
    }
}

impl PartialEq for SignRoots {
    fn eq(&self, other: &Self) -> bool {
        self.roots.len() == other.roots.len()
            && self
                .roots
                .iter()
                .zip(&other.roots)
                .all(|(a, b)| a.cert.to_der().ok() == b.cert.to_der().ok() && a.origin == b.origin)
    }
}

impl SignRoots {
    /// No trusted root: every `.sign` is [`SignError::Invalid`].
    pub fn none() -> Self {
        Self::default()
    }

    /// ClamAV's production root, compiled in.
    pub fn official() -> Self {
        let mut roots = Self::none();
        // The compiled-in certificate is checked by a unit test; should it
        // ever fail to parse, the mirror trusts nothing rather than panic.
        if let Err(e) = roots.add_pem(OFFICIAL_ROOT_PEM, "the compiled-in ClamAV root") {
            tracing::error!(error = %e, "compiled-in ClamAV root certificate unusable");
        }
        roots
    }

    /// Adds every certificate of a PEM file (as ClamAV reads each `.crt` or
    /// `.pem` file of its certificate directory).
    pub fn add_file(&mut self, path: &Path) -> Result<&mut Self, RootError> {
        let origin = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| RootError::Read {
            origin: origin.clone(),
            source,
        })?;
        self.add_pem(&pem, &origin)
    }

    /// Adds every certificate in `pem`; `origin` names it in errors and in
    /// the status page.
    pub fn add_pem(&mut self, pem: &[u8], origin: &str) -> Result<&mut Self, RootError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| RootError::Parse {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(RootError::Parse {
                origin: origin.to_owned(),
                reason: "no certificate found".into(),
            });
        }
        let mut added = Vec::new();
        for cert in certs {
            let name = common_name(&cert).ok_or_else(|| RootError::NoCommonName {
                origin: origin.to_owned(),
            })?;
            if let Some(other) = self.roots.iter().chain(&added).find(|r| r.name == name) {
                return Err(RootError::DuplicateName {
                    origin: origin.to_owned(),
                    name,
                    other: other.origin.clone(),
                });
            }
            added.push(Root {
                cert,
                name,
                origin: origin.to_owned(),
            });
        }
        self.roots.extend(added);
        Ok(self)
    }

    /// The trusted roots' common names, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.roots.iter().map(|r| r.name.clone()).collect()
    }

    /// Whether no root is trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    fn store(&self, at: SystemTime) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for root in &self.roots {
            builder.add_cert(root.cert.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(unix_seconds(at));
        builder.set_param(&param)?;
        Ok(builder.build())
    }
}

/// Verifies `.sign` files against a set of roots, as a ClamAV client of a
/// given feature level would.
#[derive(Debug, Clone, PartialEq)]
pub struct SignVerifier {
    roots: SignRoots,
    flevel: u32,
}

impl SignVerifier {
    /// A verifier trusting `roots`, at ClamAV 1.5.3's feature level.
    pub fn new(roots: SignRoots) -> Self {
        Self {
            roots,
            flevel: CLAMAV_FLEVEL,
        }
    }

    /// Verifies as a client of feature level `flevel` would.
    #[must_use]
    pub fn flevel(mut self, flevel: u32) -> Self {
        self.flevel = flevel;
        self
    }

    /// The trusted roots.
    pub fn roots(&self) -> &SignRoots {
        &self.roots
    }

    /// The feature level lines are selected for.
    pub fn feature_level(&self) -> u32 {
        self.flevel
    }

    /// Verifies `sign_file` (the contents of a `.sign`) over `signed` (the
    /// whole signed file) with certificate validity checked at `at`.
    pub fn verify(
        &self,
        signed: &[u8],
        sign_file: &[u8],
        at: SystemTime,
    ) -> Result<SignedBy, SignError> {
        self.verify_content(Content::Bytes(signed), sign_file, at)
    }

    fn verify_content(
        &self,
        signed: Content<'_>,
        sign_file: &[u8],
        at: SystemTime,
    ) -> Result<SignedBy, SignError> {
        if sign_file.len() > MAX_SIGN_BYTES {
            return Err(SignError::Unusable(format!(
                "{} bytes, more than {MAX_SIGN_BYTES}",
                sign_file.len()
            )));
        }
        let store = self
            .roots
            .store(at)
            .map_err(|e| SignError::Unusable(format!("cannot build the certificate store: {e}")))?;
        let mut lines = SignLines::new(sign_file);
        let Some(first) = lines.next() else {
            return Err(no_line_verified());
        };
        check_header_line(first?)?;
        for (index, line) in lines.enumerate() {
            let number = index + 1;
            let line = line?.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = SignLine::parse(line)
                .map_err(|why| SignError::Unusable(format!("line {number}: {why}")))?;
            if parsed.min_flevel < MIN_SIGN_FLEVEL {
                return Err(SignError::Unusable(format!(
                    "line {number}: minimum feature level {} is below {MIN_SIGN_FLEVEL}, the level that introduced {PKCS7_PEM}",
                    parsed.min_flevel
                )));
            }
            if !parsed.covers(self.flevel) {
                tracing::debug!(
                    line = number,
                    flevel = self.flevel,
                    "signature line is for other feature levels; skipped"
                );
                continue;
            }
            let content = match &signed {
                Content::Bytes(bytes) => Content::Bytes(bytes),
                Content::File(path) => Content::File(path),
            };
            match check_pkcs7(&parsed.pkcs7, content, &store) {
                Checked::Verified(mut by) => {
                    by.line = number;
                    return Ok(by);
                }
                Checked::Failed(why) => {
                    return Err(SignError::Invalid(format!("line {number}: {why}")));
                }
                Checked::NoSigner(why) => {
                    tracing::debug!(line = number, reason = %why, "signature line without a usable signer; trying the next");
                }
            }
        }
        Err(no_line_verified())
    }
}

fn no_line_verified() -> SignError {
    SignError::Unusable("no signature line could be verified".into())
}

/// The lines of a `.sign` file as Rust's `BufRead::lines` yields them to
/// ClamAV: split at `\n`, one trailing `\r` dropped, UTF-8 required.
struct SignLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> SignLines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl<'a> Iterator for SignLines<'a> {
    type Item = Result<&'a str, SignError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (rest.get(..i)?, rest.get(i + 1..)),
            None => (rest, None),
        };
        self.rest = tail.filter(|t| !t.is_empty());
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(
            std::str::from_utf8(line)
                .map_err(|_| SignError::Unusable("a line is not valid UTF-8".into())),
        )
    }
}

/// ClamAV 1.5.3 accepts a first line that starts with `#clamsign` and whose
/// second `-`-separated part is `1.0`.
fn check_header_line(line: &str) -> Result<(), SignError> {
    if !line.starts_with("#clamsign") {
        return Err(SignError::Unusable(format!(
            "first line is not {SIGN_HEADER:?}"
        )));
    }
    match line.split('-').nth(1) {
        Some("1.0") => Ok(()),
        Some(other) => Err(SignError::Unusable(format!(
            "format version {other:?} is not 1.0"
        ))),
        None => Err(SignError::Unusable(format!(
            "first line {line:?} names no format version"
        ))),
    }
}

/// One signature line: `min:max:format:payload[:ignored...]`.
pub struct SignLine {
    /// Lowest feature level the line is for.
    pub min_flevel: u32,
    /// Highest, if bounded.
    pub max_flevel: Option<u32>,
    /// The parsed signature.
    pub pkcs7: Pkcs7,
}

impl fmt::Debug for SignLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignLine")
            .field("min_flevel", &self.min_flevel)
            .field("max_flevel", &self.max_flevel)
            .finish_non_exhaustive()
    }
}

impl SignLine {
    /// Parses a trimmed, non-comment line as clam-sigutil 1.2.4 does.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut fields = line.split(':');
        let min_flevel = match fields.next() {
            Some(min) => min
                .parse::<u32>()
                .map_err(|e| format!("minimum feature level {min:?}: {e}"))?,
            None => return Err("missing minimum feature level".into()),
        };
        let max_flevel = match fields.next() {
            Some("") => None,
            Some(max) => Some(
                max.parse::<u32>()
                    .map_err(|e| format!("maximum feature level {max:?}: {e}"))?,
            ),
            None => return Err("missing maximum feature level field".into()),
        };
        match fields.next() {
            Some(PKCS7_PEM) => {}
            Some(other) => return Err(format!("unsupported signature format {other:?}")),
            None => return Err("missing signature format".into()),
        }
        let payload = fields.next().ok_or("missing signature")?;
        let pem = format!("-----BEGIN PKCS7-----\n{payload}\n-----END PKCS7-----");
        let pkcs7 = Pkcs7::from_pem(pem.as_bytes())
            .map_err(|_| "signature is not a PKCS#7 structure".to_owned())?;
        Ok(Self {
            min_flevel,
            max_flevel,
            pkcs7,
        })
    }

    /// Whether a client of feature level `flevel` uses this line.
    pub fn covers(&self, flevel: u32) -> bool {
        range_covers(self.min_flevel, self.max_flevel, flevel)
    }
}

/// `min..` or `min..=max` contains `flevel`.
fn range_covers(min: u32, max: Option<u32>, flevel: u32) -> bool {
    flevel >= min && max.is_none_or(|max| flevel <= max)
}

enum Checked {
    Verified(SignedBy),
    /// `PKCS7_verify` failed: ClamAV's `InvalidDigitalSignature`.
    Failed(String),
    /// No signer could be read (not signed data, signer not embedded):
    /// ClamAV moves on to the next line.
    NoSigner(String),
}

/// `Verifier::verify` of ClamAV 1.5.3: `PKCS7_verify` with no extra
/// certificates, flags `DETACHED | BINARY | NOCRL`, then the signers.
fn check_pkcs7(pkcs7: &Pkcs7, signed: Content<'_>, store: &X509Store) -> Checked {
    if pkcs7.signed().is_none() {
        return Checked::NoSigner("not PKCS#7 signed data".into());
    }
    let certs = match Stack::<X509>::new() {
        Ok(certs) => certs,
        Err(e) => return Checked::NoSigner(e.to_string()),
    };
    let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOCRL;
    let result = pkcs7::verify(pkcs7, store, signed, flags);
    let signers = match pkcs7.signers(&certs, flags) {
        Ok(signers) => signers,
        Err(e) => return Checked::NoSigner(format!("no embedded signer certificate: {e}")),
    };
    match result {
        Ok(()) => {
            let signer = signers
                .iter()
                .map(|c| common_name(c).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ");
            let first = signers.iter().next();
            Checked::Verified(SignedBy {
                signer,
                issuer: first
                    .and_then(|c| first_entry(c.issuer_name(), Nid::COMMONNAME))
                    .unwrap_or_default(),
                fingerprint: first
                    .and_then(|c| c.digest(MessageDigest::sha256()).ok())
                    .map(|d| super::info::hex(&d))
                    .unwrap_or_default(),
                line: 0,
            })
        }
        Err(e) => Checked::Failed(verify_reason(&e)),
    }
}

/// OpenSSL's error stack reduced to its most telling part ("certificate
/// has expired", "digest failure"), without source paths.
fn verify_reason(errors: &openssl::error::ErrorStack) -> String {
    let reasons: Vec<String> = errors
        .errors()
        .iter()
        .map(|e| {
            let reason = e.reason().unwrap_or("unknown error").to_owned();
            match e.data() {
                Some(data) if !data.is_empty() => format!("{reason}: {data}"),
                _ => reason,
            }
        })
        .collect();
    if reasons.is_empty() {
        "verification failed".into()
    } else {
        reasons.join("; ")
    }
}

fn common_name(cert: &X509Ref) -> Option<String> {
    first_entry(cert.subject_name(), Nid::COMMONNAME)
}

fn first_entry(name: &openssl::x509::X509NameRef, nid: Nid) -> Option<String> {
    name.entries_by_nid(nid)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl SignVerifier {
    /// Verifies the `.sign` at `sign_path` over the file at `signed_path`,
    /// which OpenSSL reads from disk in small chunks (a 160 MB `main.cvd`
    /// costs no memory). An unreadable `.sign` or signed file is an
    /// [`std::io::Error`].
    pub fn verify_file(
        &self,
        signed_path: &Path,
        sign_path: &Path,
        at: SystemTime,
    ) -> std::io::Result<Result<SignedBy, SignError>> {
        let sign = read_limited(sign_path)?;
        // Opened here first, so a missing file is an I/O error, not a verdict.
        std::fs::File::open(signed_path)?;
        Ok(self.verify_content(Content::File(signed_path), &sign, at))
    }
}

/// Reads a `.sign` file, at most one byte more than [`MAX_SIGN_BYTES`] (so
/// an oversized one is reported as such rather than read whole).
fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SIGN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The name of the `.sign` file for a CVD of `db` at `version`
/// (`daily-27780.cvd.sign`), as ClamAV looks it up: by the version in the
/// CVD's header, whatever the CVD file is called.
pub fn cvd_sign_name(db: &str, version: u32) -> String {
    format!("{db}-{version}.cvd.sign")
}

/// The name of a cdiff's `.sign` file (`daily-27780.cdiff.sign`).
pub fn cdiff_sign_name(cdiff_name: &str) -> String {
    format!("{cdiff_name}.sign")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_root_is_clamavs_production_root() {
        let roots = SignRoots::official();
        assert_eq!(
            roots.names(),
            ["Cisco Software Identity Root CA RSA 4096 SHA512 2099"]
        );
    }

    #[test]
    fn lines_split_like_bufread_lines() {
        let lines: Vec<_> = SignLines::new(b"a\r\nb\n\nc").map(Result::unwrap).collect();
        assert_eq!(lines, ["a", "b", "", "c"]);
        assert_eq!(SignLines::new(b"a\n").count(), 1);
        assert_eq!(SignLines::new(b"").count(), 0);
        assert!(SignLines::new(b"\xff\n").next().unwrap().is_err());
    }

    #[test]
    fn header_line_rules_are_clamavs() {
        assert!(check_header_line("#clamsign-1.0").is_ok());
        // ClamAV looks only at the part after the first '-'.
        assert!(check_header_line("#clamsignature-1.0-beta").is_ok());
        assert!(check_header_line("#clamsign-2.0").is_err());
        assert!(check_header_line("#clamsign").is_err());
        assert!(check_header_line("clamsign-1.0").is_err());
        assert!(check_header_line(" #clamsign-1.0").is_err());
    }

    #[test]
    fn line_fields_parse_as_sigutil_does() {
        let err = |l: &str| SignLine::parse(l).unwrap_err();
        assert!(err("230").contains("maximum"));
        assert!(err("230:").contains("format"));
        assert!(err("230::pkcs7-der:AAAA").contains("unsupported"));
        assert!(err("230::pkcs7-pem").contains("missing signature"));
        assert!(err("230::pkcs7-pem:AAAA").contains("PKCS#7"));
        assert!(err("x::pkcs7-pem:AAAA").contains("minimum"));
        assert!(err("230:y:pkcs7-pem:AAAA").contains("maximum"));
        assert!(err("-1::pkcs7-pem:AAAA").contains("minimum"));
    }

    #[test]
    fn ranges_are_inclusive_and_open_ended() {
        assert!(range_covers(230, None, 233));
        assert!(range_covers(230, Some(233), 233));
        assert!(range_covers(233, Some(233), 233));
        assert!(!range_covers(230, Some(232), 233));
        assert!(!range_covers(234, None, 233));
        assert!(!range_covers(240, Some(235), 238));
    }

    #[test]
    fn unusable_files_are_not_invalid() {
        let verifier = SignVerifier::new(SignRoots::official());
        let now = SystemTime::now();
        for file in [
            &b""[..],
            b"#clamsign-1.0\n",
            b"#clamsign-1.0\n\n# comment\n",
            b"<html>not found</html>",
            b"#clamsign-1.0\n229::pkcs7-pem:AAAA\n",
            b"#clamsign-1.0\n230::pkcs7-pem:AAAA\n",
        ] {
            let err = verifier.verify(b"x", file, now).unwrap_err();
            assert!(!err.is_invalid(), "{err}");
        }
    }

    #[test]
    fn names_follow_clamav() {
        assert_eq!(cvd_sign_name("daily", 27780), "daily-27780.cvd.sign");
        assert_eq!(
            cdiff_sign_name("daily-27780.cdiff"),
            "daily-27780.cdiff.sign"
        );
    }
}
