//! Incident logs with known ground truth, for the tests and the benchmark
//! of `cvdmirror analyze`: a lagging mirror on a shared link, as the seed's
//! operator lived it, generated deterministically from a seed.
//!
//! The story: freshclam clients check the mirror every hour or two (half of
//! them with a small header request first, the others learn the version
//! from DNS). At [`Scenario::trigger`] upstream publishes a new `daily`; the
//! mirror's update goes wrong and it lacks the new patch, so every client
//! that comes by gets `404` three times and then downloads the whole
//! `daily.cvd` — the mirror's stale one, so it is still behind at its next
//! check and does it again. Whole downloads share the link
//! ([`link::Link`]): on a herd they take tens of minutes. Some are aborted.
//! ClamAV 1.5 clients ask for the `.sign` of what they downloaded. At
//! [`Scenario::resync`] the patch is there and the herd stops; downloads in
//! flight drain. A little web traffic runs throughout.
//!
//! [`generate`] returns the requests and the [`Truth`] counted while making
//! them (the trigger file, its first and last minute, its clients, the
//! chains and their bytes, the bytes the link carried per minute); the
//! [`write`](mod@write) module renders them in any [`Dialect`], stamped at arrival or
//! completion.

pub mod link;
pub mod write;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

pub use write::{Dialect, line, log, write_log, write_order};

use link::Link;

/// SplitMix64: tiny, deterministic, good enough for test data.
#[derive(Debug, Clone)]
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

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Request {
    /// Completion, UTC seconds (rounded down, as a log stamps it).
    pub fn end(&self) -> i64 {
        (self.t * 1000 + self.dur_ms as i64).div_euclid(1000)
    }
}

/// 2026-11-29 (a Sunday) 00:00:00 UTC.
pub const DAY: i64 = 1_795_910_400;
/// The version the mirror had (and kept serving).
pub const MIRROR_VERSION: u32 = 27_653;
/// The patch it lacked.
pub const MISSING_PATCH: &str = "daily-27654.cdiff";

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Seed of everything random.
    pub seed: u64,
    /// freshclam clients.
    pub clients: usize,
    /// First request (UTC seconds).
    pub start: i64,
    /// Upstream publishes the patch the mirror then lacks.
    pub trigger: i64,
    /// The mirror has it again.
    pub resync: i64,
    /// No check starts after this.
    pub end: i64,
    /// Capacity of the shared link, bits per second.
    pub link_bits_per_sec: u64,
    /// Size of `daily.cvd`.
    pub cvd_bytes: u64,
    /// Time between a client's checks, seconds (uniform in this range).
    pub period_secs: (u64, u64),
    /// Share of whole downloads aborted part-way.
    pub abort_share: f64,
    /// Share of clients running ClamAV 1.5 (they fetch `.sign` files).
    pub sign_share: f64,
    /// Share of clients affected by the incident (the others are already
    /// up to date elsewhere and only check).
    pub herd_share: f64,
    /// Web requests per hour sharing the server.
    pub web_per_hour: u64,
}

impl Scenario {
    /// The seed's Sunday: `clients` clients from 14:00 to 20:00 UTC, the
    /// patch missing from 16:41 to 18:17, a 100 Mbit/s link, 61 MB CVD.
    pub fn incident(seed: u64, clients: usize) -> Self {
        Self {
            seed,
            clients,
            start: DAY + 14 * 3600,
            trigger: DAY + 16 * 3600 + 41 * 60,
            resync: DAY + 18 * 3600 + 17 * 60,
            end: DAY + 20 * 3600,
            link_bits_per_sec: 100_000_000,
            cvd_bytes: 61_234_567,
            period_secs: (3600, 7200),
            abort_share: 0.06,
            sign_share: 0.3,
            herd_share: 1.0,
            web_per_hour: 20,
        }
    }

    /// About `requests` requests over two days around the same incident,
    /// for the benchmark (clients check every 30–90 minutes; a few percent
    /// are caught in the herd, as many as the link can take in 96 minutes).
    pub fn bench(seed: u64, requests: u64) -> Self {
        let hours = 48;
        // Half the clients learn the version from DNS and ask nothing when
        // current: about 0.55 requests per client and hour (measured).
        let clients = (requests as f64 / (0.55 * hours as f64)).ceil() as usize;
        let herd = (1500.0 / clients.max(1) as f64).min(1.0);
        Self {
            start: DAY,
            trigger: DAY + 16 * 3600 + 41 * 60,
            resync: DAY + 18 * 3600 + 17 * 60,
            end: DAY + hours * 3600,
            period_secs: (1800, 5400),
            herd_share: herd,
            web_per_hour: 600,
            ..Self::incident(seed, clients)
        }
    }
}

/// What the generated log must be found to say.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// The file the mirror lacked.
    pub trigger_file: String,
    /// First request for it (UTC seconds).
    pub trigger_first: i64,
    /// Last request for it that got `404`.
    pub trigger_last: i64,
    /// Distinct clients that got a `404` for it.
    pub trigger_clients: usize,
    /// `404` answers for it.
    pub trigger_requests: u64,
    /// First `200` for it.
    pub resolved: Option<i64>,
    /// The version the mirror served meanwhile.
    pub mirror_version: u32,
    /// Clients that fell back at least once.
    pub fallback_clients: usize,
    /// Fallback chains (404s, then a whole download).
    pub chains: u64,
    /// Bytes of those downloads.
    pub chain_bytes: u64,
    /// Whole downloads aborted part-way.
    pub aborted: u64,
    /// Their bytes.
    pub aborted_bytes: u64,
    /// Requests.
    pub requests: u64,
    /// Bytes of all responses.
    pub total_bytes: u64,
    /// Longest transfer.
    pub longest_ms: u64,
    /// The link's capacity, bits per second.
    pub link_bits_per_sec: u64,
    /// Bytes the link carried per minute (minute start, bytes).
    pub minute_bytes: Vec<(i64, u64)>,
}

impl Truth {
    /// The highest rate of any minute, bits per second.
    pub fn peak_bits_per_sec(&self) -> f64 {
        self.minute_bytes
            .iter()
            .map(|&(_, b)| b as f64 * 8.0 / 60.0)
            .fold(0.0, f64::max)
    }
}

/// A generated incident.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Every request, in arrival order.
    pub requests: Vec<Request>,
    /// The ground truth.
    pub truth: Truth,
}

const CHECK: u64 = 512;
const CDIFF_OLD: u64 = 18_211;
const CDIFF_NEW: u64 = 35_871;
const SIGN: u64 = 8_870;
// Responses other than whole downloads are small: they do not wait for the
// shared link and are booked in the second they started.

#[derive(Debug, Clone)]
struct Client {
    host: String,
    ua: String,
    version: u32,
    dns: bool,
    sign: bool,
    herd: bool,
    period: (u64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The client checks for updates.
    Wake(usize),
    /// The client starts its whole download (size in bytes).
    Download(usize, u64),
}

struct Sim<'a> {
    s: &'a Scenario,
    rng: Rng,
    clients: Vec<Client>,
    events: BinaryHeap<Reverse<(i64, Event)>>,
    link: Link,
    /// Downloads in flight: (client, start, bytes, index in `requests`).
    flights: Vec<Option<(usize, i64, u64)>>,
    requests: Vec<Request>,
    fell_back: HashSet<usize>,
    truth: Truth,
}

impl Sim<'_> {
    fn push(&mut self, c: usize, t: i64, path: &str, status: u16, bytes: u64, dur_ms: u64) {
        let cl = &self.clients[c];
        self.requests.push(Request {
            t,
            host: cl.host.clone(),
            path: path.to_owned(),
            status,
            bytes,
            ua: cl.ua.clone(),
            dur_ms,
        });
        self.link.book_at(t as f64, bytes);
    }

    fn next_wake(&mut self, c: usize, after: i64) {
        let (lo, hi) = self.clients[c].period;
        let t = after + self.rng.range(lo, hi + 1) as i64;
        if t < self.s.end {
            self.events.push(Reverse((t, Event::Wake(c))));
        }
    }

    /// One update check of client `c` at `t`.
    fn wake(&mut self, c: usize, t: i64) {
        let s = self.s;
        let mut at = t;
        let cl = self.clients[c].clone();
        if !cl.dns {
            let (status, bytes) = if cl.version >= MIRROR_VERSION && t < s.trigger {
                (304, 0)
            } else {
                (206, CHECK)
            };
            self.push(c, at, "/daily.cvd", status, bytes, 40);
        }
        // Upstream's version as the client learns it.
        let upstream = if t >= s.trigger {
            MIRROR_VERSION + 1
        } else {
            MIRROR_VERSION
        };
        let mut version = cl.version;
        if version < MIRROR_VERSION && upstream >= MIRROR_VERSION {
            at += 1;
            let p = format!("/daily-{MIRROR_VERSION}.cdiff");
            self.push(c, at, &p, 200, CDIFF_OLD, 90);
            if cl.sign {
                at += 1;
                self.push(c, at, &format!("{p}.sign"), 200, SIGN, 3);
            }
            version = MIRROR_VERSION;
        }
        self.clients[c].version = version;
        if version >= upstream || !cl.herd {
            self.next_wake(c, t);
            return;
        }
        if t < s.resync {
            at += 1;
            for _ in 0..3 {
                self.push(c, at, &format!("/{MISSING_PATCH}"), 404, 0, 2);
                self.truth.trigger_requests += 1;
                self.truth.trigger_first = self.truth.trigger_first.min(at);
                self.truth.trigger_last = self.truth.trigger_last.max(at);
            }
            self.fell_back.insert(c);
            let bytes = if self.rng.chance(s.abort_share) {
                self.rng.range(500_000, s.cvd_bytes - 1_000_000)
            } else {
                s.cvd_bytes
            };
            self.events
                .push(Reverse((at + 1, Event::Download(c, bytes))));
        } else {
            at += 1;
            let p = format!("/{MISSING_PATCH}");
            self.push(c, at, &p, 200, CDIFF_NEW, 95);
            self.truth.resolved = Some(self.truth.resolved.map_or(at, |r| r.min(at)));
            if cl.sign {
                self.push(c, at + 1, &format!("{p}.sign"), 200, SIGN, 3);
            }
            self.clients[c].version = upstream;
            self.next_wake(c, t);
        }
    }

    fn start_download(&mut self, c: usize, t: i64, bytes: u64) {
        let id = self.flights.len();
        self.flights.push(Some((c, t, bytes)));
        self.link.start(id, bytes);
    }

    fn finish_download(&mut self, id: usize, done: f64) {
        let Some((c, t, bytes)) = self.flights.get_mut(id).and_then(Option::take) else {
            return;
        };
        let dur_ms = ((done - t as f64) * 1000.0).round().max(1.0) as u64;
        let cl = &self.clients[c];
        self.requests.push(Request {
            t,
            host: cl.host.clone(),
            path: "/daily.cvd".into(),
            status: 200,
            bytes,
            ua: cl.ua.clone(),
            dur_ms,
        });
        self.truth.chains += 1;
        self.truth.chain_bytes += bytes;
        self.truth.longest_ms = self.truth.longest_ms.max(dur_ms);
        if bytes < self.s.cvd_bytes {
            self.truth.aborted += 1;
            self.truth.aborted_bytes += bytes;
        }
        let end = t + (dur_ms / 1000) as i64;
        if cl.sign && bytes == self.s.cvd_bytes {
            let p = format!("/daily-{MIRROR_VERSION}.cvd.sign");
            self.push(c, end + 1, &p, 200, SIGN, 3);
        }
        self.next_wake(c, end);
    }
}

/// Generates the incident `s` describes.
pub fn generate(s: &Scenario) -> Incident {
    let mut rng = Rng(s.seed);
    let versions = ["1.4.6", "1.4.6", "1.0.9", "1.3.2", "0.103.12"];
    let mut clients = Vec::with_capacity(s.clients);
    let mut events = BinaryHeap::new();
    for i in 0..s.clients {
        let host = if i % 7 == 0 {
            format!("2001:db8:{:x}::{:x}", i / 200 + 1, i % 200 + 1)
        } else {
            format!("10.{}.{}.{}", i / 60_000 % 250, i / 240 % 250, i % 240 + 1)
        };
        let sign = rng.chance(s.sign_share);
        let ver = if sign {
            "1.5.1"
        } else {
            versions[rng.range(0, versions.len() as u64) as usize]
        };
        let ua = format!(
            "ClamAV/{ver} (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: {:08x}-{:04x}-4{:03x}-8{:03x}-{:012x})",
            rng.next_u64() as u32,
            rng.next_u64() as u16,
            rng.next_u64() % 0x1000,
            rng.next_u64() % 0x1000,
            rng.next_u64() % 0x1_0000_0000_0000
        );
        let lo = rng.range(s.period_secs.0, s.period_secs.1 + 1);
        let first = s.start + rng.range(0, lo) as i64;
        clients.push(Client {
            host,
            ua,
            version: if rng.chance(0.5) {
                MIRROR_VERSION - 1
            } else {
                MIRROR_VERSION
            },
            dns: rng.chance(0.5),
            sign,
            herd: rng.chance(s.herd_share),
            period: (lo, lo + (s.period_secs.1 - s.period_secs.0) / 10),
        });
        events.push(Reverse((first, Event::Wake(i))));
    }
    let mut sim = Sim {
        s,
        rng,
        clients,
        events,
        link: Link::new(s.link_bits_per_sec as f64 / 8.0, s.start as f64),
        flights: Vec::new(),
        requests: Vec::new(),
        fell_back: HashSet::new(),
        truth: Truth {
            trigger_file: MISSING_PATCH.into(),
            trigger_first: i64::MAX,
            trigger_last: i64::MIN,
            trigger_clients: 0,
            trigger_requests: 0,
            resolved: None,
            mirror_version: MIRROR_VERSION,
            fallback_clients: 0,
            chains: 0,
            chain_bytes: 0,
            aborted: 0,
            aborted_bytes: 0,
            requests: 0,
            total_bytes: 0,
            longest_ms: 0,
            link_bits_per_sec: s.link_bits_per_sec,
            minute_bytes: Vec::new(),
        },
    };
    loop {
        let wake = sim.events.peek().map(|Reverse((t, _))| *t);
        let done = sim.link.next_completion();
        match (wake, done) {
            (Some(w), Some(d)) if d <= w as f64 => {
                if let Some((id, t)) = sim.link.complete_next() {
                    sim.finish_download(id, t);
                }
            }
            (None, Some(_)) => {
                if let Some((id, t)) = sim.link.complete_next() {
                    sim.finish_download(id, t);
                }
            }
            (Some(w), _) => {
                let Some(Reverse((_, ev))) = sim.events.pop() else {
                    break;
                };
                sim.link.advance(w as f64);
                match ev {
                    Event::Wake(c) => sim.wake(c, w),
                    Event::Download(c, bytes) => sim.start_download(c, w, bytes),
                }
            }
            (None, None) => break,
        }
    }
    web_traffic(&mut sim);
    let mut requests = sim.requests;
    requests.sort_by_key(|r| r.t);
    let mut truth = sim.truth;
    truth.fallback_clients = sim.fell_back.len();
    let mut trigger_clients = HashSet::new();
    for r in &requests {
        if r.status == 404 && r.path == format!("/{MISSING_PATCH}") {
            trigger_clients.insert((&r.host, &r.ua));
        }
    }
    truth.trigger_clients = trigger_clients.len();
    truth.requests = requests.len() as u64;
    truth.total_bytes = requests.iter().map(|r| r.bytes).sum();
    truth.minute_bytes = sim.link.minutes();
    Incident { requests, truth }
}

/// A little traffic that is not ClamAV at all.
fn web_traffic(sim: &mut Sim<'_>) {
    if sim.s.web_per_hour == 0 {
        return;
    }
    let gap = (3600 / sim.s.web_per_hour).max(1);
    let mut t = sim.s.start;
    while t < sim.s.end {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let (path, status, bytes, ua) = match sim.rng.range(0, 3) {
            0 => ("/", 200, 4_812, firefox),
            1 => ("/favicon.ico", 404, 196, firefox),
            _ => ("/wp-login.php?x=1", 404, 196, ""),
        };
        let host = format!("192.0.2.{}", sim.rng.range(1, 250));
        sim.requests.push(Request {
            t,
            host,
            path: path.into(),
            status,
            bytes,
            ua: ua.into(),
            dur_ms: 3,
        });
        sim.link.book_at(t as f64, bytes);
        t += sim.rng.range(gap / 2, gap * 3 / 2 + 1).max(1) as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_herd_saturates_the_link_and_nothing_more() {
        let inc = generate(&Scenario::incident(1, 1400));
        let t = &inc.truth;
        assert!(t.chains > 300 && t.fallback_clients > 250, "{t:?}");
        let trigger = Scenario::incident(1, 1400).trigger;
        assert!((trigger..trigger + 120).contains(&t.trigger_first));
        assert!(
            t.longest_ms > 10 * 60 * 1000,
            "far longer than any default window"
        );
        let peak = t.peak_bits_per_sec();
        assert!(peak > 95e6 && peak < 101e6, "{peak}");
        let link: u64 = t.minute_bytes.iter().map(|m| m.1).sum();
        assert!(
            link.abs_diff(t.total_bytes) < 1000,
            "{link} vs {}",
            t.total_bytes
        );
        assert!(inc.requests.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(
            generate(&Scenario::incident(1, 1400)).requests,
            inc.requests
        );
    }
}
