//! Replays the seed incident as access logs, deterministically: a quiet
//! Sunday afternoon of header checks and small patches, then at 16:41 an
//! upstream update that left the mirror without `daily-27654.cdiff` (every
//! client: 404 ×3, then the whole 61 MB `daily.cvd`, some aborted), until a
//! manual re-sync at 18:17 makes the patch available and traffic calms down.
//! The generator counts the truth (fallback clients, chains, bytes) so the
//! tests can demand exact answers.

use std::collections::HashSet;

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

/// SplitMix64: tiny, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Arrival, UTC seconds.
    pub t: i64,
    /// Client address.
    pub host: String,
    /// Request target.
    pub path: String,
    /// Status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// User-Agent (empty: none).
    pub ua: String,
    /// Duration in milliseconds.
    pub dur_ms: u64,
}

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

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn clf_time(utc: i64, offset: i64) -> String {
    let local = utc + offset;
    let days = local.div_euclid(86_400);
    // 2026-11-29 is the only day the generator writes, but stay general.
    let (y, m, d) = civil(days);
    let rem = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        MONTHS[m as usize - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        offset.abs() / 3600,
        offset.abs() / 60 % 60
    )
}

fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One log line in `dialect`, newline included.
pub fn line(r: &Request, dialect: Dialect) -> String {
    let ua = if r.ua.is_empty() { "-" } else { &r.ua };
    match dialect {
        Dialect::Cvdmirror => format!(
            "{} - - [{}] \"GET {} HTTP/1.1\" {} {} \"-\" \"{ua}\" {}.{:03}\n",
            r.host,
            clf_time(r.t, 0),
            r.path,
            r.status,
            r.bytes,
            r.dur_ms / 1000,
            r.dur_ms % 1000
        ),
        Dialect::Apache => {
            let bytes = if r.bytes == 0 {
                "-".to_string()
            } else {
                r.bytes.to_string()
            };
            format!(
                "{} - - [{}] \"GET {} HTTP/1.1\" {} {bytes} \"-\" \"{ua}\" {}\n",
                r.host,
                clf_time(r.t, 7200),
                r.path,
                r.status,
                r.dur_ms * 1000
            )
        }
        Dialect::Nginx => format!(
            "{} - - [{}] \"GET {} HTTP/1.1\" {} {} \"-\" \"{ua}\" {}.{:03}\n",
            r.host,
            clf_time(r.t + (r.dur_ms / 1000) as i64, 0),
            r.path,
            r.status,
            r.bytes,
            r.dur_ms / 1000,
            r.dur_ms % 1000
        ),
    }
}

/// The whole log in `dialect`, in the order the server would write it
/// (every server writes a line when the response completes).
pub fn log(inc: &Incident, dialect: Dialect, keep: impl Fn(&Request) -> bool) -> String {
    let mut reqs: Vec<&Request> = inc.requests.iter().filter(|r| keep(r)).collect();
    reqs.sort_by_key(|r| r.t * 1000 + r.dur_ms as i64);
    reqs.iter().map(|r| line(r, dialect)).collect()
}
