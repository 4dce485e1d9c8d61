//! ClamAV's "base64" for signatures: not RFC 4648, but a big number written
//! in base 64, least significant digit first, with the alphabet
//! `a-z A-Z 0-9 + /` standing for 0..63.
//!
//! Every signature ClamAV publishes (CVD header, `.info` DSIG, cdiff) is an
//! RSA value in this notation, so decoding must be exact and must refuse
//! anything outside the alphabet rather than guess.

use num_bigint::BigUint;
use thiserror::Error;

/// Longest signature string accepted: enough for a 2048-bit value (342
/// digits) with room to spare, and the limit ClamAV applies to cdiff
/// signatures. It also bounds the work done on hostile input.
pub const MAX_SIGNATURE_CHARS: usize = 350;

/// Why a signature string is not a ClamAV base-64 number.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Base64Error {
    /// The string is empty.
    #[error("empty signature")]
    Empty,
    /// The string is longer than [`MAX_SIGNATURE_CHARS`].
    #[error("signature is {0} characters, more than {MAX_SIGNATURE_CHARS}")]
    TooLong(usize),
    /// A byte outside `a-z A-Z 0-9 + /`.
    #[error("signature contains byte 0x{byte:02x} at position {position}")]
    BadDigit {
        /// The offending byte.
        byte: u8,
        /// Its index in the string.
        position: usize,
    },
}

const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";

fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'a'..=b'z' => Some(byte - b'a'),
        b'A'..=b'Z' => Some(byte - b'A' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes a signature string into the number it denotes.
pub fn decode_number(text: &[u8]) -> Result<BigUint, Base64Error> {
    if text.is_empty() {
        return Err(Base64Error::Empty);
    }
    if text.len() > MAX_SIGNATURE_CHARS {
        return Err(Base64Error::TooLong(text.len()));
    }
    // Digit i is worth 64^i: pack the 6-bit digits into little-endian bytes.
    let mut bytes = vec![0u8; (text.len() * 6).div_ceil(8) + 1];
    for (position, &byte) in text.iter().enumerate() {
        let value = u16::from(digit(byte).ok_or(Base64Error::BadDigit { byte, position })?);
        let bit = position * 6;
        let shifted = value << (bit % 8);
        if let Some(low) = bytes.get_mut(bit / 8) {
            *low |= (shifted & 0xff) as u8;
        }
        if let Some(high) = bytes.get_mut(bit / 8 + 1) {
            *high |= (shifted >> 8) as u8;
        }
    }
    Ok(BigUint::from_bytes_le(&bytes))
}

/// Encodes `value` as a signature string of at least `min_digits` digits
/// (ClamAV writes fixed-width signatures, padded with `a`, i.e. zero).
pub fn encode_number(value: &BigUint, min_digits: usize) -> String {
    let mut out = String::new();
    let bits = value.bits();
    let digits = usize::try_from(bits.div_ceil(6))
        .unwrap_or(usize::MAX)
        .max(min_digits)
        .max(1);
    for i in 0..digits {
        let mut d = 0usize;
        for b in 0..6u64 {
            let bit = i as u64 * 6 + b;
            if value.bit(bit) {
                d |= 1 << b;
            }
        }
        out.push(char::from(ALPHABET.get(d).copied().unwrap_or(b'a')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_little_endian() {
        assert_eq!(decode_number(b"b").unwrap(), BigUint::from(1u32));
        assert_eq!(decode_number(b"ab").unwrap(), BigUint::from(64u32));
        assert_eq!(decode_number(b"/").unwrap(), BigUint::from(63u32));
        assert_eq!(
            decode_number(b"+9Z").unwrap(),
            BigUint::from(62u32 + 61 * 64 + 51 * 4096)
        );
    }

    #[test]
    fn rejects_foreign_bytes_and_extremes() {
        assert_eq!(decode_number(b""), Err(Base64Error::Empty));
        assert_eq!(
            decode_number(b"ab=c"),
            Err(Base64Error::BadDigit {
                byte: b'=',
                position: 2
            })
        );
        assert_eq!(
            decode_number(b"abc\n"),
            Err(Base64Error::BadDigit {
                byte: b'\n',
                position: 3
            })
        );
        assert_eq!(decode_number(&[b'a'; 351]), Err(Base64Error::TooLong(351)));
    }

    #[test]
    fn encode_round_trips_and_pads() {
        let n = BigUint::parse_bytes(b"123456789012345678901234567890", 10).unwrap();
        let text = encode_number(&n, 0);
        assert_eq!(decode_number(text.as_bytes()).unwrap(), n);
        let padded = encode_number(&n, 40);
        assert_eq!(padded.len(), 40);
        assert!(padded.ends_with('a'));
        assert_eq!(decode_number(padded.as_bytes()).unwrap(), n);
        assert_eq!(encode_number(&BigUint::default(), 0), "a");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = decode_number(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let n = BigUint::from_bytes_be(&bytes);
            proptest::prop_assert_eq!(decode_number(encode_number(&n, 0).as_bytes()).unwrap(), n);
        }
    }
}
