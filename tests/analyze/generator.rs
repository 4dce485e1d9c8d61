//! Replays the seed incident as access logs, deterministically: a quiet
//! Sunday afternoon of header checks and small patches, then at 16:41 an
//! upstream update that left the mirror without `daily-27654.cdiff` (every
//! client: 404 ×3, then the whole 61 MB `daily.cvd`, some aborted), until a
//! manual re-sync at 18:17 makes the patch available and traffic calms down.
//! The generator counts the truth (fallback clients, chains, bytes) so the
//! tests can demand exact answers.
//!
//! Unlike the library's generator (`cvdmirror::analyze::generate`, a
//! shared 100 Mbit/s link, downloads of up to an hour), each download here
//! runs at its own 1–6 MB/s: the request times are all there is to place
//! the bytes, and the tests check that they are used.

use std::collections::HashSet;

use cvdmirror::analyze::generate::{self, Dialect as Format};
pub use cvdmirror::analyze::generate::{Request, Rng};
use cvdmirror::analyze::stamps::Stamp;

/// 2026-11-29 (a Sunday) 00:00:00 UTC.
pub const DAY: i64 = 1_795_910_400;
/// When the generated log starts.
pub const START: i64 = DAY + 14 * 3600;
/// The failed upstream update.
pub const ONSET: i64 = DAY + 16 * 3600 + 41 * 60;
/// The manual re-sync.
pub const RESYNC: i64 = DAY + 18 * 3600 + 17 * 60;
/// When the generated log ends.
pub const END: i64 = DAY + 20 * 3600;
/// Upstream published daily 27653 here (the mirror got it fine).
const V53: i64 = DAY + 15 * 3600 + 10 * 60;

/// The full size of the mirror's stale `daily.cvd`.
pub const FULL: u64 = 61_234_567;
const CDIFF_53: u64 = 18_211;
const CDIFF_54: u64 = 35_871;

/// The generated incident and its ground truth.
pub struct Incident {
    /// Requests in arrival order.
    pub requests: Vec<Request>,
    /// Clients that fell back at least once.
    pub fallback_clients: usize,
    /// Fallback chains (404s then a whole download).
    pub chains: usize,
    /// Of which the download was aborted.
    pub aborted: usize,
    /// Bytes of the aborted downloads.
    pub aborted_bytes: u64,
    /// All bytes.
    pub total_bytes: u64,
}

/// The log formats written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// cvdmirror: combined + request seconds, UTC, arrival time.
    Cvdmirror,
    /// Apache: combined + `%D` microseconds, `+0200`, `-` for empty bodies.
    Apache,
    /// nginx: combined + `$request_time`, UTC, logged at completion.
    Nginx,
}

impl Dialect {
    fn format(self) -> (Format, Stamp) {
        match self {
            Dialect::Cvdmirror => (Format::Cvdmirror, Stamp::Start),
            Dialect::Apache => (Format::ApacheD, Stamp::Start),
            Dialect::Nginx => (Format::NginxTimed, Stamp::End),
        }
    }
}

/// Generates the incident with `clients` freshclam clients.
pub fn incident(seed: u64, clients: usize) -> Incident {
    let mut rng = Rng(seed);
    let mut requests = Vec::new();
    let mut fell_back = HashSet::new();
    let (mut chains, mut aborted, mut aborted_bytes) = (0, 0, 0);
    let versions = ["1.4.6", "1.4.6", "1.0.9", "1.3.2", "0.103.12"];
    for i in 0..clients {
        let host = if i % 7 == 0 {
            format!("2001:db8:{:x}::{:x}", i / 200 + 1, i % 200 + 1)
        } else {
            format!("10.{}.{}.{}", i / 60_000, i / 240 % 250, i % 240 + 1)
        };
        let ver = versions[rng.range(0, versions.len() as u64) as usize];
        let ua = format!(
            "ClamAV/{ver} (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: {:08x}-{:04x}-4{:03x}-8{:03x}-{:012x})",
            rng.next_u64() as u32,
            rng.next_u64() as u16,
            rng.next_u64() % 0x1000,
            rng.next_u64() % 0x1000,
            rng.next_u64() % 0x1_0000_0000_0000
        );
        let mut version = if rng.chance(0.5) { 27_652 } else { 27_653 };
        let period = rng.range(60 * 60, 120 * 60) as i64;
        let mut t = START + rng.range(0, period as u64) as i64;
        let req = |t: i64, path: &str, status: u16, bytes: u64, dur_ms: u64| Request {
            t,
            host: host.clone(),
            path: path.into(),
            status,
            bytes,
            ua: ua.clone(),
            dur_ms,
        };
        while t < END {
            let mut at = t;
            if t < ONSET {
                if rng.chance(0.3) {
                    requests.push(req(at, "/daily.cvd", 206, 512, 40));
                } else {
                    requests.push(req(at, "/daily.cvd", 304, 0, 30));
                }
                if t >= V53 && version < 27_653 {
                    at += 1;
                    requests.push(req(at, "/daily-27653.cdiff", 200, CDIFF_53, 90));
                    version = 27_653;
                }
            } else if t < RESYNC {
                if version < 27_653 {
                    requests.push(req(at, "/daily-27653.cdiff", 200, CDIFF_53, 90));
                    version = 27_653;
                    at += 1;
                }
                for _ in 0..3 {
                    requests.push(req(at, "/daily-27654.cdiff", 404, 0, 2));
                }
                at += 1;
                let rate = rng.range(1_000_000, 6_000_000); // bytes per second
                let bytes = if rng.chance(0.06) {
                    aborted += 1;
                    let b = rng.range(500_000, FULL - 1_000_000);
                    aborted_bytes += b;
                    b
                } else {
                    FULL
                };
                requests.push(req(at, "/daily.cvd", 200, bytes, bytes * 1000 / rate));
                fell_back.insert(i);
                chains += 1;
            } else if version < 27_654 {
                requests.push(req(at, "/daily-27654.cdiff", 200, CDIFF_54, 95));
                version = 27_654;
            } else {
                requests.push(req(at, "/daily.cvd", 304, 0, 30));
            }
            t += period;
        }
    }
    // A little traffic that is not ClamAV at all.
    let mut t = START;
    while t < END {
        let (path, status, bytes, ua) = match rng.range(0, 3) {
            0 => (
                "/",
                200,
                4_812,
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            1 => (
                "/favicon.ico",
                404,
                196,
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            _ => ("/wp-login.php?x=1", 404, 196, ""),
        };
        requests.push(Request {
            t,
            host: format!("192.0.2.{}", rng.range(1, 250)),
            path: path.into(),
            status,
            bytes,
            ua: ua.into(),
            dur_ms: 3,
        });
        t += rng.range(60, 600) as i64;
    }
    requests.sort_by_key(|r| r.t);
    let total_bytes = requests.iter().map(|r| r.bytes).sum();
    Incident {
        requests,
        fallback_clients: fell_back.len(),
        chains,
        aborted,
        aborted_bytes,
        total_bytes,
    }
}

/// One log line in `dialect`, newline included.
pub fn line(r: &Request, dialect: Dialect) -> String {
    let (format, stamp) = dialect.format();
    generate::line(r, format, stamp)
}

/// The whole log in `dialect`, in the order the server would write it
/// (every server writes a line when the response completes).
pub fn log(inc: &Incident, dialect: Dialect, keep: impl Fn(&Request) -> bool) -> String {
    let (format, stamp) = dialect.format();
    generate::log(&inc.requests, format, stamp, keep)
}
