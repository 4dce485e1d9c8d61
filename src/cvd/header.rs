//! The 512-byte CVD/CLD header: `ClamAV-VDB:time:version:sigs:flevel:md5:dsig:builder:stime`,
//! space padded.

use thiserror::Error;

/// Length of the ASCII header in front of every CVD and CLD body.
pub const HEADER_LEN: usize = 512;

const MAGIC: &str = "ClamAV-VDB";

/// A parsed CVD or CLD header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Human-readable build time, e.g. `08 Mar 2021 10-49 +0000`.
    pub built: String,
    /// Database version (the number clients compare).
    pub version: u32,
    /// Number of signatures.
    pub signatures: u32,
    /// Minimum functionality level of the engine that can load it.
    pub flevel: u32,
    /// MD5 of the body, absent (`X`) in CLD files.
    pub md5: Option<[u8; 16]>,
    /// Header signature over the MD5, absent (`X`) in CLD files.
    pub dsig: Option<String>,
    /// Who built it.
    pub builder: String,
    /// Build time as seconds since the Unix epoch.
    pub stime: u64,
}

/// Why a header could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 512 bytes.
    #[error("header is {0} bytes, expected {HEADER_LEN}")]
    Short(usize),
    /// Not ASCII text starting with `ClamAV-VDB:`.
    #[error("not a ClamAV database header")]
    BadMagic,
    /// A field is missing or malformed.
    #[error("header field {field} is invalid")]
    BadField {
        /// Name of the offending field.
        field: &'static str,
    },
}

impl Header {
    /// Parses the first 512 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let raw = bytes
            .get(..HEADER_LEN)
            .ok_or(HeaderError::Short(bytes.len()))?;
        let text = std::str::from_utf8(raw).map_err(|_| HeaderError::BadMagic)?;
        let text = text.trim_end_matches([' ', '\0', '\n', '\r']);
        let mut fields = text.split(':');
        if fields.next() != Some(MAGIC) {
            return Err(HeaderError::BadMagic);
        }
        let mut next = |field: &'static str| fields.next().ok_or(HeaderError::BadField { field });
        let built = next("time")?.to_owned();
        let version = number(next("version")?, "version")?;
        let signatures = number(next("signatures")?, "signatures")?;
        let flevel = number(next("flevel")?, "flevel")?;
        let md5 = match next("md5")? {
            "X" => None,
            hex => Some(parse_md5(hex).ok_or(HeaderError::BadField { field: "md5" })?),
        };
        let dsig = match next("dsig")? {
            "X" => None,
            sig => Some(sig.to_owned()),
        };
        let builder = next("builder")?.to_owned();
        let stime = number(next("stime")?.trim(), "stime")?;
        Ok(Self {
            built,
            version,
            signatures,
            flevel,
            md5,
            dsig,
            builder,
            stime,
        })
    }
}

fn number<T: std::str::FromStr>(s: &str, field: &'static str) -> Result<T, HeaderError> {
    s.parse().map_err(|_| HeaderError::BadField { field })
}

fn parse_md5(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.resize(HEADER_LEN, b' ');
        v
    }

    #[test]
    fn parses_a_cld_header() {
        let h = Header::parse(&padded(
            "ClamAV-VDB:08 Mar 2021 10-49 +0000:268:1:90:X:X:raynman:1615200540",
        ))
        .unwrap();
        assert_eq!(h.version, 268);
        assert_eq!(h.stime, 1_615_200_540);
        assert_eq!(h.md5, None);
    }

    #[test]
    fn rejects_short_and_foreign_input() {
        assert_eq!(Header::parse(b"ClamAV-VDB"), Err(HeaderError::Short(10)));
        assert_eq!(Header::parse(&padded("GIF89a")), Err(HeaderError::BadMagic));
    }
}
