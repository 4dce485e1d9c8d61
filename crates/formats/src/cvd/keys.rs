//! Public keys that may sign a database: ClamAV's three official keys, plus
//! any the operator trusts in addition (a private signing setup, or the test
//! keys of [`crate::cvd::testkeys`]).
//!
//! Keys are grouped by [`KeyRole`] because each ClamAV signature scheme has
//! its own key; a key trusted for one role is never tried for another.

use std::fmt;
use std::str::FromStr;

use num_bigint::BigUint;
use thiserror::Error;

/// ClamAV's key for the CVD header signature (1024 bits, from libclamav).
pub const OFFICIAL_CVD_N: &str = "118640995551645342603070001658453189751527774412027743746599405743243142607464144767361060640655844749760788890022283424922762488917565551002467771109669598189410434699034532232228621591089508178591428456220796841621637175567590476666928698770143328137383952820383197532047771780196576957695822641224262693037";
/// Public exponent of [`OFFICIAL_CVD_N`].
pub const OFFICIAL_CVD_E: &str = "100001027";
/// ClamAV's key for the `.info` DSIG line (2048 bits).
pub const OFFICIAL_INFO_N: &str = "11088894983048545473659556106627194923928941791795047620591658697413581043322715912172496806525381055880964520618400224333320534660299233983755341740679502866829909679955734391392668378361221524205396631090105151641270857277080310734320951653700508941717419168723942507890702904702707587451621691050754307850383399865346487203798464178537392211402786481359824461197231102895415093770394216666324484593935762408468516826633192140826667923494822045805347809932848454845886971706424360558667862775876072059437703365380209101697738577515476935085469455279994113145977994084618328482151013142393373316337519977244732747977";
/// Public exponent of [`OFFICIAL_INFO_N`].
pub const OFFICIAL_INFO_E: &str = "100002049";
/// ClamAV's key for cdiff signatures (2048 bits).
pub const OFFICIAL_CDIFF_N: &str = "14783905874077467090262228516557917570254599638376203532031989214105552847269687489771975792123442185817287694951949800908791527542017115600501303394778618535864845235700041590056318230102449612217458549016089313306591388590790796515819654102320725712300822356348724011232654837503241736177907784198700834440681124727060540035754699658105895050096576226753008596881698828185652424901921668758326578462003247906470982092298106789657211905488986281078346361469524484829559560886227198091995498440676639639830463593211386055065360288422394053998134458623712540683294034953818412458362198117811990006021989844180721010947";
/// Public exponent of [`OFFICIAL_CDIFF_N`].
pub const OFFICIAL_CDIFF_E: &str = "100002053";

/// Largest modulus accepted, in bits: ClamAV's schemes never need more, and
/// the limit keeps hostile configuration from making verification slow.
pub const MAX_KEY_BITS: u64 = 4096;

/// An RSA public key as ClamAV uses it: `m = s^e mod n`, no padding library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Modulus.
    pub n: BigUint,
    /// Public exponent.
    pub e: BigUint,
}

/// Which signature a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// The CVD header `dsig` over the body's MD5 (ClamAV: 1024 bits).
    Cvd,
    /// The `DSIG:` line of `<db>.info` (PSS-style, 2048 bits).
    Info,
    /// The signature at the end of a cdiff (PSS-style, 2048 bits).
    Cdiff,
}

/// Why a key or key entry could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not of the form `n=<decimal>,e=<decimal>`.
    #[error("key must look like n=<decimal>,e=<decimal>: {0}")]
    Syntax(String),
    /// Not a decimal number.
    #[error("key field {0} is not a decimal number")]
    NotDecimal(&'static str),
    /// Modulus or exponent unusable (too small, even, or too large).
    #[error("key is unusable: {0}")]
    Unusable(&'static str),
    /// A role other than `cvd`, `info` or `cdiff`.
    #[error("unknown key role {0:?} (expected cvd, info or cdiff)")]
    Role(String),
}

impl PublicKey {
    /// Builds a key from decimal strings (the form libclamav stores them in).
    pub fn from_decimal(n: &str, e: &str) -> Result<Self, KeyError> {
        let n = decimal(n).ok_or(KeyError::NotDecimal("n"))?;
        let e = decimal(e).ok_or(KeyError::NotDecimal("e"))?;
        let key = Self { n, e };
        key.check()?;
        Ok(key)
    }

    /// ClamAV's CVD header key.
    pub fn official_cvd() -> Self {
        official(OFFICIAL_CVD_N, OFFICIAL_CVD_E)
    }

    /// ClamAV's `.info` key.
    pub fn official_info() -> Self {
        official(OFFICIAL_INFO_N, OFFICIAL_INFO_E)
    }

    /// ClamAV's cdiff key.
    pub fn official_cdiff() -> Self {
        official(OFFICIAL_CDIFF_N, OFFICIAL_CDIFF_E)
    }

    fn check(&self) -> Result<(), KeyError> {
        if self.n.bits() < 256 || !self.n.bit(0) {
            return Err(KeyError::Unusable(
                "modulus must be odd and at least 256 bits",
            ));
        }
        if self.n.bits() > MAX_KEY_BITS {
            return Err(KeyError::Unusable("modulus is larger than 4096 bits"));
        }
        if self.e.bits() < 2 || self.e.bits() > 64 {
            return Err(KeyError::Unusable("exponent must be between 2 and 2^64"));
        }
        Ok(())
    }
}

fn decimal(s: &str) -> Option<BigUint> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    BigUint::parse_bytes(s.as_bytes(), 10)
}

fn official(n: &str, e: &str) -> PublicKey {
    // The constants above are decimal literals, checked by a unit test.
    PublicKey {
        n: decimal(n).unwrap_or_default(),
        e: decimal(e).unwrap_or_default(),
    }
}

/// Parses `n=<decimal>,e=<decimal>` (fields in either order, spaces allowed
/// around them), the form used in cvdmirror's configuration.
impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (mut n, mut e) = (None, None);
        for part in s.split(',') {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| KeyError::Syntax(s.to_owned()))?;
            let slot = match name.trim() {
                "n" => &mut n,
                "e" => &mut e,
                _ => return Err(KeyError::Syntax(s.to_owned())),
            };
            if slot.replace(value).is_some() {
                return Err(KeyError::Syntax(s.to_owned()));
            }
        }
        match (n, e) {
            (Some(n), Some(e)) => Self::from_decimal(n, e),
            _ => Err(KeyError::Syntax(s.to_owned())),
        }
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n={},e={}", self.n, self.e)
    }
}

impl FromStr for KeyRole {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.trim() {
            "cvd" => Ok(Self::Cvd),
            "info" => Ok(Self::Info),
            "cdiff" => Ok(Self::Cdiff),
            other => Err(KeyError::Role(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cvd => "cvd",
            Self::Info => "info",
            Self::Cdiff => "cdiff",
        })
    }
}

/// A key with the role it is trusted for, as written in configuration:
/// `<role>:n=<decimal>,e=<decimal>`, e.g. `info:n=2519…,e=65537`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraKey {
    /// What the key may verify.
    pub role: KeyRole,
    /// The key.
    pub key: PublicKey,
}

impl FromStr for ExtraKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (role, key) = s
            .split_once(':')
            .ok_or_else(|| KeyError::Syntax(s.to_owned()))?;
        Ok(Self {
            role: role.parse()?,
            key: key.parse()?,
        })
    }
}

impl fmt::Display for ExtraKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.key)
    }
}

/// The keys a verification accepts, per role. A signature is good if any key
/// of its role verifies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    cvd: Vec<PublicKey>,
    info: Vec<PublicKey>,
    cdiff: Vec<PublicKey>,
}

impl TrustedKeys {
    /// No keys at all: nothing verifies (useful only to build on).
    pub fn none() -> Self {
        Self::default()
    }

    /// ClamAV's three official keys: what `freshclam` itself trusts.
    pub fn official() -> Self {
        Self {
            cvd: vec![PublicKey::official_cvd()],
            info: vec![PublicKey::official_info()],
            cdiff: vec![PublicKey::official_cdiff()],
        }
    }

    /// Adds a key for `role`.
    pub fn add(&mut self, role: KeyRole, key: PublicKey) -> &mut Self {
        let list = self.list_mut(role);
        if !list.contains(&key) {
            list.push(key);
        }
        self
    }

    /// Adds a key for `role`, by value (builder style).
    #[must_use]
    pub fn with(mut self, role: KeyRole, key: PublicKey) -> Self {
        self.add(role, key);
        self
    }

    /// Adds every key of `other`.
    #[must_use]
    pub fn merged(mut self, other: &TrustedKeys) -> Self {
        for role in [KeyRole::Cvd, KeyRole::Info, KeyRole::Cdiff] {
            for key in other.keys(role) {
                self.add(role, key.clone());
            }
        }
        self
    }

    /// Parses and adds a configuration entry `<role>:n=<decimal>,e=<decimal>`.
    pub fn add_config(&mut self, entry: &str) -> Result<&mut Self, KeyError> {
        let ExtraKey { role, key } = entry.parse()?;
        Ok(self.add(role, key))
    }

    /// The keys trusted for `role`.
    pub fn keys(&self, role: KeyRole) -> &[PublicKey] {
        match role {
            KeyRole::Cvd => &self.cvd,
            KeyRole::Info => &self.info,
            KeyRole::Cdiff => &self.cdiff,
        }
    }

    fn list_mut(&mut self, role: KeyRole) -> &mut Vec<PublicKey> {
        match role {
            KeyRole::Cvd => &mut self.cvd,
            KeyRole::Info => &mut self.info,
            KeyRole::Cdiff => &mut self.cdiff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_keys_parse_to_the_documented_sizes() {
        for (n, e, bits) in [
            (OFFICIAL_CVD_N, OFFICIAL_CVD_E, 1024),
            // "2048-bit" in ClamAV's words; the moduli are one bit short.
            (OFFICIAL_INFO_N, OFFICIAL_INFO_E, 2047),
            (OFFICIAL_CDIFF_N, OFFICIAL_CDIFF_E, 2047),
        ] {
            let key = PublicKey::from_decimal(n, e).unwrap();
            assert_eq!(key.n.bits(), bits);
        }
        assert_eq!(PublicKey::official_info().e, BigUint::from(100_002_049u32));
    }

    #[test]
    fn config_strings_round_trip() {
        let key = PublicKey::official_cdiff();
        let entry = ExtraKey {
            role: KeyRole::Cdiff,
            key: key.clone(),
        };
        assert_eq!(entry.to_string().parse::<ExtraKey>().unwrap(), entry);
        let swapped = format!(" e = {} , n = {} ", key.e, key.n);
        assert_eq!(swapped.parse::<PublicKey>().unwrap(), key);
        let mut keys = TrustedKeys::none();
        keys.add_config(&entry.to_string()).unwrap();
        assert_eq!(keys.keys(KeyRole::Cdiff), &[key]);
        assert!(keys.keys(KeyRole::Info).is_empty());
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(matches!(
            "n=12".parse::<PublicKey>(),
            Err(KeyError::Syntax(_))
        ));
        assert!(matches!(
            "n=1,e=3,n=5".parse::<PublicKey>(),
            Err(KeyError::Syntax(_))
        ));
        assert_eq!(
            "n=12x,e=3".parse::<PublicKey>(),
            Err(KeyError::NotDecimal("n"))
        );
        assert!(matches!(
            "n=15,e=3".parse::<PublicKey>(),
            Err(KeyError::Unusable(_))
        ));
        assert!(matches!(
            "main:n=1,e=3".parse::<ExtraKey>(),
            Err(KeyError::Role(_))
        ));
    }

    #[test]
    fn adding_a_key_twice_keeps_one() {
        let keys = TrustedKeys::official().merged(&TrustedKeys::official());
        assert_eq!(keys.keys(KeyRole::Cvd).len(), 1);
    }
}
