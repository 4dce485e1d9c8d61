//! Bulk for big fixtures, fast: incompressible pseudo-random filler and a
//! gzip writer that emits stored deflate blocks by hand (several times
//! faster than running the compressor at level 0), so a 60 MB `daily.cvd`
//! builds in about a second in release builds.

use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// Incompressible deterministic filler (xorshift64*).
pub(super) struct Filler {
    state: u64,
    left: u64,
}

impl Filler {
    pub(super) fn new(seed: &str, len: u64) -> Self {
        let seed: [u8; 8] = Sha256::digest(seed)
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([1; 8]);
        Self {
            state: u64::from_le_bytes(seed) | 1,
            left: len,
        }
    }
}

impl Read for Filler {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let out = buf.get_mut(..n).unwrap_or_default();
        for chunk in out.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(word.get(..chunk.len()).unwrap_or_default());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub(super) fn sha256_of(mut reader: impl Read) -> io::Result<[u8; 32]> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(sha.finalize().into());
        }
        sha.update(buf.get(..n).unwrap_or_default());
    }
}

pub(super) fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    if data.len() > 1 << 20 {
        return Ok(gzip_stored(data));
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data)?;
    gz.finish()
}

/// A gzip stream of stored (uncompressed) deflate blocks: the filler is
/// incompressible, and writing blocks by hand is several times faster than
/// running the compressor at level 0.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX_STORED: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / MAX_STORED * 5 + 32);
    // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut blocks = data.chunks(MAX_STORED).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&((data.len() as u64 & 0xffff_ffff) as u32).to_le_bytes());
    out
}

pub(super) fn stored_overhead(size: u64) -> u64 {
    18 + 5 * size.div_ceil(65_535)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_gzip_decodes() {
        use std::io::Read;
        for len in [0usize, 1, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gzip_stored(&data)[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn filler_is_deterministic_and_exact() {
        let mut a = Vec::new();
        Filler::new("x", 1001).read_to_end(&mut a).unwrap();
        let mut b = Vec::new();
        Filler::new("x", 1001).read_to_end(&mut b).unwrap();
        assert_eq!(a.len(), 1001);
        assert_eq!(a, b);
        assert_eq!(
            sha256_of(&a[..]).unwrap(),
            <[u8; 32]>::from(Sha256::digest(&a))
        );
    }
}
