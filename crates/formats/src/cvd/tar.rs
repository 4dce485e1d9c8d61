//! The tar dialect inside CVD and CLD bodies, read as libclamav reads it
//! (`cli_tgzload`): 512-byte headers, name in bytes 0..100 without `/`, size
//! as octal in bytes 124..136, type `0` or NUL only, end at the first header
//! whose name starts with NUL (or at a clean end of input). Checksums, modes
//! and times are ignored, as libclamav ignores them.
//!
//! A streaming reader rather than the `tar` crate: the body of a 160 MB
//! database is hashed member by member and never held in memory, and every
//! malformation maps to a precise [`VerifyError`].

use std::io::{self, Read, Write};

use super::error::VerifyError;

/// Tar block size.
pub const BLOCK: usize = 512;

/// A member header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// File name (no directories in a CVD).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Reads tar members from a stream, in order.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed so far (the uncompressed tar size at the end).
    pub consumed: u64,
}

impl<R: Read> TarReader<R> {
    /// Starts reading `inner` at a header block.
    pub fn new(inner: R) -> Self {
        Self { inner, consumed: 0 }
    }

    /// The next member's header, or `None` at the end of the archive.
    pub fn next_header(&mut self) -> Result<Option<MemberHeader>, VerifyError> {
        let mut block = [0u8; BLOCK];
        let got = fill(&mut self.inner, &mut block)?;
        self.consumed += got as u64;
        if got == 0 {
            return Ok(None);
        }
        if got < BLOCK {
            return Err(VerifyError::Truncated("incomplete tar header block".into()));
        }
        parse_header(&block)
    }

    /// Streams the `size` bytes of the current member into `sink`, then skips
    /// the padding to the next block.
    pub fn read_member(
        &mut self,
        header: &MemberHeader,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), VerifyError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = header.size;
        let padding = (BLOCK as u64 - header.size % BLOCK as u64) % BLOCK as u64;
        let mut total = header.size + padding;
        while total > 0 {
            let want = usize::try_from(total.min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let got = fill(&mut self.inner, chunk)?;
            self.consumed += got as u64;
            let data_len = usize::try_from(left.min(got as u64)).unwrap_or(0);
            sink(chunk.get(..data_len).unwrap_or_default());
            left -= data_len as u64;
            total -= got as u64;
            if got < want {
                return Err(VerifyError::Truncated(format!(
                    "tar member {} ends early",
                    header.name
                )));
            }
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
/// Decoder errors become [`VerifyError::Truncated`] (unexpected end) or
/// [`VerifyError::Gzip`]: the only readers here are the body streams.
pub fn fill(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, VerifyError> {
    fill_with(reader, buf, stream_error)
}

/// [`fill`] with the caller's classification of read errors.
pub fn fill_with(
    reader: &mut impl Read,
    buf: &mut [u8],
    error: impl Fn(io::Error) -> VerifyError,
) -> Result<usize, VerifyError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(error(e)),
        }
    }
    Ok(got)
}

/// Classifies an error from the body stream.
pub fn stream_error(e: io::Error) -> VerifyError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => VerifyError::Truncated("compressed body ends early".into()),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            VerifyError::Gzip(e.to_string())
        }
        _ => VerifyError::Io(e),
    }
}

fn parse_header(block: &[u8; BLOCK]) -> Result<Option<MemberHeader>, VerifyError> {
    let raw_name = block.get(..100).unwrap_or_default();
    if raw_name.first() == Some(&0) {
        return Ok(None);
    }
    let name_len = raw_name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw_name.len());
    let name = std::str::from_utf8(raw_name.get(..name_len).unwrap_or_default())
        .map_err(|_| VerifyError::Tar("member name is not UTF-8".into()))?;
    if name.contains('/') {
        return Err(VerifyError::Tar(format!(
            "member name {name:?} contains a slash"
        )));
    }
    match block.get(156).copied().unwrap_or(0) {
        b'0' | 0 => {}
        b'5' => return Err(VerifyError::Tar(format!("member {name} is a directory"))),
        other => {
            return Err(VerifyError::Tar(format!(
                "member {name} has unsupported type {:?}",
                char::from(other)
            )));
        }
    }
    let size = parse_octal(block.get(124..136).unwrap_or_default())
        .ok_or_else(|| VerifyError::Tar(format!("member {name} has an invalid size field")))?;
    Ok(Some(MemberHeader {
        name: name.to_owned(),
        size,
    }))
}

/// `sscanf("%o")` on a NUL-terminated field: optional leading spaces, then at
/// least one octal digit; anything after the digits ends the number.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let field = field.split(|&b| b == 0).next().unwrap_or_default();
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// A ustar header block for a regular file (used by the fixture builder).
pub fn header_block(name: &str, size: u64) -> io::Result<[u8; BLOCK]> {
    if name.is_empty() || name.len() > 99 || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad tar member name {name:?}"),
        ));
    }
    let mut block = [0u8; BLOCK];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = block.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\x0000");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = block.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(148, format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}

/// Writes one member: header, data from `data` (exactly `size` bytes), padding.
pub fn write_member(
    out: &mut impl Write,
    name: &str,
    size: u64,
    data: &mut impl Read,
) -> io::Result<()> {
    out.write_all(&header_block(name, size)?)?;
    let copied = io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("member {name} is short"),
        ));
    }
    let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    out.write_all(&vec![0u8; usize::try_from(padding).unwrap_or(0)])
}

/// Writes the end-of-archive marker (two zero blocks).
pub fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            write_member(&mut out, name, data.len() as u64, &mut &data[..]).unwrap();
        }
        write_end(&mut out).unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, VerifyError> {
        let mut reader = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(h) = reader.next_header()? {
            let mut data = Vec::new();
            reader.read_member(&h, |chunk| data.extend_from_slice(chunk))?;
            out.push((h.name, data));
        }
        Ok(out)
    }

    #[test]
    fn round_trips_members() {
        let big = vec![7u8; 70_000];
        let bytes = archive(&[("COPYING", b"hello"), ("x.info", b""), ("x.hdb", &big)]);
        let members = read_all(&bytes).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0], ("COPYING".to_owned(), b"hello".to_vec()));
        assert_eq!(members[2].1, big);
        // The system tar agrees with the header layout.
        assert_eq!(parse_octal(b"00000043110\0"), Some(17992));
        assert_eq!(parse_octal(b"  17 \0"), Some(15));
        assert_eq!(parse_octal(b"\0\0\0"), None);
    }

    #[test]
    fn refuses_what_clamav_refuses() {
        let mut bytes = archive(&[("a_b", b"x")]);
        bytes[1] = b'/';
        assert!(matches!(read_all(&bytes), Err(VerifyError::Tar(_))));
        bytes = archive(&[("dir", b"x")]);
        bytes[156] = b'5';
        assert!(matches!(read_all(&bytes), Err(VerifyError::Tar(_))));
        bytes = archive(&[("big", &[1u8; 600])]);
        assert!(matches!(
            read_all(&bytes[..1000]),
            Err(VerifyError::Truncated(_))
        ));
        assert!(matches!(
            read_all(&bytes[..100]),
            Err(VerifyError::Truncated(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let _ = read_all(&bytes);
        }
    }
}
