//! Writing generated requests as the log formats operators have: the
//! combined format with or without a request time (cvdmirror, Apache `%D`
//! and `%T`, nginx `$request_time`), and JSON lines (nginx `escape=json`,
//! Caddy). Each format can be stamped at arrival or at completion (Apache
//! `%{end:…}t` exists, as does nginx stamping at completion by default),
//! and every server writes a line when the response completes, so lines
//! are in completion order either way.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::Request;
use crate::calendar::civil_from_days;
use crate::stamps::Stamp;

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// cvdmirror: combined + request seconds (`96.021`), UTC.
    Cvdmirror,
    /// Apache `combined`: no request time, `+0200`, `-` for empty bodies.
    Apache,
    /// Apache `combined` + `%D` (microseconds).
    ApacheD,
    /// Apache `combined` + `%T` (whole seconds).
    ApacheT,
    /// nginx `combined`: no request time, UTC.
    Nginx,
    /// nginx combined + `"$http_x_forwarded_for" rt=$request_time`.
    NginxTimed,
    /// nginx `escape=json` with `$time_local` and `$request_time`.
    NginxJson,
    /// Caddy's default JSON access log (`ts` Unix seconds, `duration`).
    Caddy,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 8] = [
        Dialect::Cvdmirror,
        Dialect::Apache,
        Dialect::ApacheD,
        Dialect::ApacheT,
        Dialect::Nginx,
        Dialect::NginxTimed,
        Dialect::NginxJson,
        Dialect::Caddy,
    ];

    /// A short name (`nginx-json`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Cvdmirror => "cvdmirror",
            Dialect::Apache => "apache",
            Dialect::ApacheD => "apache-D",
            Dialect::ApacheT => "apache-T",
            Dialect::Nginx => "nginx",
            Dialect::NginxTimed => "nginx-timed",
            Dialect::NginxJson => "nginx-json",
            Dialect::Caddy => "caddy",
        }
    }

    /// The dialect named `name` (as [`Dialect::name`] writes it).
    pub fn from_name(name: &str) -> Option<Dialect> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// Whether lines carry the request time.
    pub fn has_request_time(self) -> bool {
        !matches!(self, Dialect::Apache | Dialect::Nginx)
    }

    /// What the server stamps by default.
    pub fn default_stamp(self) -> Stamp {
        match self {
            Dialect::Cvdmirror | Dialect::Apache | Dialect::ApacheD | Dialect::ApacheT => {
                Stamp::Start
            }
            _ => Stamp::End,
        }
    }

    fn offset(self) -> i64 {
        match self {
            Dialect::Apache | Dialect::ApacheD | Dialect::ApacheT => 7200,
            _ => 0,
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `29/Nov/2026:18:41:07 +0200`.
pub fn clf_time(utc: i64, offset: i64) -> String {
    let local = utc + offset;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let rem = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        MONTHS[(m as usize).clamp(1, 12) - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        offset.abs() / 3600,
        offset.abs() / 60 % 60
    )
}

/// One request as a line of `dialect` stamped at `stamp`, newline included.
pub fn line(r: &Request, dialect: Dialect, stamp: Stamp) -> String {
    let mut s = String::with_capacity(256);
    push_line(&mut s, r, dialect, stamp);
    s
}

fn push_line(s: &mut String, r: &Request, dialect: Dialect, stamp: Stamp) {
    let ua = if r.ua.is_empty() { "-" } else { &r.ua };
    let at = match stamp {
        Stamp::Start => r.t,
        Stamp::End => r.end(),
    };
    let secs = format!("{}.{:03}", r.dur_ms / 1000, r.dur_ms % 1000);
    let head = |s: &mut String, bytes: &str| {
        let _ = write!(
            s,
            "{} - - [{}] \"GET {} HTTP/1.1\" {} {bytes} \"-\" \"{ua}\"",
            r.host,
            clf_time(at, dialect.offset()),
            r.path,
            r.status,
        );
    };
    let dash_bytes = if r.bytes == 0 {
        "-".to_owned()
    } else {
        r.bytes.to_string()
    };
    match dialect {
        Dialect::Cvdmirror => {
            head(s, &r.bytes.to_string());
            let _ = write!(s, " {secs}");
        }
        Dialect::Apache => head(s, &dash_bytes),
        Dialect::ApacheD => {
            head(s, &dash_bytes);
            let _ = write!(s, " {}", r.dur_ms * 1000);
        }
        Dialect::ApacheT => {
            head(s, &dash_bytes);
            let _ = write!(s, " {}", r.dur_ms / 1000);
        }
        Dialect::Nginx => head(s, &r.bytes.to_string()),
        Dialect::NginxTimed => {
            head(s, &r.bytes.to_string());
            let _ = write!(s, " \"-\" rt={secs} uct=\"0.000\"");
        }
        Dialect::NginxJson => {
            let _ = write!(
                s,
                "{{\"time_local\":\"{}\",\"remote_addr\":\"{}\",\"remote_user\":\"\",\"request\":\"GET {} HTTP/1.1\",\"status\": \"{}\",\"body_bytes_sent\":\"{}\",\"request_time\":\"{secs}\",\"http_referrer\":\"\",\"http_user_agent\":\"{}\"}}",
                clf_time(at, 0),
                r.host,
                json_escape(&r.path),
                r.status,
                r.bytes,
                json_escape(&r.ua),
            );
        }
        Dialect::Caddy => {
            let ts = match stamp {
                Stamp::Start => format!("{}.{:06}", r.t, 0),
                Stamp::End => {
                    let end_ms = r.t * 1000 + r.dur_ms as i64;
                    format!("{}.{:03}", end_ms.div_euclid(1000), end_ms.rem_euclid(1000))
                }
            };
            let ua_header = if r.ua.is_empty() {
                String::new()
            } else {
                format!("\"User-Agent\":[\"{}\"],", json_escape(&r.ua))
            };
            let _ = write!(
                s,
                "{{\"level\":\"info\",\"ts\":{ts},\"logger\":\"http.log.access.log0\",\"msg\":\"handled request\",\"request\":{{\"remote_ip\":\"{h}\",\"remote_port\":\"41342\",\"client_ip\":\"{h}\",\"proto\":\"HTTP/1.1\",\"method\":\"GET\",\"host\":\"mirror.example\",\"uri\":\"{}\",\"headers\":{{{ua_header}\"Accept\":[\"*/*\"]}}}},\"bytes_read\":0,\"user_id\":\"\",\"duration\":{},\"size\":{},\"status\":{},\"resp_headers\":{{\"Server\":[\"Caddy\"]}}}}",
                json_escape(&r.path),
                r.dur_ms as f64 / 1000.0,
                r.bytes,
                r.status,
                h = r.host,
            );
        }
    }
    s.push('\n');
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The requests that `keep` selects in the order a server writes them: by
/// completion (then start, then as generated).
pub fn write_order(reqs: &[Request], keep: impl Fn(&Request) -> bool) -> Vec<&Request> {
    let mut v: Vec<&Request> = reqs.iter().filter(|r| keep(r)).collect();
    v.sort_by_key(|r| (r.t * 1000 + r.dur_ms as i64, r.t));
    v
}

/// The whole log as one string.
pub fn log(
    reqs: &[Request],
    dialect: Dialect,
    stamp: Stamp,
    keep: impl Fn(&Request) -> bool,
) -> String {
    let mut s = String::new();
    for r in write_order(reqs, keep) {
        push_line(&mut s, r, dialect, stamp);
    }
    s
}

/// Streams the log to `out` (for logs too large to hold as one string).
pub fn write_log(
    out: &mut impl Write,
    reqs: &[Request],
    dialect: Dialect,
    stamp: Stamp,
) -> io::Result<u64> {
    let mut buf = String::with_capacity(1 << 16);
    let mut n = 0;
    for r in write_order(reqs, |_| true) {
        push_line(&mut buf, r, dialect, stamp);
        n += 1;
        if buf.len() > 60_000 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{RequestTime, parse_line};

    #[test]
    fn every_dialect_parses_back() {
        let r = Request {
            t: 1_795_970_460,
            host: "2001:db8::7".into(),
            path: "/daily.cvd".into(),
            status: 200,
            bytes: 61_234_567,
            ua: "ClamAV/1.4.6 (OS: linux-gnu, UUID: 5a1e)".into(),
            dur_ms: 2_400_125,
        };
        for d in Dialect::ALL {
            for stamp in Stamp::BOTH {
                let l = line(&r, d, stamp);
                let e = parse_line(l.as_bytes()).unwrap_or_else(|e| panic!("{d:?}: {e}: {l}"));
                let want_t = if stamp == Stamp::Start { r.t } else { r.end() };
                assert_eq!(e.time, want_t, "{l}");
                assert_eq!(
                    (e.host, e.status, e.bytes),
                    (&b"2001:db8::7"[..], 200, r.bytes),
                    "{l}"
                );
                assert_eq!(e.target, b"/daily.cvd");
                assert_eq!(e.user_agent, r.ua.as_bytes(), "{l}");
                let ms = e.request_time.map(|t| match t {
                    RequestTime::Millis(ms) => ms,
                    RequestTime::Integer(v) if d == Dialect::ApacheT => v * 1000,
                    RequestTime::Integer(v) => v / 1000,
                });
                let want = match d {
                    Dialect::Apache | Dialect::Nginx => None,
                    Dialect::ApacheT => Some(2_400_000),
                    _ => Some(2_400_125),
                };
                assert_eq!(ms, want, "{l}");
            }
        }
    }
}
