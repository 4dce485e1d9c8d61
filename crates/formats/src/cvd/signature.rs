//! ClamAV's two RSA signature schemes, verified exactly as libclamav does
//! and produced (for test fixtures) the same way its `sigtool` does.
//!
//! * Header scheme (`cli_versig`): `m = s^e mod n` must equal the 16-byte
//!   MD5 of the CVD body. cvdmirror also demands that nothing sits above
//!   those 16 bytes, which every genuine signature satisfies.
//! * PSS-style scheme (`cli_versig2`, `.info` and cdiff): `m` is a 256-byte
//!   block `maskedDB(223) ‖ H(32) ‖ 0xbc`; unmasking with MGF1-SHA-256(H)
//!   yields `… 0x01 ‖ salt(32)`, and `H` must equal
//!   `SHA-256(0^8 ‖ digest ‖ salt)`. Like libclamav, the bytes before the
//!   first `0x01` are not inspected (genuine files have a stray top bit there).

use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::base64::{Base64Error, decode_number, encode_number};
use super::keys::PublicKey;

const PSS_LEN: usize = 256;
const HASH_LEN: usize = 32;
const DB_LEN: usize = PSS_LEN - HASH_LEN - 1;
const TRAILER: u8 = 0xbc;

/// Why a signature was not accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature string is not a ClamAV base-64 number.
    #[error("signature is not ClamAV base64: {0}")]
    Encoding(#[from] Base64Error),
    /// Well formed, but no trusted key of the right role verifies it.
    #[error("signature does not verify with any trusted key")]
    NoTrustedKey,
}

/// An RSA private key, for signing test fixtures only (`s = m^d mod n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateKey {
    /// Modulus.
    pub n: BigUint,
    /// Public exponent.
    pub e: BigUint,
    /// Private exponent.
    pub d: BigUint,
}

impl PrivateKey {
    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            n: self.n.clone(),
            e: self.e.clone(),
        }
    }

    fn sign_number(&self, m: &BigUint) -> String {
        let s = m.modpow(&self.d, &self.n);
        encode_number(&s, usize::try_from(self.n.bits().div_ceil(6)).unwrap_or(0))
    }
}

/// Applies `key` to a signature string: `s^e mod n`, or `None` if `s` is not
/// a residue of `n` (no genuine signature is).
fn open(s: &BigUint, key: &PublicKey) -> Option<BigUint> {
    if s >= &key.n {
        return None;
    }
    Some(s.modpow(&key.e, &key.n))
}

/// Checks a CVD header `dsig` against the body's MD5.
pub fn verify_md5(dsig: &[u8], md5: &[u8; 16], keys: &[PublicKey]) -> Result<(), SignatureError> {
    let s = decode_number(dsig)?;
    let expected = BigUint::from_bytes_be(md5);
    if keys
        .iter()
        .any(|key| open(&s, key).as_ref() == Some(&expected))
    {
        Ok(())
    } else {
        Err(SignatureError::NoTrustedKey)
    }
}

/// Checks a PSS-style signature (`.info` DSIG, cdiff) over a SHA-256 digest.
pub fn verify_pss(
    dsig: &[u8],
    digest: &[u8; HASH_LEN],
    keys: &[PublicKey],
) -> Result<(), SignatureError> {
    let s = decode_number(dsig)?;
    let good = keys
        .iter()
        .filter_map(|key| open(&s, key))
        .any(|m| pss_matches(&m, digest));
    if good {
        Ok(())
    } else {
        Err(SignatureError::NoTrustedKey)
    }
}

fn pss_matches(m: &BigUint, digest: &[u8; HASH_LEN]) -> bool {
    let Some(em) = to_fixed(m) else { return false };
    let (Some(masked), Some(h), Some(&trailer)) =
        (em.get(..DB_LEN), em.get(DB_LEN..PSS_LEN - 1), em.last())
    else {
        return false;
    };
    if trailer != TRAILER {
        return false;
    }
    let db: Vec<u8> = masked.iter().zip(mgf1(h)).map(|(a, b)| a ^ b).collect();
    let Some(one) = db.iter().position(|&b| b == 0x01) else {
        return false;
    };
    let Some(salt) = db.get(one + 1..one + 1 + HASH_LEN) else {
        return false;
    };
    pss_hash(digest, salt).as_slice() == h
}

/// `m` as exactly [`PSS_LEN`] big-endian bytes, if it fits.
fn to_fixed(m: &BigUint) -> Option<[u8; PSS_LEN]> {
    let bytes = m.to_bytes_be();
    let mut out = [0u8; PSS_LEN];
    let start = PSS_LEN.checked_sub(bytes.len())?;
    out.get_mut(start..)?.copy_from_slice(&bytes);
    Some(out)
}

/// MGF1 with SHA-256, [`DB_LEN`] bytes.
fn mgf1(seed: &[u8]) -> impl Iterator<Item = u8> {
    let seed = seed.to_vec();
    (0u32..)
        .flat_map(move |counter| {
            let block: [u8; HASH_LEN] = Sha256::new()
                .chain_update(&seed)
                .chain_update(counter.to_be_bytes())
                .finalize()
                .into();
            block
        })
        .take(DB_LEN)
}

fn pss_hash(digest: &[u8; HASH_LEN], salt: &[u8]) -> [u8; HASH_LEN] {
    Sha256::new()
        .chain_update([0u8; 8])
        .chain_update(digest)
        .chain_update(salt)
        .finalize()
        .into()
}

/// Signs an MD5 the way the CVD header expects (fixed-width base64).
pub fn sign_md5(md5: &[u8; 16], key: &PrivateKey) -> String {
    key.sign_number(&BigUint::from_bytes_be(md5))
}

/// Signs a SHA-256 digest with the PSS-style scheme. The salt is derived from
/// the digest, so fixtures are reproducible byte for byte. `key` must have a
/// 2048-bit modulus.
pub fn sign_pss(digest: &[u8; HASH_LEN], key: &PrivateKey) -> String {
    let salt: [u8; HASH_LEN] = Sha256::new()
        .chain_update(b"cvdmirror fixture salt")
        .chain_update(digest)
        .finalize()
        .into();
    let h = pss_hash(digest, &salt);
    let mut em = Vec::with_capacity(PSS_LEN);
    em.resize(DB_LEN - HASH_LEN - 1, 0);
    em.push(0x01);
    em.extend_from_slice(&salt);
    for (byte, mask) in em.iter_mut().zip(mgf1(&h)) {
        *byte ^= mask;
    }
    // Clear the top bit so the block is below any 2048-bit modulus.
    if let Some(first) = em.first_mut() {
        *first &= 0x7f;
    }
    em.extend_from_slice(&h);
    em.push(TRAILER);
    key.sign_number(&BigUint::from_bytes_be(&em))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvd::testkeys;

    #[test]
    fn md5_signatures_round_trip() {
        let keys = testkeys::signing_keys();
        let md5 = [7u8; 16];
        let sig = sign_md5(&md5, &keys.cvd);
        assert_eq!(
            verify_md5(sig.as_bytes(), &md5, &[keys.cvd.public()]),
            Ok(())
        );
        assert_eq!(
            verify_md5(sig.as_bytes(), &[8u8; 16], &[keys.cvd.public()]),
            Err(SignatureError::NoTrustedKey)
        );
        assert_eq!(
            verify_md5(sig.as_bytes(), &md5, &[PublicKey::official_cvd()]),
            Err(SignatureError::NoTrustedKey)
        );
    }

    #[test]
    fn pss_signatures_round_trip() {
        let keys = testkeys::signing_keys();
        let digest = [42u8; 32];
        let sig = sign_pss(&digest, &keys.info);
        assert_eq!(
            verify_pss(
                sig.as_bytes(),
                &digest,
                &[PublicKey::official_info(), keys.info.public()]
            ),
            Ok(())
        );
        assert!(verify_pss(sig.as_bytes(), &[43u8; 32], &[keys.info.public()]).is_err());
        assert!(verify_pss(sig.as_bytes(), &digest, &[keys.cdiff.public()]).is_err());
    }

    #[test]
    fn values_above_the_modulus_are_refused() {
        let key = PublicKey::official_cvd();
        let too_big = encode_number(&(key.n.clone() + 5u32), 0);
        assert_eq!(
            verify_md5(too_big.as_bytes(), &[0u8; 16], &[key]),
            Err(SignatureError::NoTrustedKey)
        );
    }
}
