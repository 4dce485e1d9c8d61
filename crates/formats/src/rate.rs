//! Byte rates with explicit units, as operators write them.
//!
//! mod_cband's `kbps` meant 1024 bit/s while everyone read it as 1000, and a
//! bare `100` could be bits or bytes: the incident config was off by a factor
//! of eight before anything else went wrong. So a [`Rate`] always names its
//! unit: bits (`80Mbit`, `1.5Mbit/s`, `100Mbps`) or bytes per second
//! (`10MB/s`, `10MiB/s`). SI prefixes are powers of 1000, `Ki`/`Mi`/`Gi`/`Ti`
//! powers of 1024; bare numbers, `kbps` and zero are refused with a message
//! that says what to write instead. Values are kept exactly, in bits per
//! second, so `Display` and `FromStr` round-trip.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A positive transfer rate, stored exactly in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    bits: NonZeroU64,
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RateError {
    /// Nothing or no number at the start.
    #[error("`{0}` is not a rate: expected a number and a unit, e.g. `80Mbit` or `10MB/s`")]
    NoNumber(String),
    /// A number without a unit.
    #[error(
        "`{0}` has no unit: write e.g. `{0}Mbit`, `{0}Mbit/s`, `{0}Mbps`, `{0}MB/s` or `{0}MiB/s` \
         (bits: bit kbit Mbit Gbit Tbit Kibit Mibit Gibit; bytes per second: B/s KB/s MB/s GB/s \
         KiB/s MiB/s GiB/s)"
    )]
    BareNumber(String),
    /// `kbps` and friends: unclear whether bits or bytes, 1000 or 1024.
    #[error("`{0}` is ambiguous (mod_cband read kbps as 1024 bit/s): write `kbit` or `KB/s`")]
    Ambiguous(String),
    /// A byte amount without `/s`.
    #[error("`{0}` is a size, not a rate: add `/s`")]
    NotARate(String),
    /// An unknown unit.
    #[error(
        "unknown rate unit `{0}`: use bits (bit kbit Mbit Gbit Tbit Kibit Mibit Gibit, optionally \
         with /s, or Mbps Gbps) or bytes per second (B/s KB/s MB/s GB/s KiB/s MiB/s GiB/s)"
    )]
    UnknownUnit(String),
    /// Zero (or less than one bit per second) where a cap is meant.
    #[error("rate `{0}` is zero; a cap must be positive (leave the setting out for no cap)")]
    Zero(String),
    /// More than 2^64 bits per second.
    #[error("rate `{0}` is too large")]
    TooLarge(String),
}

impl Rate {
    /// A rate of `bits` bits per second; `None` for zero.
    pub const fn from_bits_per_sec(bits: u64) -> Option<Rate> {
        match NonZeroU64::new(bits) {
            Some(bits) => Some(Rate { bits }),
            None => None,
        }
    }

    /// A rate of `bytes` bytes per second; `None` for zero or overflow.
    pub const fn from_bytes_per_sec(bytes: u64) -> Option<Rate> {
        match bytes.checked_mul(8) {
            Some(bits) => Rate::from_bits_per_sec(bits),
            None => None,
        }
    }

    /// Bits per second.
    pub const fn bits_per_sec(self) -> u64 {
        self.bits.get()
    }

    /// Bytes per second, rounded down (at least 1 for any rate ≥ 8 bit/s).
    pub const fn bytes_per_sec(self) -> u64 {
        self.bits.get() / 8
    }

    /// Bytes per second, with the fraction.
    pub fn bytes_per_sec_f64(self) -> f64 {
        self.bits.get() as f64 / 8.0
    }

    /// The smaller of two optional caps (`None` is no cap).
    pub fn min_cap(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }
}

/// Multipliers in bits for each accepted prefix (case-insensitive letter).
fn prefix_multiplier(prefix: &str) -> Option<u128> {
    Some(match prefix.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return None,
    })
}

/// Bits per unit, or why the unit is refused.
fn unit_bits(unit: &str, whole: &str) -> Result<u128, RateError> {
    let lower = unit.to_ascii_lowercase();
    if lower.ends_with("ps") {
        // Only the unambiguous network spellings: `Mbps`, `Gbps`, `bps`.
        return match unit {
            "bps" => Ok(1),
            "Mbps" => Ok(1_000_000),
            "Gbps" => Ok(1_000_000_000),
            "Tbps" => Ok(1_000_000_000_000),
            _ if lower.ends_with("bps") => Err(RateError::Ambiguous(whole.to_string())),
            _ => Err(RateError::UnknownUnit(unit.to_string())),
        };
    }
    let (base, per_second) = match unit.strip_suffix("/s") {
        Some(base) => (base, true),
        None => (unit, false),
    };
    if let Some(prefix) = base
        .strip_suffix("bit")
        .or_else(|| base.strip_suffix("Bit"))
        .or_else(|| base.strip_suffix("BIT"))
    {
        return prefix_multiplier(prefix).ok_or_else(|| RateError::UnknownUnit(unit.to_string()));
    }
    if let Some(prefix) = base.strip_suffix('B') {
        let m =
            prefix_multiplier(prefix).ok_or_else(|| RateError::UnknownUnit(unit.to_string()))?;
        return if per_second {
            Ok(m * 8)
        } else {
            Err(RateError::NotARate(whole.to_string()))
        };
    }
    Err(RateError::UnknownUnit(unit.to_string()))
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let whole = s.trim();
        let split = whole
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(whole.len());
        let (number, unit) = whole.split_at(split);
        let unit = unit.trim_start();
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(RateError::NoNumber(whole.to_string()));
        }
        if unit.is_empty() {
            return Err(RateError::BareNumber(whole.to_string()));
        }
        let per_unit = unit_bits(unit, whole)?;
        let too_large = || RateError::TooLarge(whole.to_string());
        let mut mantissa: u128 = 0;
        for d in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(d - b'0')))
                .ok_or_else(too_large)?;
        }
        let scale = u32::try_from(frac.len())
            .ok()
            .and_then(|f| 10u128.checked_pow(f))
            .ok_or_else(too_large)?;
        let scaled = mantissa.checked_mul(per_unit).ok_or_else(too_large)?;
        // Round to the nearest bit per second.
        let bits = scaled.checked_add(scale / 2).ok_or_else(too_large)? / scale;
        let bits = u64::try_from(bits).map_err(|_| too_large())?;
        Rate::from_bits_per_sec(bits).ok_or_else(|| RateError::Zero(whole.to_string()))
    }
}

/// `value / divisor` written exactly; `divisor` must only have factors 2 and 5.
fn exact_decimal(value: u128, divisor: u128) -> String {
    let mut out = (value / divisor).to_string();
    let mut rem = value % divisor;
    if rem != 0 {
        out.push('.');
        while rem != 0 {
            rem *= 10;
            out.push(char::from(b'0' + (rem / divisor) as u8));
            rem %= divisor;
        }
    }
    out
}

/// The largest `(multiplier, prefix)` not above `value`, else the unit.
fn largest_prefix(value: u128, prefixes: &[(u128, &'static str)]) -> (u128, &'static str) {
    prefixes
        .iter()
        .copied()
        .find(|&(m, _)| value >= m)
        .unwrap_or((1, ""))
}

impl fmt::Display for Rate {
    /// The shortest exact spelling among bits, SI bytes and IEC bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SI: [(u128, &str); 4] = [
            (1_000_000_000_000, "T"),
            (1_000_000_000, "G"),
            (1_000_000, "M"),
            (1_000, "k"),
        ];
        const IEC: [(u128, &str); 4] = [
            (1 << 40, "Ti"),
            (1 << 30, "Gi"),
            (1 << 20, "Mi"),
            (1 << 10, "Ki"),
        ];
        let bits = u128::from(self.bits.get());
        let (m, p) = largest_prefix(bits, &SI);
        let mut best = format!("{}{p}bit", exact_decimal(bits, m));
        if bits % 8 == 0 {
            let bytes = bits / 8;
            let (m, p) = largest_prefix(bytes, &SI);
            let p = if p == "k" { "K" } else { p };
            let si = format!("{}{p}B/s", exact_decimal(bytes, m));
            let (m, p) = largest_prefix(bytes, &IEC);
            let iec = format!("{}{p}B/s", exact_decimal(bytes, m));
            for candidate in [si, iec] {
                if candidate.len() < best.len() {
                    best = candidate;
                }
            }
        }
        f.pad(&best)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A size worded for people in decimal units, as link and disk vendors
/// count: `37 GB`, `1.2 MB`, `512 B` (the one size formatter of the
/// project: reports, the demo and bundle listings).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// A measured byte rate worded in bits for people: `12.3 Mbit/s` (alerts
/// and the demo's narration; configured rates print exactly through
/// [`Rate`]'s `Display`).
pub fn human_bits(bytes_per_second: f64) -> String {
    let bits = bytes_per_second * 8.0;
    let (value, unit) = match bits {
        b if b >= 1e9 => (b / 1e9, "Gbit/s"),
        b if b >= 1e6 => (b / 1e6, "Mbit/s"),
        b if b >= 1e3 => (b / 1e3, "kbit/s"),
        b => (b, "bit/s"),
    };
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(s: &str) -> u64 {
        s.parse::<Rate>().unwrap().bits_per_sec()
    }

    #[test]
    fn accepted_spellings() {
        assert_eq!(bits("80Mbit"), 80_000_000);
        assert_eq!(bits("1Gbit"), 1_000_000_000);
        assert_eq!(bits("500kbit"), 500_000);
        assert_eq!(bits("1.5Mbit"), 1_500_000);
        assert_eq!(bits("100Mbit/s"), 100_000_000);
        assert_eq!(bits("100Mbps"), 100_000_000);
        assert_eq!(bits(" 100 Mbit "), 100_000_000);
        assert_eq!(bits("10MB/s"), 80_000_000);
        assert_eq!(bits("512KB/s"), 512_000 * 8);
        assert_eq!(bits("512kB/s"), 512_000 * 8);
        assert_eq!(bits("10MiB/s"), 10 * 1024 * 1024 * 8);
        assert_eq!(bits("1GB/s"), 8_000_000_000);
        assert_eq!(bits("2Kibit"), 2048);
        assert_eq!(bits("64B/s"), 512);
    }

    #[test]
    fn refusals_say_what_to_write() {
        let err = |s: &str| s.parse::<Rate>().unwrap_err();
        assert!(matches!(err("100"), RateError::BareNumber(_)));
        assert!(err("100").to_string().contains("100Mbit"));
        assert!(matches!(err("100kbps"), RateError::Ambiguous(_)));
        assert!(err("100kbps").to_string().contains("kbit"));
        assert!(err("100kbps").to_string().contains("KB/s"));
        assert!(matches!(err("100KBps"), RateError::Ambiguous(_)));
        assert!(matches!(err("0Mbit"), RateError::Zero(_)));
        assert!(matches!(err("0.0001bit"), RateError::Zero(_)));
        assert!(matches!(err("10MB"), RateError::NotARate(_)));
        assert!(matches!(err("10 furlongs"), RateError::UnknownUnit(_)));
        assert!(matches!(err("10Mb/s"), RateError::UnknownUnit(_)));
        assert!(matches!(err("Mbit"), RateError::NoNumber(_)));
        assert!(matches!(err("-5Mbit"), RateError::NoNumber(_)));
        assert!(matches!(err("1.2.3Mbit"), RateError::NoNumber(_)));
        assert!(matches!(err("99999999999Tbit"), RateError::TooLarge(_)));
    }

    #[test]
    fn display_is_short_and_exact() {
        let show = |s: &str| s.parse::<Rate>().unwrap().to_string();
        assert_eq!(show("80Mbit"), "80Mbit");
        assert_eq!(show("1.5Mbit/s"), "1.5Mbit");
        assert_eq!(show("10MiB/s"), "10MiB/s");
        assert_eq!(show("10MB/s"), "80Mbit");
        assert_eq!(show("1GB/s"), "8Gbit");
        assert_eq!(show("1.5GiB/s"), "1.5GiB/s");
        assert_eq!(show("3bit"), "3bit");
    }

    #[test]
    fn deserializes_from_toml_strings() {
        #[derive(Deserialize)]
        struct T {
            cap: Rate,
        }
        let t: T = toml::from_str("cap = \"80Mbit\"").unwrap();
        assert_eq!(t.cap.bits_per_sec(), 80_000_000);
        assert!(toml::from_str::<T>("cap = \"80\"").is_err());
        assert!(toml::from_str::<T>("cap = 80").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(b in 1u64..) {
            let rate = Rate::from_bits_per_sec(b).unwrap();
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Rate>();
        }

        #[test]
        fn parse_never_panics_on_rate_like_text(s in "[0-9.]{0,30} ?[kKMGTi]{0,2}(bit|B|b|bps|Bps)?(/s)?") {
            let _ = s.parse::<Rate>();
        }

        #[test]
        fn integer_units_scale_exactly(n in 1u64..1_000_000, unit in 0usize..6) {
            let (suffix, mult) = [("bit", 1u64), ("kbit", 1000), ("Mbit", 1_000_000),
                ("B/s", 8), ("KB/s", 8000), ("KiB/s", 8192)][unit];
            prop_assert_eq!(bits(&format!("{n}{suffix}")), n * mult);
        }
    }

    #[test]
    fn sizes_and_measured_rates_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(37_000_000_000), "37 GB");
        assert_eq!(human_bits(12_500_000.0), "100.0 Mbit/s");
        assert_eq!(human_bits(125.0), "1.0 kbit/s");
    }
}
