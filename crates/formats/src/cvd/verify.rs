//! Verification of whole CVD and CLD files, in one streaming pass with
//! bounded memory (the body is hashed and untarred on the fly; only
//! `<db>.info` is buffered), so a 160 MB `main.cvd` costs a few buffers.
//!
//! What is checked, in the order errors are reported:
//! 1. the header parses, names the expected version, and is exactly what
//!    ClamAV's sigtool writes (space padding, lower-case md5);
//! 2. CVD only: the body's MD5 equals the header's, and the header `dsig`
//!    verifies over it with a trusted CVD key (a truncated body is reported
//!    as truncated rather than as an MD5 mismatch);
//! 3. the body is a gzip (or, as libclamav allows, plain) tar archive that
//!    libclamav would read;
//! 4. `<db>.info` exists, its DSIG verifies with a trusted `.info` key, its
//!    header line equals the file header with `X` for md5 and dsig (libclamav
//!    compares only version, sigs, f-level and stime; sigtool writes the
//!    identical line, and comparing all of it leaves no header byte
//!    unauthenticated), and every member except `COPYING` is listed with its
//!    exact size and SHA-256, and every listed member is present.
//!
//! A CLD has `X` for md5 and dsig and is not signed in the header (libclamav
//! skips that check for `.cld`), so its authenticity rests on step 4 alone:
//! member contents are covered, tar framing bytes are not (as in ClamAV).
//! A CLD whose header does carry md5 and dsig gets the CVD checks as well.
//!
//! Limits against decompression bombs: at most [`MAX_MEMBERS`] members and
//! [`MAX_TAR_BYTES`] of uncompressed archive.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::error::{Signed, VerifyError};
use super::header::{self, HEADER_LEN, Header};
use super::info::{Info, MAX_INFO_BYTES, hex};
use super::keys::{KeyRole, TrustedKeys};
use super::signature;
use super::tar::TarReader;

/// Most tar members accepted (a real `bytecode.cvd` has under 100).
pub const MAX_MEMBERS: usize = 10_000;

/// Largest uncompressed archive accepted (a real `main.cvd` unpacks to a few
/// hundred MB).
pub const MAX_TAR_BYTES: u64 = 4 << 30;

/// Whether a file is a signed CVD or a locally built CLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// `<db>.cvd`: header md5 and dsig required.
    Cvd,
    /// `<db>.cld`: header has `X` for md5 and dsig.
    Cld,
}

/// What the caller expects the file to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Database name, e.g. `daily`.
    pub name: String,
    /// CVD or CLD.
    pub kind: DbKind,
    /// Required version, if known (e.g. from DNS).
    pub version: Option<u32>,
    /// Whether a CVD's legacy header signature (MD5 + RSA) must be present
    /// and verify. When it need not (a ClamAV 1.5 `.sign` vouches for the
    /// file instead), its verdict is reported in [`Verified::legacy`].
    pub header_signature: HeaderSignature,
}

/// Whether a CVD must carry a valid legacy header signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderSignature {
    /// Absent or failing is an error (ClamAV before 1.5, FIPS aside).
    #[default]
    Required,
    /// Absent or failing is reported, not an error: the caller decides
    /// with the `.sign` verdict (ClamAV 1.5).
    Reported,
}

/// The verdict on a file's legacy header signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Legacy {
    /// Present and verified with a trusted key.
    Verified,
    /// No signature: `X` for the signature (`sigtool --unsigned` writes the
    /// body's md5, which must then match, and `X`; upstream may write `X`
    /// for both), or a CLD.
    Absent,
    /// Present but failing; why.
    Failed(String),
}

impl Expected {
    /// A CVD of database `name`, any version.
    pub fn cvd(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: DbKind::Cvd,
            version: None,
            header_signature: HeaderSignature::Required,
        }
    }

    /// A CLD of database `name`, any version.
    pub fn cld(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: DbKind::Cld,
            version: None,
            header_signature: HeaderSignature::Required,
        }
    }

    /// From a served file name: `daily.cvd` or `daily.cld`.
    pub fn from_file_name(file_name: &str) -> Option<Self> {
        let (name, ext) = file_name.rsplit_once('.')?;
        let kind = match ext {
            "cvd" => DbKind::Cvd,
            "cld" => DbKind::Cld,
            _ => return None,
        };
        (!name.is_empty()).then(|| Self {
            name: name.to_owned(),
            kind,
            version: None,
            header_signature: HeaderSignature::Required,
        })
    }

    /// Requires `version`.
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Reports the legacy header signature's verdict instead of requiring it.
    #[must_use]
    pub fn header_signature(mut self, rule: HeaderSignature) -> Self {
        self.header_signature = rule;
        self
    }
}

/// A tar member of a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a successful verification learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Database name.
    pub name: String,
    /// CVD or CLD.
    pub kind: DbKind,
    /// The parsed header.
    pub header: Header,
    /// Size of the whole file.
    pub file_size: u64,
    /// Size of the uncompressed tar archive (up to its end marker).
    pub tar_size: u64,
    /// Whether the body was gzip-compressed.
    pub compressed: bool,
    /// Members in archive order.
    pub members: Vec<Member>,
    /// The legacy header signature (always [`Legacy::Verified`] for a CVD
    /// verified with [`HeaderSignature::Required`]).
    pub legacy: Legacy,
}

/// Verifies the file at `path`.
pub fn verify_file(
    path: &Path,
    expected: &Expected,
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    verify_reader(BufReader::new(File::open(path)?), expected, keys)
}

/// Verifies a file held in memory.
pub fn verify_bytes(
    bytes: &[u8],
    expected: &Expected,
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    verify_reader(bytes, expected, keys)
}

/// Verifies a file read from `reader`, in one pass.
pub fn verify_reader(
    mut reader: impl Read,
    expected: &Expected,
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    let mut head = [0u8; HEADER_LEN];
    let got = fill_raw(&mut reader, &mut head)?;
    if got < HEADER_LEN {
        return Err(VerifyError::Truncated(format!(
            "file is {got} bytes, shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let header = Header::parse(&head)?;
    let info_line = check_header_form(&head)?;
    if let Some(want) = expected.version
        && want != header.version
    {
        return Err(VerifyError::WrongVersion {
            expected: want,
            got: header.version,
        });
    }
    let reported =
        expected.kind == DbKind::Cvd && expected.header_signature == HeaderSignature::Reported;
    let mut legacy = Legacy::Absent;
    let signed = match (expected.kind, &header.md5, &header.dsig) {
        // A CLD carrying md5 and dsig (a CVD saved under the CLD name) must
        // pass the CVD checks too: no header byte goes unchecked.
        (_, Some(md5), Some(dsig)) => Some((*md5, Some(dsig.clone()))),
        (DbKind::Cld, None, None) => None,
        (DbKind::Cvd, None, None) if reported => None,
        // `sigtool --unsigned` writes the body's md5 and `X` for the
        // signature: the md5 is still checked, the signature is absent.
        (DbKind::Cvd, Some(md5), None) if reported => Some((*md5, None)),
        (DbKind::Cvd, None, Some(_)) if reported => {
            legacy = Legacy::Failed("header has a signature but no md5".into());
            None
        }
        (DbKind::Cvd, _, _) => return Err(VerifyError::Unsigned),
        (DbKind::Cld, _, _) => {
            return Err(VerifyError::HeaderForm(
                "CLD header has only one of md5 and dsig".into(),
            ));
        }
    };

    let mut body = HashingReader {
        inner: reader,
        md5: Md5::new(),
        count: 0,
    };
    let scan = scan_body(&mut body, &expected.name);
    io::copy(&mut body, &mut io::sink())?;
    let body_md5: [u8; 16] = body.md5.finalize().into();

    if let Some((md5, dsig)) = signed {
        let verdict = if body_md5 != md5 {
            match scan {
                Err(VerifyError::Truncated(why)) => {
                    return Err(VerifyError::Truncated(format!(
                        "{why}; md5 of body does not match header"
                    )));
                }
                _ => Err(VerifyError::Md5Mismatch),
            }
        } else {
            match &dsig {
                Some(dsig) => signature::verify_md5(dsig.as_bytes(), &md5, keys.keys(KeyRole::Cvd))
                    .map_err(|e| VerifyError::signature(Signed::Header, e)),
                None => Ok(()),
            }
        };
        legacy = match (verdict, dsig) {
            (Ok(()), Some(_)) => Legacy::Verified,
            (Ok(()), None) => Legacy::Absent,
            (Err(e), _) if reported => Legacy::Failed(e.to_string()),
            (Err(e), _) => return Err(e),
        };
    }
    let scan = scan?;
    check_info(&scan, &info_line, &expected.name, keys)?;
    Ok(Verified {
        name: expected.name.clone(),
        kind: expected.kind,
        header,
        file_size: HEADER_LEN as u64 + body.count,
        tar_size: scan.tar_size,
        compressed: scan.compressed,
        members: scan
            .members
            .into_iter()
            .map(|m| Member {
                name: m.name,
                size: m.size,
            })
            .collect(),
        legacy,
    })
}

/// Reads the header from the raw input (not through the body hasher).
fn fill_raw(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, VerifyError> {
    super::tar::fill_with(reader, buf, VerifyError::Io)
}

/// Checks the header is in sigtool's exact form and returns the line that
/// `<db>.info` must repeat (md5 and dsig replaced by `X`).
fn check_header_form(head: &[u8]) -> Result<String, VerifyError> {
    let text = header::text(head)?;
    let line = text.trim_end_matches(' ');
    if line.contains(['\0', '\n', '\r']) {
        return Err(VerifyError::HeaderForm(
            "header is not padded with spaces".into(),
        ));
    }
    let mut fields: Vec<&str> = line.split(':').collect();
    let (Some(md5), Some(_)) = (fields.get(5).copied(), fields.get(6)) else {
        return Err(VerifyError::HeaderForm("header has too few fields".into()));
    };
    if md5 != "X"
        && !(md5.len() == 32
            && md5
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(VerifyError::HeaderForm(
            "header md5 is not 32 lower-case hex digits".into(),
        ));
    }
    for i in [5, 6] {
        if let Some(field) = fields.get_mut(i) {
            *field = "X";
        }
    }
    Ok(fields.join(":"))
}

/// Passes bytes through while hashing and counting them.
struct HashingReader<R> {
    inner: R,
    md5: Md5,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = buf.get(..n).unwrap_or_default();
        self.md5.update(data);
        self.count += n as u64;
        Ok(n)
    }
}

struct ScannedMember {
    name: String,
    size: u64,
    sha256: [u8; 32],
}

struct Scan {
    compressed: bool,
    tar_size: u64,
    members: Vec<ScannedMember>,
    info: Vec<u8>,
}

/// Decompresses (if gzip) and walks the tar archive, hashing each member and
/// keeping `<name>.info`.
fn scan_body(body: &mut impl Read, name: &str) -> Result<Scan, VerifyError> {
    let mut magic = [0u8; 2];
    let got = fill_raw(body, &mut magic)?;
    if got == 0 {
        return Err(VerifyError::Truncated("no body after the header".into()));
    }
    let peeked = Cursor::new(magic.get(..got).unwrap_or_default().to_vec());
    let compressed = magic == [0x1f, 0x8b];
    let source = peeked.chain(body);
    if compressed {
        let mut gz = GzDecoder::new(source);
        let scan = walk_tar(&mut gz, name, compressed)?;
        // Read to the end of the gzip stream so its CRC and length are checked.
        io::copy(&mut gz, &mut io::sink()).map_err(super::tar::stream_error)?;
        Ok(scan)
    } else {
        walk_tar(source, name, compressed)
    }
}

fn walk_tar(stream: impl Read, name: &str, compressed: bool) -> Result<Scan, VerifyError> {
    let info_name = format!("{name}.info");
    let mut tar = TarReader::new(stream);
    let mut members: Vec<ScannedMember> = Vec::new();
    let mut seen = HashSet::new();
    let mut info: Option<Vec<u8>> = None;
    while let Some(member) = tar.next_header()? {
        if !seen.insert(member.name.clone()) {
            return Err(VerifyError::Tar(format!(
                "member {} appears twice",
                member.name
            )));
        }
        if seen.len() > MAX_MEMBERS {
            return Err(VerifyError::Tar(format!("more than {MAX_MEMBERS} members")));
        }
        if tar.consumed.saturating_add(member.size) > MAX_TAR_BYTES {
            return Err(VerifyError::Tar(format!(
                "archive is larger than {MAX_TAR_BYTES} bytes"
            )));
        }
        // libclamav takes the first member ending in .info as the manifest.
        let is_info = info.is_none() && member.name.to_ascii_lowercase().ends_with(".info");
        if is_info && member.name != info_name {
            return Err(VerifyError::WrongName {
                expected: name.to_owned(),
                got: member.name.clone(),
            });
        }
        if is_info && member.size > MAX_INFO_BYTES as u64 {
            return Err(VerifyError::Info(format!(
                "{} is {} bytes, more than {MAX_INFO_BYTES}",
                member.name, member.size
            )));
        }
        let mut sha = Sha256::new();
        let mut kept = Vec::new();
        tar.read_member(&member, |chunk| {
            sha.update(chunk);
            if is_info {
                kept.extend_from_slice(chunk);
            }
        })?;
        if is_info {
            info = Some(kept);
        }
        members.push(ScannedMember {
            name: member.name,
            size: member.size,
            sha256: sha.finalize().into(),
        });
    }
    let info = info.ok_or_else(|| VerifyError::Info(format!("no {info_name} in the archive")))?;
    Ok(Scan {
        compressed,
        tar_size: tar.consumed,
        members,
        info,
    })
}

fn check_info(
    scan: &Scan,
    info_line: &str,
    name: &str,
    keys: &TrustedKeys,
) -> Result<(), VerifyError> {
    let info = Info::parse(&scan.info)?;
    signature::verify_pss(
        info.dsig.as_bytes(),
        &info.signed_digest,
        keys.keys(KeyRole::Info),
    )
    .map_err(|e| VerifyError::signature(Signed::Info, e))?;
    if info.header_line != info_line {
        return Err(VerifyError::Mismatch(format!(
            "header {info_line:?} differs from the {name}.info header line {:?}",
            info.header_line
        )));
    }
    let info_name = format!("{name}.info");
    for member in &scan.members {
        if member.name == "COPYING" || member.name == info_name {
            continue;
        }
        let entry = info.entry(&member.name).ok_or_else(|| {
            VerifyError::Mismatch(format!(
                "member {} is not listed in {info_name}",
                member.name
            ))
        })?;
        if entry.size != member.size {
            return Err(VerifyError::Mismatch(format!(
                "member {} is {} bytes, {info_name} says {}",
                member.name, member.size, entry.size
            )));
        }
        if entry.sha256 != member.sha256 {
            return Err(VerifyError::Mismatch(format!(
                "sha256 of member {} is {}, {info_name} says {}",
                member.name,
                hex(&member.sha256),
                hex(&entry.sha256)
            )));
        }
    }
    if let Some(missing) = info
        .entries
        .iter()
        .find(|e| !scan.members.iter().any(|m| m.name == e.name))
    {
        return Err(VerifyError::Mismatch(format!(
            "{info_name} lists {}, which is not in the archive",
            missing.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvd::build::{self, DbSpec, LegacySignature};
    use crate::cvd::testkeys;

    fn built(form: LegacySignature) -> Vec<u8> {
        build::cvd(
            &DbSpec::new("daily", 7).legacy_header(form),
            &testkeys::signing_keys(),
        )
        .unwrap()
    }

    fn reported() -> Expected {
        Expected::cvd("daily").header_signature(HeaderSignature::Reported)
    }

    #[test]
    fn the_legacy_verdict_is_reported_for_each_header_form() {
        let keys = testkeys::trusted();
        let legacy = |bytes: &[u8]| verify_bytes(bytes, &reported(), &keys).map(|v| v.legacy);
        assert_eq!(
            legacy(&built(LegacySignature::Signed)).unwrap(),
            Legacy::Verified
        );
        assert_eq!(
            legacy(&built(LegacySignature::Absent)).unwrap(),
            Legacy::Absent
        );
        assert_eq!(
            legacy(&built(LegacySignature::Md5Only)).unwrap(),
            Legacy::Absent
        );
        // Signed with a key the mirror does not trust: reported, not fatal.
        let info_only =
            TrustedKeys::none().with(KeyRole::Info, testkeys::public_key(KeyRole::Info));
        let untrusted = verify_bytes(&built(LegacySignature::Signed), &reported(), &info_only)
            .map(|v| v.legacy);
        assert!(matches!(untrusted, Ok(Legacy::Failed(_))), "{untrusted:?}");
        // A damaged body is still an error whatever the header says.
        let mut bytes = built(LegacySignature::Md5Only);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(legacy(&bytes).is_err());
    }

    #[test]
    fn without_a_legacy_signature_a_required_one_is_an_error() {
        let keys = testkeys::trusted();
        for form in [LegacySignature::Absent, LegacySignature::Md5Only] {
            let err = verify_bytes(&built(form), &Expected::cvd("daily"), &keys).unwrap_err();
            assert!(matches!(err, VerifyError::Unsigned), "{form:?}: {err}");
        }
    }
}
