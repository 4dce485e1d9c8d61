//! The access-log line parser: one line (combined format as cvdmirror,
//! Apache and nginx write it, with or without a request time appended; or a
//! JSON object as nginx `escape=json` and Caddy write it, see [`json`]) to an
//! [`Entry`] that borrows from the line. It runs on every line of logs that
//! may hold anything a client chose to send, so it never allocates, never
//! panics and says why it refused a line (fuzzed in
//! `fuzz/fuzz_targets/access_log_line.rs`).
//!
//! Accepted combined shape (fields after the status may be missing, as in the
//! common log format, and anything after the user agent is optional):
//!
//! `host ident user [dd/Mon/yyyy:HH:MM:SS +hhmm] "request" status bytes "referer" "user-agent" [request time ...]`
//!
//! `bytes` may be `-` (Apache's `%b` for an empty body). The request time is
//! a field `rt=…` or `request_time=…` (nginx configurations), else the first
//! numeric field after the user agent: with a decimal point it is seconds
//! (nginx `$request_time`, cvdmirror); a bare integer is Apache's `%D`
//! (microseconds) or `%T` (seconds), which one the analyzer decides per log
//! from the transfers' sizes ([`super::stamps`]).

pub mod json;

use super::time::{TimeError, parse_clf};

/// Longest client address or host name accepted (a DNS name is at most 253).
pub const MAX_HOST: usize = 255;

/// One parsed access-log line; the byte slices point into the line as logged
/// (still escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Client address (or host name, with Apache's `HostnameLookups`).
    pub host: &'a [u8],
    /// Time of the log entry in UTC seconds since the epoch.
    pub time: i64,
    /// The UTC offset the line was written in, seconds east.
    pub offset: i32,
    /// Request method (`GET`), or the whole request field when it is not a
    /// `METHOD TARGET PROTOCOL` triple (`-`, TLS bytes sent to a plain port).
    pub method: &'a [u8],
    /// Request target as logged (path, maybe with a query); empty if absent.
    pub target: &'a [u8],
    /// HTTP status code.
    pub status: u16,
    /// Body bytes sent (`-` is 0).
    pub bytes: u64,
    /// User-Agent as logged; empty when absent or `-`.
    pub user_agent: &'a [u8],
    /// The request time, when the line carries one.
    pub request_time: Option<RequestTime>,
    /// Which of the accepted shapes the line had.
    pub format: LineFormat,
}

/// A request time as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTime {
    /// An unambiguous time (seconds with a decimal point, `rt=`, a JSON
    /// `request_time` or `duration`), in milliseconds.
    Millis(u64),
    /// A bare integer: Apache's `%D` (microseconds) or `%T` (seconds).
    Integer(u64),
}

impl RequestTime {
    /// Milliseconds, reading a bare integer as microseconds (`%D`) or, with
    /// `integer_secs`, as seconds (`%T`).
    pub fn millis(self, integer_secs: bool) -> u64 {
        match self {
            Self::Millis(ms) => ms,
            Self::Integer(v) if integer_secs => v.saturating_mul(1000),
            Self::Integer(v) => v.saturating_add(500) / 1000,
        }
        .min(MAX_DURATION_MS)
    }
}

/// Longest request time taken at its word (a week); longer ones are capped.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

/// The shape of a parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineFormat {
    /// Combined or common log format (cvdmirror, Apache, nginx).
    Combined,
    /// One JSON object per line (nginx `escape=json`, Caddy).
    Json,
}

/// Why a line was not an access-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParseError {
    /// Empty or only white space.
    Empty,
    /// The client field is missing, too long or holds control bytes.
    Host,
    /// No `[...]` timestamp where one belongs.
    MissingTime,
    /// The timestamp is not `dd/Mon/yyyy:HH:MM:SS +hhmm`.
    TimeShape,
    /// The timestamp names an impossible date or time.
    TimeRange,
    /// The quoted request field is missing or unterminated.
    Request,
    /// The status is not a three-digit code 100-599.
    Status,
    /// The byte count is neither digits nor `-`, or overflows.
    Bytes,
    /// A quoted referer or user-agent field is unterminated.
    Quote,
    /// The line is longer than the reader accepts (counted by the reader).
    TooLong,
    /// A line starting with `{` that is not a JSON object.
    Json,
}

impl ParseError {
    /// A short description for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Empty => "empty line",
            Self::Host => "bad client field",
            Self::MissingTime => "no [timestamp]",
            Self::TimeShape => "malformed timestamp",
            Self::TimeRange => "impossible timestamp",
            Self::Request => "missing or unterminated \"request\"",
            Self::Status => "bad status code",
            Self::Bytes => "bad byte count",
            Self::Quote => "unterminated quoted field",
            Self::TooLong => "line too long",
            Self::Json => "malformed JSON",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Parses one line (a trailing `\n` or `\r\n` is ignored).
pub fn parse_line(line: &[u8]) -> Result<Entry<'_>, ParseError> {
    let line = trim_end(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    if let Some(first) = line.iter().find(|b| !b.is_ascii_whitespace())
        && *first == b'{'
    {
        return json::parse(line);
    }
    let host_end = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::Host)?;
    let host = &line[..host_end];
    if host.is_empty() || host.len() > MAX_HOST || host.iter().any(|b| b.is_ascii_control()) {
        return Err(ParseError::Host);
    }
    let rest = &line[host_end..];
    let open = rest
        .iter()
        .position(|&b| b == b'[')
        .ok_or(ParseError::MissingTime)?;
    let rest = &rest[open + 1..];
    let close = rest
        .iter()
        .position(|&b| b == b']')
        .ok_or(ParseError::MissingTime)?;
    let (time, offset) = parse_clf(&rest[..close]).map_err(|e| match e {
        TimeError::Shape => ParseError::TimeShape,
        TimeError::Range => ParseError::TimeRange,
    })?;
    let rest = rest[close + 1..]
        .strip_prefix(b" ")
        .ok_or(ParseError::Request)?;
    let (request, rest) = quoted(rest).ok_or(ParseError::Request)?;
    let (method, target) = split_request(request);
    let rest = rest.strip_prefix(b" ").ok_or(ParseError::Status)?;
    let (status, rest) = token(rest);
    let status = parse_status(status).ok_or(ParseError::Status)?;
    let (bytes, mut rest) = token(rest.strip_prefix(b" ").ok_or(ParseError::Bytes)?);
    let bytes = parse_bytes(bytes).ok_or(ParseError::Bytes)?;

    let mut user_agent: &[u8] = b"";
    if rest.starts_with(b" \"") {
        // Combined: referer then user agent.
        let (_referer, r) = quoted(&rest[1..]).ok_or(ParseError::Quote)?;
        rest = r;
        if let Some(r) = rest.strip_prefix(b" ").filter(|r| r.starts_with(b"\"")) {
            let (ua, r) = quoted(r).ok_or(ParseError::Quote)?;
            user_agent = if ua == b"-" { b"" } else { ua };
            rest = r;
        }
    }
    Ok(Entry {
        host,
        time,
        offset,
        method,
        target,
        status,
        bytes,
        user_agent,
        request_time: request_time(rest),
        format: LineFormat::Combined,
    })
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [head @ .., b'\n' | b'\r'] = line {
        line = head;
    }
    line
}

/// A `"..."` field at the start of `s`: (contents, rest after the quote).
/// Backslash escapes the next byte, as Apache and nginx write it.
fn quoted(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = s.strip_prefix(b"\"")?;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some((&body[..i], &body[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    s.split_at(end)
}

/// `GET /daily.cvd HTTP/1.1` -> (`GET`, `/daily.cvd`); anything else is all
/// method and no target.
pub(crate) fn split_request(request: &[u8]) -> (&[u8], &[u8]) {
    let mut parts = request.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    match parts.next() {
        Some(target) if !method.is_empty() => (method, target),
        _ => (request, b""),
    }
}

pub(crate) fn parse_status(s: &[u8]) -> Option<u16> {
    if s.len() != 3 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s.iter().fold(0u16, |a, &b| a * 10 + u16::from(b - b'0'));
    (100..=599).contains(&v).then_some(v)
}

pub(crate) fn parse_bytes(s: &[u8]) -> Option<u64> {
    if s == b"-" {
        return Some(0);
    }
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |a, &b| {
        if b.is_ascii_digit() {
            a.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The request time among the fields after the user agent: `rt=…` or
/// `request_time=…` wherever it is, else the first numeric field.
fn request_time(rest: &[u8]) -> Option<RequestTime> {
    let mut fields = rest.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let keyed = rest.split(|&b| b == b' ').find_map(|t| {
        t.strip_prefix(b"rt=")
            .or_else(|| t.strip_prefix(b"request_time="))
    });
    match keyed {
        Some(v) => seconds(
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v),
        ),
        None => fields.find(|t| t[0].is_ascii_digit()).and_then(numeric),
    }
}

/// A bare field: seconds with a decimal point, or an integer of unknown unit.
fn numeric(tok: &[u8]) -> Option<RequestTime> {
    if tok.contains(&b'.') {
        seconds(tok)
    } else if tok.len() <= 19 && tok.iter().all(u8::is_ascii_digit) {
        Some(RequestTime::Integer(
            tok.iter().fold(0u64, |a, &b| a * 10 + u64::from(b - b'0')),
        ))
    } else {
        None
    }
}

/// Seconds, maybe with a fraction (`96.021`, `0`), as milliseconds.
pub(crate) fn seconds(tok: &[u8]) -> Option<RequestTime> {
    if tok.is_empty() || tok.len() > 24 || !tok.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = std::str::from_utf8(tok).ok()?.parse().ok()?;
    let ms = (secs * 1000.0).round();
    (ms.is_finite() && ms >= 0.0).then(|| RequestTime::Millis((ms as u64).min(MAX_DURATION_MS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvdmirror_line() {
        let e = parse_line(b"192.0.2.7 - - [27/Nov/2026:16:41:07 +0000] \"GET /daily.cvd HTTP/1.1\" 200 61234567 \"-\" \"ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64)\" 96.021\n").unwrap();
        assert_eq!(e.host, b"192.0.2.7");
        assert_eq!(e.method, b"GET");
        assert_eq!(e.target, b"/daily.cvd");
        assert_eq!((e.status, e.bytes), (200, 61_234_567));
        assert_eq!(e.user_agent, b"ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64)");
        assert_eq!(e.request_time, Some(RequestTime::Millis(96_021)));
        assert_eq!(e.format, LineFormat::Combined);
    }

    #[test]
    fn apache_dash_bytes_offset_and_microseconds() {
        let e = parse_line(b"2001:db8::1 - frank [29/Nov/2026:18:41:07 +0200] \"GET /daily.cvd HTTP/1.1\" 304 - \"-\" \"ClamAV/1.0.9\" 1520").unwrap();
        assert_eq!(e.bytes, 0);
        assert_eq!(e.offset, 7200);
        assert_eq!(e.request_time, Some(RequestTime::Integer(1520)));
        assert_eq!(RequestTime::Integer(1520).millis(false), 2);
        assert_eq!(RequestTime::Integer(40).millis(true), 40_000);
    }

    #[test]
    fn nginx_keyed_request_time_and_extra_fields() {
        let head = "10.0.0.1 - - [29/Nov/2026:16:41:07 +0000] \"GET /daily.cvd HTTP/1.1\" 200 9 \"-\" \"ClamAV/1.4.6\"";
        for (tail, want) in [
            (
                " \"-\" rt=2400.125 uct=\"0.000\"",
                Some(RequestTime::Millis(2_400_125)),
            ),
            (" \"203.0.113.9\" 0.250", Some(RequestTime::Millis(250))),
            (" request_time=\"3.5\"", Some(RequestTime::Millis(3_500))),
            (" \"-\"", None),
            ("", None),
        ] {
            let line = format!("{head}{tail}");
            let e = parse_line(line.as_bytes()).unwrap();
            assert_eq!(e.request_time, want, "{line}");
        }
    }

    #[test]
    fn common_log_format_and_odd_requests() {
        let e = parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"-\" 408 -").unwrap();
        assert_eq!(
            (e.method, e.target, e.user_agent),
            (&b"-"[..], &b""[..], &b""[..])
        );
        let e =
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"\\x16\\x03\\x01\" 400 0 \"-\" \"-\"")
                .unwrap();
        assert_eq!(e.status, 400);
        let e = parse_line(
            br#"h - - [29/Nov/2026:18:41:07 +0200] "GET /a\"b HTTP/1.1" 404 9 "-" "x \"y\"""#,
        )
        .unwrap();
        assert_eq!(e.user_agent, br#"x \"y\""#);
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_line(b""), Err(ParseError::Empty));
        assert_eq!(parse_line(b"garbage"), Err(ParseError::Host));
        assert_eq!(
            parse_line(b"h - - 29/Nov/2026"),
            Err(ParseError::MissingTime)
        );
        assert_eq!(
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"GET / HTTP/1.1"),
            Err(ParseError::Request)
        );
        assert_eq!(
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"GET /\" 2000 1"),
            Err(ParseError::Status)
        );
        assert_eq!(
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"GET /\" 200 99999999999999999999"),
            Err(ParseError::Bytes)
        );
        assert_eq!(
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"GET /\" 200 1 \"-\" \"ua"),
            Err(ParseError::Quote)
        );
    }
}
