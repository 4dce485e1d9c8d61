//! JSON access logs, one object per line, as operators configure them:
//! nginx `log_format … escape=json '{"time_local":"$time_local",…}'` and
//! Caddy's default access log (`{"ts":1795970467.52,"request":{"client_ip":…,
//! "method":"GET","uri":"/daily.cvd","headers":{"User-Agent":["ClamAV/…"]}},
//! "duration":2400.1,"size":61234567,"status":200}`).
//!
//! Field names are whatever the operator wrote, so the parser looks for the
//! names people use (listed in `Slot::of`) at any depth up to
//! [`MAX_DEPTH`], case-insensitively, and takes the best one present: the
//! client from `client_ip` before `remote_addr`, the body size from
//! `body_bytes_sent` before `size` before `bytes_sent`. Values may be
//! strings or numbers. Like the combined parser it never allocates and
//! never panics; string values are returned as logged (still escaped).

use super::{
    Entry, LineFormat, ParseError, RequestTime, parse_bytes, parse_status, seconds, split_request,
};
use crate::time::{TimeError, parse_clf, parse_iso8601, parse_unix};

/// Deepest nesting searched (Caddy's `request.headers.User-Agent` is 3).
pub const MAX_DEPTH: usize = 4;

/// A value as found: a string's raw contents or a number's characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Str(&'a [u8]),
    Num(&'a [u8]),
}

impl<'a> Value<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Value::Str(b) | Value::Num(b) => b,
        }
    }
}

/// The fields of an entry, each with the rank of the name it came from
/// (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Host,
    Time,
    Request,
    Method,
    Target,
    Status,
    Bytes,
    Agent,
    /// Seconds (`request_time`, Caddy's numeric `duration`, or a Go
    /// duration string like `"12.5ms"`).
    Secs,
    /// Milliseconds (`duration_ms`, `request_time_ms`).
    Millis,
}

const SLOTS: usize = 10;

impl Slot {
    /// The slot a key fills and its rank.
    fn of(key: &[u8]) -> Option<(Slot, u8)> {
        const NAMES: &[(&[u8], Slot, u8)] = &[
            (b"client_ip", Slot::Host, 0),
            (b"remote_addr", Slot::Host, 1),
            (b"remote_ip", Slot::Host, 2),
            (b"clientip", Slot::Host, 3),
            (b"client_addr", Slot::Host, 3),
            (b"client", Slot::Host, 4),
            (b"ip", Slot::Host, 5),
            (b"time_local", Slot::Time, 0),
            (b"time_iso8601", Slot::Time, 1),
            (b"time", Slot::Time, 2),
            (b"@timestamp", Slot::Time, 3),
            (b"timestamp", Slot::Time, 4),
            (b"ts", Slot::Time, 5),
            (b"msec", Slot::Time, 6),
            (b"request", Slot::Request, 0),
            (b"request_line", Slot::Request, 1),
            (b"method", Slot::Method, 0),
            (b"request_method", Slot::Method, 0),
            (b"uri", Slot::Target, 0),
            (b"request_uri", Slot::Target, 0),
            (b"url", Slot::Target, 1),
            (b"path", Slot::Target, 2),
            (b"status", Slot::Status, 0),
            (b"status_code", Slot::Status, 1),
            (b"response_status", Slot::Status, 2),
            (b"body_bytes_sent", Slot::Bytes, 0),
            (b"size", Slot::Bytes, 1),
            (b"bytes_sent", Slot::Bytes, 2),
            (b"response_size", Slot::Bytes, 3),
            (b"bytes_written", Slot::Bytes, 4),
            (b"bytes", Slot::Bytes, 5),
            (b"http_user_agent", Slot::Agent, 0),
            (b"user-agent", Slot::Agent, 1),
            (b"user_agent", Slot::Agent, 1),
            (b"useragent", Slot::Agent, 2),
            (b"agent", Slot::Agent, 3),
            (b"request_time", Slot::Secs, 0),
            (b"duration", Slot::Secs, 1),
            (b"request_duration", Slot::Secs, 2),
            (b"duration_ms", Slot::Millis, 0),
            (b"request_time_ms", Slot::Millis, 0),
        ];
        NAMES
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(key))
            .map(|&(_, slot, rank)| (slot, rank))
    }
}

#[derive(Default)]
struct Fields<'a> {
    slots: [Option<(Value<'a>, u8)>; SLOTS],
}

impl<'a> Fields<'a> {
    fn offer(&mut self, slot: Slot, rank: u8, v: Value<'a>) {
        let cell = &mut self.slots[slot as usize];
        if cell.is_none_or(|(_, r)| rank < r) {
            *cell = Some((v, rank));
        }
    }

    fn get(&self, slot: Slot) -> Option<Value<'a>> {
        self.slots[slot as usize].map(|(v, _)| v)
    }
}

/// A cursor over the line.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(ParseError::Json)
        }
    }

    /// A string at the cursor: its raw contents.
    fn string(&mut self) -> Result<&'a [u8], ParseError> {
        self.eat(b'"')?;
        let start = self.i;
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b'\\' => self.i += 2,
                b'"' => {
                    let body = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(body);
                }
                _ => self.i += 1,
            }
        }
        Err(ParseError::Json)
    }

    /// A number, `true`, `false` or `null` at the cursor.
    fn bare(&mut self) -> Result<&'a [u8], ParseError> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        {
            self.i += 1;
        }
        if self.i == start {
            Err(ParseError::Json)
        } else {
            Ok(&self.s[start..self.i])
        }
    }

    /// The object at the cursor, offering its fields (and those of nested
    /// objects) to `f`.
    fn object(&mut self, f: &mut Fields<'a>, depth: usize) -> Result<(), ParseError> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            let slot = Slot::of(key);
            match self.peek() {
                Some(b'{') if depth < MAX_DEPTH => self.object(f, depth + 1)?,
                Some(b'[') => {
                    let first = self.array(depth)?;
                    if let (Some((slot, rank)), Some(v)) = (slot, first) {
                        f.offer(slot, rank, Value::Str(v));
                    }
                }
                Some(b'"') => {
                    let v = self.string()?;
                    if let Some((slot, rank)) = slot {
                        f.offer(slot, rank, Value::Str(v));
                    }
                }
                Some(b'{') => self.skip_nested()?,
                Some(_) => {
                    let v = self.bare()?;
                    if let Some((slot, rank)) = slot
                        && !matches!(v, b"null" | b"true" | b"false")
                    {
                        f.offer(slot, rank, Value::Num(v));
                    }
                }
                None => return Err(ParseError::Json),
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(ParseError::Json),
            }
        }
    }

    /// An array at the cursor: its first element if that is a string
    /// (Caddy's header values are arrays of strings); the rest is skipped.
    fn array(&mut self, depth: usize) -> Result<Option<&'a [u8]>, ParseError> {
        self.eat(b'[')?;
        let mut first = None;
        let mut index = 0;
        loop {
            match self.peek() {
                Some(b']') if index == 0 => {
                    self.i += 1;
                    return Ok(None);
                }
                Some(b'"') => {
                    let v = self.string()?;
                    if index == 0 {
                        first = Some(v);
                    }
                }
                Some(b'{' | b'[') if depth < MAX_DEPTH => self.skip_nested()?,
                Some(b'{' | b'[') => return Err(ParseError::Json),
                Some(_) => {
                    self.bare()?;
                }
                None => return Err(ParseError::Json),
            }
            index += 1;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(first);
                }
                _ => return Err(ParseError::Json),
            }
        }
    }

    /// Skips a nested object or array without looking inside (brackets in
    /// strings are skipped with the strings).
    fn skip_nested(&mut self) -> Result<(), ParseError> {
        let mut open = 0usize;
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => open += 1,
                b'}' | b']' => {
                    open = open.checked_sub(1).ok_or(ParseError::Json)?;
                    if open == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        Err(ParseError::Json)
    }
}

/// Parses one JSON access-log line.
pub fn parse(line: &[u8]) -> Result<Entry<'_>, ParseError> {
    let mut scan = Scan { s: line, i: 0 };
    let mut f = Fields::default();
    scan.object(&mut f, 1)?;
    if scan.peek().is_some() {
        return Err(ParseError::Json);
    }
    let host = f
        .get(Slot::Host)
        .map(|v| strip_port(v.bytes()))
        .unwrap_or_default();
    if host.is_empty()
        || host.len() > super::MAX_HOST
        || host == b"-"
        || host.iter().any(|b| b.is_ascii_control() || *b == b' ')
    {
        return Err(ParseError::Host);
    }
    let (time, offset) = time(f.get(Slot::Time).ok_or(ParseError::MissingTime)?)?;
    let (method, target) = match (
        f.get(Slot::Request),
        f.get(Slot::Method),
        f.get(Slot::Target),
    ) {
        (_, Some(m), Some(t)) => (m.bytes(), t.bytes()),
        (Some(Value::Str(r)), _, _) => split_request(r),
        _ => return Err(ParseError::Request),
    };
    let status = f
        .get(Slot::Status)
        .and_then(|v| parse_status(v.bytes()))
        .ok_or(ParseError::Status)?;
    let bytes = match f.get(Slot::Bytes) {
        None => 0,
        Some(v) => parse_bytes(v.bytes()).ok_or(ParseError::Bytes)?,
    };
    let user_agent = match f.get(Slot::Agent).map(Value::bytes) {
        None | Some(b"-") => &b""[..],
        Some(ua) => ua,
    };
    let request_time = match (f.get(Slot::Millis), f.get(Slot::Secs)) {
        (Some(ms), _) => seconds(ms.bytes()).map(|t| match t {
            RequestTime::Millis(v) => RequestTime::Millis(v / 1000),
            other => other,
        }),
        (None, Some(v)) => seconds(v.bytes()).or_else(|| go_duration(v.bytes())),
        (None, None) => None,
    };
    Ok(Entry {
        host,
        time,
        offset,
        method,
        target,
        status,
        bytes,
        user_agent,
        request_time,
        format: LineFormat::Json,
    })
}

/// `192.0.2.7:41342` -> `192.0.2.7`, `[2001:db8::1]:443` -> `2001:db8::1`;
/// a bare IPv6 address stays whole.
fn strip_port(host: &[u8]) -> &[u8] {
    if let Some(inner) = host.strip_prefix(b"[") {
        return inner.split(|&b| b == b']').next().unwrap_or_default();
    }
    match host.iter().filter(|&&b| b == b':').count() {
        1 => host.split(|&b| b == b':').next().unwrap_or_default(),
        _ => host,
    }
}

/// A time in any of the shapes JSON logs use: `29/Nov/2026:16:41:07 +0000`
/// (nginx `$time_local`), ISO 8601, Caddy's wall clock
/// `2026/11/29 16:41:07.000` (no zone: UTC), or Unix seconds.
fn time(v: Value<'_>) -> Result<(i64, i32), ParseError> {
    let b = v.bytes();
    let err = |e: TimeError| match e {
        TimeError::Shape => ParseError::TimeShape,
        TimeError::Range => ParseError::TimeRange,
    };
    if matches!(v, Value::Num(_)) || b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return parse_unix(b).map(|t| (t, 0)).map_err(err);
    }
    if b.len() == 26 && b.get(2) == Some(&b'/') {
        return parse_clf(b).map_err(err);
    }
    if b.get(4) == Some(&b'/') && b.get(7) == Some(&b'/') && b.len() <= 40 {
        let mut iso = [0u8; 40];
        iso[..b.len()].copy_from_slice(b);
        iso[4] = b'-';
        iso[7] = b'-';
        return parse_iso8601(&iso[..b.len()]).map_err(err);
    }
    parse_iso8601(b).map_err(err)
}

/// A Go duration as Caddy writes it with `duration_format string`:
/// `12.345ms`, `1.5s`, `2m3.5s`, `150µs`.
fn go_duration(s: &[u8]) -> Option<RequestTime> {
    let text = std::str::from_utf8(s).ok()?;
    let mut rest = text;
    let mut ms = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_ms = match &rest[..unit] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" | "μs" => 1e-3,
            "ns" => 1e-6,
            _ => return None,
        };
        rest = &rest[unit..];
        ms += value * per_ms;
    }
    (ms.is_finite() && ms >= 0.0 && !text.is_empty())
        .then(|| RequestTime::Millis((ms.round() as u64).min(super::MAX_DURATION_MS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_line;

    #[test]
    fn nginx_escape_json() {
        let line = br#"{"time_local":"29/Nov/2026:18:41:07 +0200","remote_addr":"2001:db8::7","remote_user":"","request":"GET /daily.cvd HTTP/1.1","status": "200","body_bytes_sent":"61234567","request_time":"2400.125","http_referrer":"","http_user_agent":"ClamAV/1.4.6 (OS: linux-gnu, UUID: 5a1e)"}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.host, b"2001:db8::7");
        assert_eq!((e.method, e.target), (&b"GET"[..], &b"/daily.cvd"[..]));
        assert_eq!((e.status, e.bytes, e.offset), (200, 61_234_567, 7200));
        assert_eq!(e.user_agent, b"ClamAV/1.4.6 (OS: linux-gnu, UUID: 5a1e)");
        assert_eq!(e.request_time, Some(RequestTime::Millis(2_400_125)));
        assert_eq!(e.format, LineFormat::Json);
        let clf =
            parse_line(b"h - - [29/Nov/2026:18:41:07 +0200] \"GET / HTTP/1.1\" 200 1").unwrap();
        assert_eq!(e.time, clf.time);
    }

    #[test]
    fn caddy_default_access_log() {
        let line = br#"{"level":"info","ts":1795970467.5241024,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"10.0.0.9","remote_port":"41342","client_ip":"192.0.2.7","proto":"HTTP/1.1","method":"GET","host":"mirror.example","uri":"/daily-27654.cdiff","headers":{"User-Agent":["ClamAV/1.5.1 (OS: linux-gnu)"],"Accept":["*/*"]},"tls":{"resumed":false}},"bytes_read":0,"user_id":"","duration":0.000929675,"size":0,"status":404,"resp_headers":{"Server":["Caddy"]}}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.host, b"192.0.2.7", "client_ip wins over remote_ip");
        assert_eq!(e.target, b"/daily-27654.cdiff");
        assert_eq!((e.status, e.bytes, e.time), (404, 0, 1_795_970_467));
        assert_eq!(e.user_agent, b"ClamAV/1.5.1 (OS: linux-gnu)");
        assert_eq!(e.request_time, Some(RequestTime::Millis(1)));
        let go = br#"{"ts":"2026-11-29T16:41:07Z","request":{"remote_addr":"[2001:db8::1]:443","method":"GET","uri":"/daily.cvd"},"duration":"2m3.5s","size":5,"status":200}"#;
        let e = parse_line(go).unwrap();
        assert_eq!(e.host, b"2001:db8::1");
        assert_eq!(e.request_time, Some(RequestTime::Millis(123_500)));
        let wall = br#"{"ts":"2026/11/29 16:41:07.000","request":{"remote_addr":"192.0.2.1:5","method":"GET","uri":"/"},"size":5,"status":200}"#;
        assert_eq!(parse_line(wall).unwrap().time, 1_795_970_467);
        assert_eq!(parse_line(wall).unwrap().host, b"192.0.2.1");
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_line(b"{"), Err(ParseError::Json));
        assert_eq!(parse_line(br#"{"a":1}x"#), Err(ParseError::Json));
        assert_eq!(parse_line(br#"{"a":"#), Err(ParseError::Json));
        assert_eq!(parse_line(br#"{"status":200}"#), Err(ParseError::Host));
        assert_eq!(
            parse_line(br#"{"remote_addr":"h","status":200}"#),
            Err(ParseError::MissingTime)
        );
        assert_eq!(
            parse_line(br#"{"remote_addr":"h","msec":"1795970467.1","status":200}"#),
            Err(ParseError::Request)
        );
        assert_eq!(
            parse_line(
                br#"{"remote_addr":"h","msec":"1795970467.1","request":"GET /","status":"x"}"#
            ),
            Err(ParseError::Status)
        );
        let deep = format!("{}{}", "{\"a\":".repeat(50), "}".repeat(50));
        assert!(parse_line(deep.as_bytes()).is_err());
        let ok = br#"{"remote_addr":"h","msec":"1795970467.123","request":"GET / HTTP/1.1","status":200,"x":[1,{"y":[2]},"z"],"n":null}"#;
        assert_eq!(parse_line(ok).unwrap().bytes, 0);
    }
}
