//! Calendar arithmetic for log timestamps: access logs carry local civil
//! time with a UTC offset (`29/Nov/2026:18:41:07 +0200` in the combined
//! format, `2026-11-29T18:41:07+02:00` or Unix seconds `1795970467.123` in
//! JSON logs), while every aggregate here is keyed by UTC seconds so that
//! files written in different zones (or by different servers) line up
//! minute for minute.

use std::fmt::Write as _;

/// Month abbreviations as they appear in the common log format.
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Why a `[dd/Mon/yyyy:HH:MM:SS +hhmm]` timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not the shape `dd/Mon/yyyy:HH:MM:SS +hhmm`.
    Shape,
    /// A field is out of its range (month 13, minute 61, year 0042, ...).
    Range,
}

/// Parses the inside of the brackets of a common-log-format timestamp to
/// (UTC seconds since the epoch, offset east of UTC in seconds).
pub fn parse_clf(s: &[u8]) -> Result<(i64, i32), TimeError> {
    // 29/Nov/2026:18:41:07 +0200  -> exactly 26 bytes
    if s.len() != 26 || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[14] != b':' {
        return Err(TimeError::Shape);
    }
    if s[17] != b':' || s[20] != b' ' || !(s[21] == b'+' || s[21] == b'-') {
        return Err(TimeError::Shape);
    }
    let day = digits(&s[0..2])?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(&s[3..6]))
        .ok_or(TimeError::Shape)? as u32
        + 1;
    let year = digits(&s[7..11])?;
    let (hour, minute, second) = (
        digits(&s[12..14])?,
        digits(&s[15..17])?,
        digits(&s[18..20])?,
    );
    let (off_h, off_m) = (digits(&s[22..24])?, digits(&s[24..26])?);
    if !(1970..=9999).contains(&year)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
        || off_h > 23
        || off_m > 59
    {
        return Err(TimeError::Range);
    }
    let sign = if s[21] == b'-' { -1 } else { 1 };
    let offset = sign * (off_h * 3600 + off_m * 60) as i32;
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok((local - i64::from(offset), offset))
}

/// Parses an ISO 8601 / RFC 3339 time as JSON logs write it (nginx
/// `$time_iso8601`, Caddy with `time_format iso8601`):
/// `2026-11-29T18:41:07+02:00`, `2026-11-29T16:41:07.123Z`, `+0200`, or a
/// space instead of the `T`. Without a zone the time is taken as UTC.
/// Fractions of a second are dropped.
pub fn parse_iso8601(s: &[u8]) -> Result<(i64, i32), TimeError> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return Err(TimeError::Shape);
    }
    if s[13] != b':' || s[16] != b':' {
        return Err(TimeError::Shape);
    }
    let year = digits(&s[0..4])?;
    let (month, day) = (digits(&s[5..7])?, digits(&s[8..10])?);
    let (hour, minute, second) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return Err(TimeError::Shape);
        }
        rest = &r[n..];
    }
    let offset: i32 = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return Err(TimeError::Range);
            }
            let v = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -v } else { v }
        }
        _ => return Err(TimeError::Shape),
    };
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(TimeError::Range);
    }
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok((local - i64::from(offset), offset))
}

/// Parses Unix time as JSON logs write it: seconds with an optional
/// fraction (Caddy's default `ts`, nginx `$msec`), or whole milliseconds,
/// microseconds or nanoseconds (told apart by magnitude). Whole seconds are
/// returned; anything before 1970 or after 9999 is refused.
pub fn parse_unix(s: &[u8]) -> Result<i64, TimeError> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, frac) = s.split_at(int_len);
    if int.is_empty() || int.len() > 19 {
        return Err(TimeError::Shape);
    }
    let fraction_ok = match frac {
        [] => true,
        [b'.', digits @ ..] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !fraction_ok {
        return Err(TimeError::Shape);
    }
    let v = int.iter().fold(0u64, |a, &b| {
        a.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    // 253402300800 is 10000-01-01: larger values are finer units.
    const LIMIT: u64 = 253_402_300_800;
    let secs = [1, 1_000, 1_000_000, 1_000_000_000]
        .into_iter()
        .map(|div| v / div)
        .find(|&s| s < LIMIT)
        .ok_or(TimeError::Range)?;
    Ok(secs as i64)
}

fn digits(s: &[u8]) -> Result<u32, TimeError> {
    s.iter().try_fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u32::from(b - b'0'))
        } else {
            Err(TimeError::Shape)
        }
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub use crate::calendar::{civil_from_days, days_from_civil};

/// `2026-11-29 16:41` in the zone `offset` seconds east of UTC.
pub fn format_minute(utc: i64, offset: i32) -> String {
    let local = utc + i64::from(offset);
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
    let rem = local.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem / 60 % 60
    )
}

/// `16:41` in the zone `offset` seconds east of UTC.
pub fn format_clock(utc: i64, offset: i32) -> String {
    let rem = (utc + i64::from(offset)).rem_euclid(86_400);
    format!("{:02}:{:02}", rem / 3600, rem / 60 % 60)
}

/// RFC 3339 in UTC, for machine-readable output: `2026-11-29T16:41:00Z`.
pub fn rfc3339(utc: i64) -> String {
    let (y, mo, d) = civil_from_days(utc.div_euclid(86_400));
    let rem = utc.rem_euclid(86_400);
    let mut s = String::with_capacity(20);
    let _ = write!(
        s,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    s
}

/// `+0200` for an offset of two hours east of UTC.
pub fn format_offset(offset: i32) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    format!("{sign}{:02}{:02}", a / 3600, a / 60 % 60)
}

/// Parses `+0200`, `-0530` or `Z`/`UTC` to seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let b = s.as_bytes();
    if b.len() != 5 || !(b[0] == b'+' || b[0] == b'-') {
        return None;
    }
    let h = digits(&b[1..3]).ok()?;
    let m = digits(&b[3..5]).ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    let v = (h * 3600 + m * 60) as i32;
    Some(if b[0] == b'-' { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_utc() {
        let (utc, off) = parse_clf(b"29/Nov/2026:18:41:07 +0200").unwrap();
        assert_eq!(off, 7200);
        assert_eq!(rfc3339(utc), "2026-11-29T16:41:07Z");
        let (utc2, _) = parse_clf(b"29/Nov/2026:16:41:07 +0000").unwrap();
        assert_eq!(utc, utc2);
        let (utc3, _) = parse_clf(b"29/Nov/2026:11:11:07 -0530").unwrap();
        assert_eq!(utc, utc3);
    }

    #[test]
    fn refuses_impossible_dates() {
        assert_eq!(
            parse_clf(b"30/Feb/2026:18:41:07 +0200"),
            Err(TimeError::Range)
        );
        assert_eq!(
            parse_clf(b"29/Feb/2024:24:41:07 +0200"),
            Err(TimeError::Range)
        );
        assert!(parse_clf(b"29/Feb/2024:23:41:07 +0200").is_ok());
        assert_eq!(
            parse_clf(b"29/Foo/2026:18:41:07 +0200"),
            Err(TimeError::Shape)
        );
        assert_eq!(parse_clf(b"29/Nov/2026:18:41:07"), Err(TimeError::Shape));
    }

    #[test]
    fn iso8601_and_unix_times() {
        let (want, _) = parse_clf(b"29/Nov/2026:18:41:07 +0200").unwrap();
        for s in [
            &b"2026-11-29T18:41:07+02:00"[..],
            b"2026-11-29T16:41:07Z",
            b"2026-11-29T16:41:07.123456Z",
            b"2026-11-29 18:41:07+0200",
            b"2026-11-29T16:41:07",
        ] {
            assert_eq!(
                parse_iso8601(s).map(|t| t.0),
                Ok(want),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
        assert_eq!(parse_iso8601(b"2026-11-29T18:41:07+02:00").unwrap().1, 7200);
        assert_eq!(
            parse_iso8601(b"2026-13-29T18:41:07Z"),
            Err(TimeError::Range)
        );
        assert_eq!(
            parse_iso8601(b"2026-11-29T18:41:07 x"),
            Err(TimeError::Shape)
        );
        assert_eq!(parse_iso8601(b"2026-11-29"), Err(TimeError::Shape));
        assert_eq!(parse_unix(b"1795970467.5241024"), Ok(1_795_970_467));
        assert_eq!(parse_unix(b"1795970467"), Ok(1_795_970_467));
        assert_eq!(parse_unix(b"1795970467524"), Ok(1_795_970_467));
        assert_eq!(parse_unix(b"1795970467524102400"), Ok(1_795_970_467));
        assert!(
            parse_unix(b"-1").is_err() && parse_unix(b"1.").is_err() && parse_unix(b"").is_err()
        );
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1000, 0, 11_016, 20_786, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_offset("-0530"), Some(-19_800));
        assert_eq!(format_offset(-19_800), "-0530");
    }
}
