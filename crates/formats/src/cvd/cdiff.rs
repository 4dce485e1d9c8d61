//! cdiff files: `ClamAV-Diff:<version>:<script length>:` + gzip(script) +
//! `:` + signature, where the PSS-style signature (cdiff key) covers the
//! SHA-256 of every byte before the last `:`.
//!
//! A zero-byte cdiff is not an error: upstream publishes it on purpose to
//! tell clients "fetch the whole CVD", and a mirror must serve it as is, so
//! it parses to [`Cdiff::Empty`].
//!
//! Checked as libclamav's `cdiff_apply` does (at least 350 bytes, signature
//! after the last `:` within the final 350 bytes, `ClamAV-Diff` magic, three
//! header colons), plus: the version field is a number (and the expected one,
//! if given) and the gzip stream decodes completely. The declared script
//! length is reported but, as in libclamav, not enforced.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::base64::MAX_SIGNATURE_CHARS;
use super::error::{Signed, VerifyError};
use super::keys::{KeyRole, TrustedKeys};
use super::signature;

const MAGIC: &[u8] = b"ClamAV-Diff";

/// Largest cdiff read by [`verify_cdiff_file`] (real ones are tens of KB).
pub const MAX_CDIFF_BYTES: u64 = 64 * 1024 * 1024;

/// Largest decompressed script accepted (guards against gzip bombs).
pub const MAX_SCRIPT_BYTES: u64 = 256 * 1024 * 1024;

/// A cdiff as found on a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cdiff {
    /// A zero-byte file: the deliberate "fetch the whole CVD" signal.
    Empty,
    /// A signed patch.
    Signed(SignedCdiff),
}

/// What a signed cdiff holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCdiff {
    /// The version this patch produces.
    pub version: u32,
    /// Script length as declared in the header.
    pub declared_script_len: u64,
    /// Script length after decompression.
    pub script_len: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

/// The pieces of a non-empty cdiff, before any signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiffParts<'a> {
    /// Version field.
    pub version: u32,
    /// Declared script length.
    pub declared_script_len: u64,
    /// The gzip-compressed script.
    pub gzip: &'a [u8],
    /// Everything the signature covers.
    pub signed: &'a [u8],
    /// The signature string.
    pub dsig: &'a [u8],
}

fn bad(reason: impl Into<String>) -> VerifyError {
    VerifyError::Cdiff(reason.into())
}

/// Splits a non-empty cdiff into its parts, checking only its framing.
pub fn parse(bytes: &[u8]) -> Result<CdiffParts<'_>, VerifyError> {
    if bytes.len() < MAX_SIGNATURE_CHARS {
        return Err(VerifyError::Truncated(format!(
            "cdiff is {} bytes, shorter than the {MAX_SIGNATURE_CHARS} libclamav requires",
            bytes.len()
        )));
    }
    let tail_start = bytes.len() - MAX_SIGNATURE_CHARS;
    let tail = bytes.get(tail_start..).unwrap_or_default();
    let colon = tail_start
        + tail
            .iter()
            .rposition(|&b| b == b':')
            .ok_or_else(|| bad("no ':' before the signature"))?;
    let signed = bytes.get(..colon).unwrap_or_default();
    let dsig = bytes.get(colon + 1..).unwrap_or_default();
    let rest = signed
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("does not start with ClamAV-Diff"))?;
    let mut fields = rest.splitn(4, |&b| b == b':');
    let (Some(b""), Some(version), Some(length), Some(gzip)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad("header is not ClamAV-Diff:<version>:<length>:"));
    };
    let version = decimal(version)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad("version field is not a number"))?;
    let declared_script_len = decimal(length).ok_or_else(|| bad("length field is not a number"))?;
    Ok(CdiffParts {
        version,
        declared_script_len,
        gzip,
        signed,
        dsig,
    })
}

fn decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 19 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Verifies a cdiff held in memory. `expected_version` is the `N` of
/// `<db>-N.cdiff`, if the caller wants it checked.
pub fn verify_cdiff(
    bytes: &[u8],
    expected_version: Option<u32>,
    keys: &TrustedKeys,
) -> Result<Cdiff, VerifyError> {
    if bytes.is_empty() {
        return Ok(Cdiff::Empty);
    }
    let parts = parse(bytes)?;
    if let Some(want) = expected_version
        && want != parts.version
    {
        return Err(VerifyError::WrongVersion {
            expected: want,
            got: parts.version,
        });
    }
    let digest: [u8; 32] = Sha256::digest(parts.signed).into();
    signature::verify_pss(parts.dsig, &digest, keys.keys(KeyRole::Cdiff))
        .map_err(|e| VerifyError::signature(Signed::Cdiff, e))?;
    let script_len = script_len(parts.gzip)?;
    Ok(Cdiff::Signed(SignedCdiff {
        version: parts.version,
        declared_script_len: parts.declared_script_len,
        script_len,
        file_size: bytes.len() as u64,
    }))
}

/// Verifies the cdiff at `path` (read whole: cdiffs are small).
pub fn verify_cdiff_file(
    path: &Path,
    expected_version: Option<u32>,
    keys: &TrustedKeys,
) -> Result<Cdiff, VerifyError> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_CDIFF_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CDIFF_BYTES {
        return Err(bad(format!("larger than {MAX_CDIFF_BYTES} bytes")));
    }
    verify_cdiff(&bytes, expected_version, keys)
}

/// The decompressed script of a cdiff (no signature check: verify first).
pub fn script(bytes: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let parts = parse(bytes)?;
    let mut out = Vec::new();
    GzDecoder::new(parts.gzip)
        .take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(gzip_error)?;
    if out.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(bad(format!(
            "script is larger than {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    Ok(out)
}

fn script_len(gzip: &[u8]) -> Result<u64, VerifyError> {
    let n = io::copy(
        &mut GzDecoder::new(gzip).take(MAX_SCRIPT_BYTES + 1),
        &mut io::sink(),
    )
    .map_err(gzip_error)?;
    if n > MAX_SCRIPT_BYTES {
        return Err(bad(format!(
            "script is larger than {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    Ok(n)
}

fn gzip_error(e: io::Error) -> VerifyError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            VerifyError::Truncated("cdiff gzip stream ends early".into())
        }
        _ => VerifyError::Gzip(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_a_signal_not_an_error() {
        assert_eq!(
            verify_cdiff(b"", Some(5), &TrustedKeys::official()).unwrap(),
            Cdiff::Empty
        );
    }

    #[test]
    fn framing_is_checked_before_signatures() {
        let short = b"ClamAV-Diff:5:10:xx:sig";
        assert!(matches!(parse(short), Err(VerifyError::Truncated(_))));
        let mut no_colon = b"ClamAV-Diff:5:10:".to_vec();
        no_colon.resize(400, b'a');
        // The header's own colons are outside the final 350 bytes.
        assert!(matches!(parse(&no_colon), Err(VerifyError::Cdiff(_))));
        let mut wrong_magic = b"ClamAV-Dift:5:10:".to_vec();
        wrong_magic.resize(400, b'a');
        wrong_magic[200] = b':';
        assert!(matches!(parse(&wrong_magic), Err(VerifyError::Cdiff(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1200)) {
            let _ = parse(&bytes);
            let _ = script(&bytes);
            let _ = verify_cdiff(&bytes, None, &TrustedKeys::official());
        }

        #[test]
        fn never_panics_on_near_cdiffs(
            version in "[0-9]{0,12}",
            length in "[0-9x]{0,6}",
            middle in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            sig in "[a-zA-Z0-9+/:]{0,360}",
        ) {
            let mut bytes = format!("ClamAV-Diff:{version}:{length}:").into_bytes();
            bytes.extend_from_slice(&middle);
            bytes.push(b':');
            bytes.extend_from_slice(sig.as_bytes());
            let _ = verify_cdiff(&bytes, Some(1), &TrustedKeys::official());
        }
    }
}
