//! The version record that ClamAV publishes as the TXT of
//! `current.cvd.clamav.net`: `release:main:daily:time:warning:flevel:safebrowsing:bytecode`.
//!
//! The mirror's sync reads it to learn what upstream has, and the beacon
//! writes it to tell clients what this mirror has, so parsing and formatting
//! live together and round-trip. Parsing is as tolerant as freshclam where
//! freshclam is tolerant (trailing fields after the record time may be
//! missing or empty, fields past the eighth are kept but ignored) and strict
//! where a wrong guess would be costly: a present number that is not a plain
//! decimal number is an error, never a zero.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Age past which freshclam (1.x) ignores a record and checks over HTTP.
pub const STALE_AFTER: Duration = Duration::from_secs(12 * 60 * 60);

/// Fields the record must have: release, main, daily and record time.
const REQUIRED_FIELDS: usize = 4;

/// A parsed ClamAV version record.
///
/// Fields after the record time are optional, as in freshclam: `None` means
/// the field was absent or empty. [`fmt::Display`] writes the text back;
/// `VersionRecord::from_str(&r.to_string()) == Ok(r)` for every record whose
/// strings contain no `:` and no whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionRecord {
    /// Field 0: newest ClamAV release, e.g. `1.4.3` (may be empty).
    pub release: String,
    /// Field 1: `main` database version.
    pub main: u32,
    /// Field 2: `daily` database version.
    pub daily: u32,
    /// Field 3: when the record was made, seconds since the Unix epoch.
    pub record_time: u64,
    /// Field 4: whether clients older than `release` should warn (`0` = no).
    pub version_warning: Option<bool>,
    /// Field 5: newest functionality level.
    pub flevel: Option<u32>,
    /// Field 6: `safebrowsing` database version.
    pub safebrowsing: Option<u32>,
    /// Field 7: `bytecode` database version.
    pub bytecode: Option<u32>,
    /// Fields past the eighth, kept verbatim so formatting round-trips.
    pub extra: Vec<String>,
}

/// Why a TXT text is not a version record.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than the four fields freshclam needs (release to record time).
    #[error("record has {found} colon-separated fields, needs at least {REQUIRED_FIELDS}")]
    TooFewFields {
        /// How many fields there were.
        found: usize,
    },
    /// The release field holds whitespace or control characters.
    #[error("release field {0:?} contains whitespace or control characters")]
    BadRelease(String),
    /// A numeric field is not a plain decimal number that fits its type.
    #[error("field {index} ({field}) is not a valid number: {value:?}")]
    BadNumber {
        /// Position of the field, 0-based.
        index: usize,
        /// What the field means.
        field: &'static str,
        /// The text found there (cut to 64 characters).
        value: String,
    },
}

impl VersionRecord {
    /// Parses TXT text, ignoring surrounding whitespace (a `dns.txt` file
    /// usually ends in a newline).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fields: Vec<&str> = text.trim().split(':').collect();
        if fields.len() < REQUIRED_FIELDS {
            return Err(ParseError::TooFewFields {
                found: fields.len(),
            });
        }
        let release = fields[0];
        if release.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::BadRelease(clip(release)));
        }
        let optional = |index: usize| fields.get(index).copied().filter(|f| !f.is_empty());
        Ok(Self {
            release: release.to_owned(),
            main: number(1, "main", fields[1])?,
            daily: number(2, "daily", fields[2])?,
            record_time: number(3, "record time", fields[3])?,
            version_warning: optional(4)
                .map(|f| number::<u32>(4, "version warning", f).map(|n| n != 0))
                .transpose()?,
            flevel: optional(5).map(|f| number(5, "f-level", f)).transpose()?,
            safebrowsing: optional(6)
                .map(|f| number(6, "safebrowsing", f))
                .transpose()?,
            bytecode: optional(7).map(|f| number(7, "bytecode", f)).transpose()?,
            extra: fields.iter().skip(8).map(|f| (*f).to_owned()).collect(),
        })
    }

    /// The advertised version of database `db` (`main`, `daily`,
    /// `safebrowsing` or `bytecode`), if the record has one.
    pub fn version_of(&self, db: &str) -> Option<u32> {
        match db {
            "main" => Some(self.main),
            "daily" => Some(self.daily),
            "safebrowsing" => self.safebrowsing,
            "bytecode" => self.bytecode,
            _ => None,
        }
    }

    /// Sets the version of database `db`; returns `false` (and changes
    /// nothing) for a name the record has no field for.
    pub fn set_version(&mut self, db: &str, version: u32) -> bool {
        match db {
            "main" => self.main = version,
            "daily" => self.daily = version,
            "safebrowsing" => self.safebrowsing = Some(version),
            "bytecode" => self.bytecode = Some(version),
            _ => return false,
        }
        true
    }

    /// When the record was made.
    pub fn made_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.record_time)
    }

    /// How old the record is at `now` (zero if it claims to be from the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.made_at()).unwrap_or(Duration::ZERO)
    }

    /// Whether freshclam would ignore this record at `now` as too old.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.age(now) > STALE_AFTER
    }

    /// The same record with its record time set to `now`.
    pub fn stamped(&self, now: SystemTime) -> Self {
        Self {
            record_time: epoch_seconds(now),
            ..self.clone()
        }
    }
}

pub use cvdmirror_formats::calendar::unix_seconds as epoch_seconds;

impl FromStr for VersionRecord {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for VersionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.release, self.main, self.daily, self.record_time
        )?;
        let optional = [
            self.version_warning.map(u32::from),
            self.flevel,
            self.safebrowsing,
            self.bytecode,
        ];
        // Trailing absent fields are left out, as a short record is written;
        // with extra fields after them they must stay as empty placeholders.
        let shown = if self.extra.is_empty() {
            optional
                .iter()
                .rposition(Option::is_some)
                .map_or(0, |i| i + 1)
        } else {
            optional.len()
        };
        for field in &optional[..shown] {
            match field {
                Some(n) => write!(f, ":{n}")?,
                None => f.write_str(":")?,
            }
        }
        for field in &self.extra {
            write!(f, ":{field}")?;
        }
        Ok(())
    }
}

/// Parses a plain decimal number: ASCII digits only, no sign, no spaces.
fn number<T: FromStr>(index: usize, field: &'static str, text: &str) -> Result<T, ParseError> {
    let bad = || ParseError::BadNumber {
        index,
        field,
        value: clip(text),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// Keeps error messages bounded whatever a server sent.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UPSTREAM: &str = "0.103.1:59:26104:1615408140:0:63:49191:333";

    #[test]
    fn parses_the_documented_example() {
        let r = VersionRecord::parse(UPSTREAM).unwrap();
        assert_eq!(r.release, "0.103.1");
        assert_eq!(r.main, 59);
        assert_eq!(r.daily, 26104);
        assert_eq!(r.record_time, 1_615_408_140);
        assert_eq!(r.version_warning, Some(false));
        assert_eq!(r.flevel, Some(63));
        assert_eq!(r.safebrowsing, Some(49191));
        assert_eq!(r.bytecode, Some(333));
        assert!(r.extra.is_empty());
        assert_eq!(r.to_string(), UPSTREAM);
    }

    #[test]
    fn version_of_knows_the_four_databases() {
        let r = VersionRecord::parse(UPSTREAM).unwrap();
        assert_eq!(r.version_of("main"), Some(59));
        assert_eq!(r.version_of("daily"), Some(26104));
        assert_eq!(r.version_of("safebrowsing"), Some(49191));
        assert_eq!(r.version_of("bytecode"), Some(333));
        assert_eq!(r.version_of("daily.cvd"), None);
        assert_eq!(r.version_of("valhalla"), None);
    }

    #[test]
    fn set_version_changes_one_field() {
        let mut r = VersionRecord::parse(UPSTREAM).unwrap();
        assert!(r.set_version("bytecode", 339));
        assert!(!r.set_version("valhalla", 1));
        assert_eq!(r.to_string(), "0.103.1:59:26104:1615408140:0:63:49191:339");
    }

    #[test]
    fn trailing_fields_may_be_missing_or_empty() {
        let r = VersionRecord::parse("1.4.3:62:27500:1700000000").unwrap();
        assert_eq!((r.version_warning, r.bytecode), (None, None));
        assert_eq!(r.to_string(), "1.4.3:62:27500:1700000000");
        let r = VersionRecord::parse("1.4.3:62:27500:1700000000:1::").unwrap();
        assert_eq!((r.version_warning, r.flevel), (Some(true), None));
        assert_eq!(r.version_of("bytecode"), None);
    }

    #[test]
    fn extra_fields_are_kept() {
        let text = "1.4.3:62:27500:1700000000:0:90:1:339:future:";
        let r = VersionRecord::parse(text).unwrap();
        assert_eq!(r.extra, ["future", ""]);
        assert_eq!(r.to_string(), text);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let r = VersionRecord::parse(&format!("  {UPSTREAM}\n")).unwrap();
        assert_eq!(r.to_string(), UPSTREAM);
    }

    #[test]
    fn too_few_fields_is_an_error() {
        assert_eq!(
            VersionRecord::parse("1.4.3:62:27500"),
            Err(ParseError::TooFewFields { found: 3 })
        );
        assert_eq!(
            VersionRecord::parse(""),
            Err(ParseError::TooFewFields { found: 1 })
        );
    }

    #[test]
    fn bad_numbers_are_errors_not_zeros() {
        for (text, index) in [
            ("1.4.3:x:27500:1700000000", 1),
            ("1.4.3:62::1700000000", 2),
            ("1.4.3:62:27500:-1", 3),
            ("1.4.3:62:27500:1700000000:yes", 4),
            ("1.4.3:62:27500:1700000000:0: 90", 5),
            ("1.4.3:62:27500:1700000000:0:90:+1", 6),
            ("1.4.3:62:27500:1700000000:0:90:1:99999999999", 7),
        ] {
            match VersionRecord::parse(text) {
                Err(ParseError::BadNumber { index: i, .. }) => assert_eq!(i, index, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn release_with_spaces_is_an_error() {
        assert!(matches!(
            VersionRecord::parse("1.4 3:62:27500:1700000000"),
            Err(ParseError::BadRelease(_))
        ));
    }

    #[test]
    fn staleness_follows_freshclam() {
        let r = VersionRecord::parse(UPSTREAM).unwrap();
        let made = r.made_at();
        assert!(!r.is_stale(made + STALE_AFTER));
        assert!(r.is_stale(made + STALE_AFTER + Duration::from_secs(1)));
        assert_eq!(r.age(made - Duration::from_secs(5)), Duration::ZERO);
        let fresh = r.stamped(made + Duration::from_secs(100));
        assert_eq!(fresh.record_time, r.record_time + 100);
        assert_eq!(fresh.daily, r.daily);
    }

    fn field() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.+_-]{0,12}"
    }

    prop_compose! {
        fn record()(
            release in field(),
            main in any::<u32>(),
            daily in any::<u32>(),
            record_time in any::<u64>(),
            version_warning in any::<Option<bool>>(),
            flevel in any::<Option<u32>>(),
            safebrowsing in any::<Option<u32>>(),
            bytecode in any::<Option<u32>>(),
            extra in prop::collection::vec(field(), 0..3),
        ) -> VersionRecord {
            VersionRecord {
                release, main, daily, record_time, version_warning,
                flevel, safebrowsing, bytecode, extra,
            }
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(r in record()) {
            prop_assert_eq!(VersionRecord::parse(&r.to_string()), Ok(r));
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = VersionRecord::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_colon_soup(text in "[0-9:a. \n-]{0,60}") {
            if let Ok(r) = VersionRecord::parse(&text) {
                // Whatever parses formats to something that parses the same.
                prop_assert_eq!(VersionRecord::parse(&r.to_string()), Ok(r));
            }
        }
    }
}
