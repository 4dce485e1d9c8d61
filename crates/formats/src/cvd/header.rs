//! The 512-byte CVD/CLD header: `ClamAV-VDB:time:version:sigs:flevel:md5:dsig:builder:stime`,
//! space padded.
//!
//! The server reads only this header (its `stime` becomes `Last-Modified`);
//! verification also parses the same line as repeated inside `<db>.info`.

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
        Self::parse_line(text(bytes)?)
    }

    /// Parses a header line without the 512-byte framing: the first line of
    /// a `<db>.info` file, which repeats the header with `X` for md5 and dsig.
    pub fn parse_line(line: &str) -> Result<Self, HeaderError> {
        let text = line.trim_end_matches([' ', '\0', '\n', '\r']);
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

/// The 512-byte header as text, padding included (what [`Header::parse`]
/// reads before trimming).
pub fn text(bytes: &[u8]) -> Result<&str, HeaderError> {
    let raw = bytes
        .get(..HEADER_LEN)
        .ok_or(HeaderError::Short(bytes.len()))?;
    std::str::from_utf8(raw).map_err(|_| HeaderError::BadMagic)
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
    fn parses_the_info_form_of_the_line() {
        let h = Header::parse_line(
            "ClamAV-VDB:14 May 2010 09-57 -0400:19:3:51:X:X:nervous:1273845430\n",
        )
        .unwrap();
        assert_eq!((h.version, h.signatures, h.flevel), (19, 3, 51));
        assert_eq!(h.builder, "nervous");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Header::parse(&bytes);
            let _ = Header::parse_line(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn never_panics_on_near_headers(
            fields in proptest::collection::vec("[0-9a-zA-Z :+/-]{0,40}", 0..12),
        ) {
            let line = format!("ClamAV-VDB:{}", fields.join(":"));
            let _ = Header::parse_line(&line);
            let mut padded = line.into_bytes();
            padded.resize(HEADER_LEN, b' ');
            let _ = Header::parse(&padded);
        }
    }

    #[test]
    fn rejects_short_and_foreign_input() {
        assert_eq!(Header::parse(b"ClamAV-VDB"), Err(HeaderError::Short(10)));
        assert_eq!(Header::parse(&padded("GIF89a")), Err(HeaderError::BadMagic));
    }
}
