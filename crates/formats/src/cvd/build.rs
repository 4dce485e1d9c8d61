//! Builds valid CVD, CLD and cdiff files signed with test keys: fixtures for
//! tests and for `cvdmirror demo`, never for real clients (`freshclam` only
//! trusts ClamAV's keys, so it rejects everything built here).
//!
//! A generated database holds `COPYING`, `<db>.info`, `<db>.hdb` with one
//! MD5 signature line per requested signature, and, when a target size is
//! asked for, `<db>.pad`: pseudo-random (incompressible) filler stored
//! without compression, so a 60 MB file takes a fraction of a second. Output
//! is deterministic: the same spec and keys give the same bytes.

mod bulk;
pub mod sign;

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::header::HEADER_LEN;
use super::info::{InfoEntry, hex, render_unsigned};
use super::signature::{PrivateKey, sign_md5, sign_pss};
use super::tar::{BLOCK, write_end, write_member};
use super::testkeys::SigningKeys;
use bulk::{Filler, gzip, sha256_of, stored_overhead};

/// Everything that varies between generated databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSpec {
    /// Database name (`daily`, `main`, `bytecode`, …): letters, digits, `_`, `-`.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Number of signatures (lines in `<db>.hdb`).
    pub signatures: u32,
    /// Functionality level.
    pub flevel: u32,
    /// Build time, seconds since the epoch (the header's last field).
    pub stime: u64,
    /// Human-readable build time; derived from `stime` (UTC) when `None`.
    pub built: Option<String>,
    /// Builder name.
    pub builder: String,
    /// Approximate size of the whole file in bytes; 0 for no filler.
    pub target_size: u64,
    /// What a CVD's header carries in its md5 and dsig fields.
    pub legacy_signature: LegacySignature,
}

/// The legacy (pre-1.5) signature in a CVD header: the MD5 of the body and
/// an RSA signature of that MD5. ClamAV 1.5 does not need it when a valid
/// `.sign` vouches for the CVD (see [`sign`]). Whatever the choice, the
/// `<db>.info` inside stays signed with the test info key, since ClamAV
/// checks that signature on every load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegacySignature {
    /// md5 and dsig present and valid.
    #[default]
    Signed,
    /// `X:X` for md5 and dsig, as a CLD header (and the header line inside
    /// `<db>.info`) carries them.
    Absent,
    /// The real md5 and `X` for dsig: the header `sigtool --build
    /// --unsigned` writes (it puts `X:X` only in the `.info` header line).
    Md5Only,
}

impl DbSpec {
    /// A small database: 10 signatures, f-level 90, builder `cvdmirror`, and
    /// an `stime` that grows with the version (one hour per version).
    pub fn new(name: &str, version: u32) -> Self {
        Self {
            name: name.to_owned(),
            version,
            signatures: 10,
            flevel: 90,
            stime: 1_600_000_000 + u64::from(version) * 3_600,
            built: None,
            builder: "cvdmirror".to_owned(),
            target_size: 0,
            legacy_signature: LegacySignature::Signed,
        }
    }

    /// Sets the number of signatures.
    #[must_use]
    pub fn signatures(mut self, signatures: u32) -> Self {
        self.signatures = signatures;
        self
    }

    /// Sets the functionality level.
    #[must_use]
    pub fn flevel(mut self, flevel: u32) -> Self {
        self.flevel = flevel;
        self
    }

    /// Sets the build time (epoch seconds).
    #[must_use]
    pub fn stime(mut self, stime: u64) -> Self {
        self.stime = stime;
        self
    }

    /// Sets the human-readable build time.
    #[must_use]
    pub fn built(mut self, built: &str) -> Self {
        self.built = Some(built.to_owned());
        self
    }

    /// Sets the builder name.
    #[must_use]
    pub fn builder(mut self, builder: &str) -> Self {
        self.builder = builder.to_owned();
        self
    }

    /// Pads the file to about `bytes` bytes.
    #[must_use]
    pub fn size(mut self, bytes: u64) -> Self {
        self.target_size = bytes;
        self
    }

    /// Whether [`cvd`] signs the header (`true`, the default) or writes
    /// `X:X` for its md5 and dsig (`false`, [`LegacySignature::Absent`]):
    /// a CVD only a ClamAV 1.5 `.sign` can vouch for.
    #[must_use]
    pub fn legacy_signature(self, signed: bool) -> Self {
        self.legacy_header(if signed {
            LegacySignature::Signed
        } else {
            LegacySignature::Absent
        })
    }

    /// Sets what [`cvd`] writes in the header's md5 and dsig fields.
    #[must_use]
    pub fn legacy_header(mut self, legacy: LegacySignature) -> Self {
        self.legacy_signature = legacy;
        self
    }

    /// The header line with `X` for md5 and dsig: a CLD's header and the
    /// first line of `<db>.info`.
    pub fn header_line(&self) -> String {
        self.line("X", "X")
    }

    fn line(&self, md5: &str, dsig: &str) -> String {
        let built = self.built.clone().unwrap_or_else(|| build_time(self.stime));
        format!(
            "ClamAV-VDB:{built}:{}:{}:{}:{md5}:{dsig}:{}:{}",
            self.version, self.signatures, self.flevel, self.builder, self.stime
        )
    }

    fn check(&self) -> io::Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let text_ok =
            |s: &str| !s.is_empty() && !s.contains([':', '\n', '\r', '\0']) && s.trim() == s;
        if !name_ok || !text_ok(&self.builder) || !self.built.as_deref().is_none_or(text_ok) {
            return Err(invalid(format!("unusable database spec {self:?}")));
        }
        Ok(())
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// Formats epoch seconds as ClamAV's header time, `%d %b %Y %H-%M %z`, in UTC.
pub fn build_time(stime: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (stime / 86_400, stime % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{day:02} {month_name} {year} {:02}-{:02} +0000",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

/// The signature lines of `<db>.hdb`: line `i` depends only on the name and
/// `i`, so a later version with more signatures extends an earlier one.
pub fn signature_line(name: &str, i: u32) -> String {
    let md5: [u8; 16] = Md5::digest(format!("{name}-{i}")).into();
    format!(
        "{}:{}:Cvdmirror.Test.{name}-{i}",
        hex(&md5),
        64 + u64::from(i)
    )
}

fn hdb(spec: &DbSpec) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..spec.signatures {
        out.push_str(&signature_line(&spec.name, i));
        out.push('\n');
    }
    out.into_bytes()
}

const COPYING: &[u8] = b"Test database generated by cvdmirror, signed with a test key.\n\
It contains no real signatures and no ClamAV client will load it.\n";

fn filler_seed(spec: &DbSpec) -> String {
    format!("{}-{}", spec.name, spec.version)
}

fn tar_len(size: u64) -> u64 {
    BLOCK as u64 + size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The uncompressed tar archive of a database, and its `.info`.
fn archive(
    spec: &DbSpec,
    keys: &SigningKeys,
    gzip_overhead: impl Fn(u64) -> u64,
) -> io::Result<Vec<u8>> {
    spec.check()?;
    let hdb = hdb(spec);
    let mut entries = Vec::new();
    if !hdb.is_empty() {
        entries.push(InfoEntry {
            name: format!("{}.hdb", spec.name),
            size: hdb.len() as u64,
            sha256: Sha256::digest(&hdb).into(),
        });
    }
    // Size the filler so the whole file lands near the target.
    let info_estimate = render_unsigned(&spec.header_line(), &entries).len() as u64 + 200 + 350;
    let fixed = HEADER_LEN as u64
        + tar_len(COPYING.len() as u64)
        + tar_len(info_estimate)
        + tar_len(hdb.len() as u64)
        + 2 * BLOCK as u64;
    let pad_len = spec
        .target_size
        .saturating_sub(fixed + BLOCK as u64 + gzip_overhead(spec.target_size));
    if pad_len > 0 {
        let sha256 = sha256_of(Filler::new(&filler_seed(spec), pad_len))?;
        entries.push(InfoEntry {
            name: format!("{}.pad", spec.name),
            size: pad_len,
            sha256,
        });
    }
    let unsigned = render_unsigned(&spec.header_line(), &entries);
    let dsig = sign_pss(&Sha256::digest(unsigned.as_bytes()).into(), &keys.info);
    let info = format!("{unsigned}DSIG:{dsig}\n").into_bytes();

    let mut tar = Vec::with_capacity(usize::try_from(fixed + pad_len).unwrap_or(0));
    write_member(&mut tar, "COPYING", COPYING.len() as u64, &mut &COPYING[..])?;
    write_member(
        &mut tar,
        &format!("{}.info", spec.name),
        info.len() as u64,
        &mut &info[..],
    )?;
    if !hdb.is_empty() {
        write_member(
            &mut tar,
            &format!("{}.hdb", spec.name),
            hdb.len() as u64,
            &mut &hdb[..],
        )?;
    }
    if pad_len > 0 {
        write_member(
            &mut tar,
            &format!("{}.pad", spec.name),
            pad_len,
            &mut Filler::new(&filler_seed(spec), pad_len),
        )?;
    }
    write_end(&mut tar)?;
    Ok(tar)
}

fn padded_header(line: &str) -> io::Result<Vec<u8>> {
    if line.len() > HEADER_LEN {
        return Err(invalid(format!(
            "header line is {} bytes, more than {HEADER_LEN}",
            line.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(line.as_bytes());
    out.resize(HEADER_LEN, b' ');
    Ok(out)
}

/// Builds a CVD, its header signed unless the spec says otherwise
/// ([`DbSpec::legacy_signature`]).
pub fn cvd(spec: &DbSpec, keys: &SigningKeys) -> io::Result<Vec<u8>> {
    let body = gzip(&archive(spec, keys, stored_overhead)?)?;
    let md5: [u8; 16] = Md5::digest(&body).into();
    let header = match spec.legacy_signature {
        LegacySignature::Signed => spec.line(&hex(&md5), &sign_md5(&md5, &keys.cvd)),
        LegacySignature::Absent => spec.header_line(),
        LegacySignature::Md5Only => spec.line(&hex(&md5), "X"),
    };
    let mut out = padded_header(&header)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Builds a CLD: header with `X` for md5 and dsig, body a plain tar (as
/// `freshclam` writes them by default) or gzip-compressed.
pub fn cld(spec: &DbSpec, keys: &SigningKeys, compressed: bool) -> io::Result<Vec<u8>> {
    let tar = if compressed {
        archive(spec, keys, stored_overhead)?
    } else {
        archive(spec, keys, |_| 0)?
    };
    let body = if compressed { gzip(&tar)? } else { tar };
    let mut out = padded_header(&spec.header_line())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The script of the generated cdiff for `version`: it opens `<db>.hdb`,
/// adds one signature line and closes it. Valid cdiff syntax, but it does not
/// rewrite `<db>.info`, so applying it yields no verifiable database: the
/// mirror only verifies and serves cdiffs, it never applies them.
pub fn cdiff_script(name: &str, version: u32) -> String {
    format!(
        "OPEN {name}.hdb\nADD {}\nCLOSE\n",
        signature_line(name, 1_000_000 + version)
    )
}

/// Wraps `script` as a cdiff for `version`, signed with `key`.
pub fn cdiff_from_script(version: u32, script: &[u8], key: &PrivateKey) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(script)?;
    let mut out = format!("ClamAV-Diff:{version}:{}:", script.len()).into_bytes();
    out.extend_from_slice(&gz.finish()?);
    let dsig = sign_pss(&Sha256::digest(&out).into(), key);
    out.push(b':');
    out.extend_from_slice(dsig.as_bytes());
    Ok(out)
}

/// The signed cdiff `<name>-<version>.cdiff` (script from [`cdiff_script`]).
pub fn cdiff(name: &str, version: u32, keys: &SigningKeys) -> io::Result<Vec<u8>> {
    cdiff_from_script(version, cdiff_script(name, version).as_bytes(), &keys.cdiff)
}

/// The cdiffs leading from version `from` to `to`: `(N, <name>-N.cdiff)`
/// for N in `from+1..=to`.
pub fn cdiff_chain(
    name: &str,
    from: u32,
    to: u32,
    keys: &SigningKeys,
) -> io::Result<Vec<(u32, Vec<u8>)>> {
    (from.saturating_add(1)..=to)
        .map(|v| Ok((v, cdiff(name, v, keys)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_matches_clamav_format() {
        assert_eq!(build_time(0), "01 Jan 1970 00-00 +0000");
        // 1273845430 is 14 May 2010 13:57:10 UTC (09-57 -0400 in the fixture).
        assert_eq!(build_time(1_273_845_430), "14 May 2010 13-57 +0000");
        assert_eq!(build_time(951_782_400), "29 Feb 2000 00-00 +0000");
    }

    #[test]
    fn header_line_has_all_fields() {
        let spec = DbSpec::new("daily", 27_000)
            .signatures(5)
            .flevel(200)
            .stime(1_700_000_000)
            .builder("me");
        assert_eq!(
            spec.header_line(),
            "ClamAV-VDB:14 Nov 2023 22-13 +0000:27000:5:200:X:X:me:1700000000"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let keys = crate::cvd::testkeys::signing_keys();
        assert!(cvd(&DbSpec::new("da/ily", 1), &keys).is_err());
        assert!(cvd(&DbSpec::new("daily", 1).builder("a:b"), &keys).is_err());
        assert!(cvd(&DbSpec::new("daily", 1).builder(&"x".repeat(400)), &keys).is_err());
    }

    #[test]
    fn unsigned_cvds_carry_no_legacy_signature() {
        use crate::cvd::{Expected, Header, verify_bytes};

        let keys = crate::cvd::testkeys::signing_keys();
        let trusted = keys.trusted();
        let spec = DbSpec::new("daily", 12).size(20_000);
        let signed = cvd(&spec, &keys).unwrap();
        let unsigned = cvd(&spec.clone().legacy_signature(false), &keys).unwrap();
        let md5_only = cvd(&spec.clone().legacy_header(LegacySignature::Md5Only), &keys).unwrap();

        let text = |file: &[u8]| String::from_utf8(file[..HEADER_LEN].to_vec()).unwrap();
        let fields = |file: &[u8]| {
            let text = text(file);
            let fields: Vec<String> = text.trim_end().split(':').map(str::to_owned).collect();
            (fields[5].clone(), fields[6].clone())
        };
        assert_eq!(fields(&unsigned), ("X".into(), "X".into()));
        let (md5, dsig) = fields(&signed);
        assert_eq!((md5.len(), dsig.len() > 1), (32, true));
        assert_eq!(fields(&md5_only), (md5, "X".into()));
        // Only the md5 and dsig fields differ; the body is the same.
        assert_eq!(
            text(&unsigned).trim_end(),
            spec.header_line(),
            "the header line is the .info's"
        );
        assert_eq!(signed[HEADER_LEN..], unsigned[HEADER_LEN..]);
        assert_eq!(signed[HEADER_LEN..], md5_only[HEADER_LEN..]);
        let header = Header::parse(&unsigned).unwrap();
        assert_eq!((header.md5, header.dsig, header.version), (None, None, 12));

        // The legacy check refuses it as a CVD, while its body (and signed
        // .info) verify: as a compressed CLD it is the same file.
        assert!(verify_bytes(&signed, &Expected::cvd("daily"), &trusted).is_ok());
        assert!(verify_bytes(&unsigned, &Expected::cvd("daily"), &trusted).is_err());
        assert!(verify_bytes(&md5_only, &Expected::cvd("daily"), &trusted).is_err());
        assert_eq!(unsigned, cld(&spec, &keys, true).unwrap());
        let ok = verify_bytes(&unsigned, &Expected::cld("daily"), &trusted).unwrap();
        assert!(ok.members.iter().any(|m| m.name == "daily.info"));
        // ... and that .info is signed: without the test info key it fails.
        let official = crate::cvd::TrustedKeys::official();
        let err = verify_bytes(&unsigned, &Expected::cld("daily"), &official).unwrap_err();
        assert!(err.to_string().contains("info"), "{err}");
    }

    #[test]
    fn output_is_deterministic() {
        let keys = crate::cvd::testkeys::signing_keys();
        let spec = DbSpec::new("main", 3).size(100_000);
        assert_eq!(cvd(&spec, &keys).unwrap(), cvd(&spec, &keys).unwrap());
    }
}
