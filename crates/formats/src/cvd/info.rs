//! `<db>.info`, the signed manifest inside every CVD and CLD:
//!
//! ```text
//! ClamAV-VDB:<header with X:X for md5 and dsig>
//! <member>:<size>:<sha256 hex>        (one per member, COPYING excluded)
//! DSIG:<PSS-style signature over SHA-256 of every byte above this line>
//! ```
//!
//! Parsed with libclamav's rules (`cli_loadinfo`), plus one of cvdmirror's:
//! the DSIG line must be the last and end with a newline, so that no byte of
//! the file escapes the signature (a trailing `a` would add a zero digit).

use sha2::{Digest, Sha256};

use super::error::VerifyError;

/// Largest `.info` accepted; real ones are a few KB.
pub const MAX_INFO_BYTES: usize = 4 * 1024 * 1024;

/// A member as listed in `.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoEntry {
    /// Member name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the member's content.
    pub sha256: [u8; 32],
}

/// A parsed `.info` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The first line, without its line ending.
    pub header_line: String,
    /// The listed members, in order.
    pub entries: Vec<InfoEntry>,
    /// The signature string after `DSIG:`.
    pub dsig: String,
    /// SHA-256 of every byte before the DSIG line (what the DSIG signs).
    pub signed_digest: [u8; 32],
}

fn bad(reason: impl Into<String>) -> VerifyError {
    VerifyError::Info(reason.into())
}

impl Info {
    /// Parses `.info` content.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        if bytes.len() > MAX_INFO_BYTES {
            return Err(bad(format!(
                "{} bytes, more than {MAX_INFO_BYTES}",
                bytes.len()
            )));
        }
        let mut header_line = None;
        let mut entries: Vec<InfoEntry> = Vec::new();
        let mut offset = 0usize;
        for (number, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let line_no = number + 1;
            let start = offset;
            offset += raw.len();
            if let Some(sig) = raw.strip_prefix(b"DSIG:") {
                let sig = sig
                    .strip_suffix(b"\n")
                    .ok_or_else(|| bad("DSIG line does not end with a newline"))?;
                if offset != bytes.len() {
                    return Err(bad("data after the DSIG line"));
                }
                let dsig = String::from_utf8(sig.to_vec()).map_err(|_| bad("DSIG is not ASCII"))?;
                let header_line = header_line.ok_or_else(|| bad("no ClamAV-VDB header line"))?;
                let signed_digest = Sha256::digest(bytes.get(..start).unwrap_or_default()).into();
                return Ok(Self {
                    header_line,
                    entries,
                    dsig,
                    signed_digest,
                });
            }
            let text = std::str::from_utf8(raw)
                .map_err(|_| bad(format!("line {line_no} is not UTF-8")))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.starts_with("ClamAV-VDB:") {
                if header_line.is_some() {
                    return Err(bad(format!("second header line at line {line_no}")));
                }
                header_line = Some(text.to_owned());
                continue;
            }
            if header_line.is_none() {
                return Err(bad("first line is not a ClamAV-VDB header"));
            }
            let entry = parse_entry(text)
                .ok_or_else(|| bad(format!("line {line_no} is not name:size:sha256")))?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(bad(format!("{} is listed twice", entry.name)));
            }
            entries.push(entry);
        }
        Err(bad("no DSIG line"))
    }

    /// The entry for `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&InfoEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn parse_entry(text: &str) -> Option<InfoEntry> {
    let mut fields = text.split(':');
    let (name, size, hash) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some()
        || name.is_empty()
        || size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(InfoEntry {
        name: name.to_owned(),
        size: size.parse().ok()?,
        sha256: parse_hex32(hash)?,
    })
}

/// Parses 64 hex digits (either case, as libclamav's `cli_hex2str` does).
fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders the part of a `.info` that the DSIG signs (header line and one
/// line per entry); append `DSIG:<sig>\n` to finish it.
pub fn render_unsigned(header_line: &str, entries: &[InfoEntry]) -> String {
    let mut out = format!("{header_line}\n");
    for e in entries {
        out.push_str(&format!("{}:{}:{}\n", e.name, e.size, hex(&e.sha256)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ClamAV-VDB:14 May 2010 09-57 -0400:19:3:51:X:X:nervous:1273845430\n\
        last.hdb:114:d0bd9f94f9a58b21449d23ea14c9a4a5e3b817106e4ce43793fda8a09d435e55\n";

    #[test]
    fn parses_and_digests_the_signed_part() {
        let text = format!("{SAMPLE}DSIG:abc\n");
        let info = Info::parse(text.as_bytes()).unwrap();
        assert_eq!(info.entries.len(), 1);
        assert_eq!(info.entry("last.hdb").unwrap().size, 114);
        assert_eq!(info.dsig, "abc");
        assert_eq!(
            info.signed_digest,
            <[u8; 32]>::from(Sha256::digest(SAMPLE.as_bytes()))
        );
        let entries = info.entries.clone();
        assert_eq!(render_unsigned(&info.header_line, &entries), SAMPLE);
    }

    #[test]
    fn refuses_malformed_manifests() {
        for text in [
            SAMPLE.to_owned(),
            format!("{SAMPLE}DSIG:abc"),
            format!("{SAMPLE}DSIG:abc\nmore\n"),
            format!("{SAMPLE}x:1\nDSIG:abc\n"),
            format!("{SAMPLE}x:1:2:3\nDSIG:abc\n"),
            format!("{SAMPLE}last.hdb:1:{}\nDSIG:abc\n", "0".repeat(64)),
            "last.hdb:1:00\nDSIG:abc\n".to_owned(),
            format!("{SAMPLE}{SAMPLE}DSIG:abc\n"),
        ] {
            assert!(
                matches!(Info::parse(text.as_bytes()), Err(VerifyError::Info(_))),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let _ = Info::parse(&bytes);
        }
    }
}
