//! `herd`: a herd of simulated freshclam clients, for `bench/incident.sh`.
//!
//! Every client needs the whole `daily.cvd`, as in the incident this project
//! answers (a lagging mirror sends every client from cdiffs to the full
//! database). Each one arrives at a seeded random moment within
//! `--arrive-secs` and does what freshclam 1.4 does, one TCP connection per
//! request (`Connection: close`), from its own loopback source address:
//!
//! 1. header check: `GET /daily.cvd`, `Range: bytes=0-511`,
//!    `If-Modified-Since: <its old stime>`;
//! 2. the missing cdiff, `MaxAttempts` (3) times without pause (404 expected);
//! 3. the full `GET /daily.cvd` with `If-Modified-Since`.
//!
//! Several servers (`--addrs IP:PORT,IP:PORT,..`, for `bench/fleet.sh`):
//! client `i` is assigned to one of them by a smooth weighted round robin
//! over `--split W,W,..` (equal weights by default: DNS round robin), and
//! keeps talking to it. A `301`/`302`/`303`/`307`/`308` with a `Location:
//! http://IP:PORT/PATH` is followed on a new connection, at most three times
//! per request, as freshclam (libcurl, `CURLOPT_MAXREDIRS` 3) does; the
//! redirects taken are counted per server the client was assigned to.
//!
//! Failures are handled as freshclam does: `429` -> no request before
//! `Retry-After` has passed (4 h if absent: the client is then lost for this
//! run), then start over; `5xx`, connection errors and timeouts -> retry after
//! `--retry-secs` (5) up to `--attempts` (3), then give up (freshclam would
//! try its next server, and there is none); a transfer that receives no byte
//! for `--stall-secs` (60, freshclam's ReceiveTimeout) is aborted and its
//! bytes count as wasted. Everything stops at `--deadline-secs`.
//!
//! Measured: per-second body bytes of the full downloads (throughput and its
//! mean over the busy period), Jain's fairness index each second over the
//! downloads active during the whole second, time until every client holds
//! the file, bytes wasted, status counts. Writes `PREFIX.timeline.tsv` and
//! `PREFIX.clients.tsv`, prints one `RESULT key=value ...` line.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

/// Hard cap on a herd run.
const MAX_DEADLINE: Duration = Duration::from_secs(1800);
const MAX_CLIENTS: usize = 20_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Freshclam's cool-down when a 429 carries no Retry-After.
const NO_RETRY_AFTER: Duration = Duration::from_secs(4 * 3600);

/// Most redirects followed per request (freshclam: 3).
const MAX_REDIRECTS: u32 = 3;

/// Whether this process may talk to `ip`: loopback always; any other
/// address only from a network namespace other than the initial one that
/// has no default route (one `bench/fleet.sh` created and wired itself), so
/// nothing outside this machine is ever reached.
pub fn target_allowed(ip: IpAddr) -> bool {
    if ip.is_loopback() {
        return true;
    }
    let ns = |p: &str| std::fs::read_link(p).ok();
    let own = ns("/proc/self/ns/net");
    let isolated = own.is_some() && own != ns("/proc/1/ns/net");
    // /proc/net/route: Destination 00000000 is a default route.
    let no_default = std::fs::read_to_string("/proc/net/route").is_ok_and(|t| {
        t.lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(1) != Some("00000000"))
    }) && std::fs::read_to_string("/proc/net/ipv6_route").is_ok_and(|t| {
        t.lines()
            .all(|l| !l.starts_with("00000000000000000000000000000000 00 ") || l.contains(" lo"))
    });
    isolated && no_default
}

/// Settings of a herd run.
pub struct HerdArgs {
    addrs: Vec<SocketAddr>,
    split: Vec<u64>,
    host: String,
    clients: usize,
    arrive: Duration,
    size: u64,
    cvd_path: String,
    cdiff_path: String,
    ims: String,
    seed: u64,
    deadline: Duration,
    stall: Duration,
    retry: Duration,
    attempts: u32,
    source_base: Ipv4Addr,
    out_prefix: String,
    user_agent: String,
}

fn parse(args: &[String]) -> Result<HerdArgs, String> {
    let mut a = HerdArgs {
        addrs: Vec::new(),
        split: Vec::new(),
        host: "localhost".into(),
        clients: 300,
        arrive: Duration::from_secs(60),
        size: 0,
        cvd_path: "/daily.cvd".into(),
        cdiff_path: "/daily-27829.cdiff".into(),
        ims: "Thu, 01 Jan 2026 00:00:00 GMT".into(),
        seed: 1,
        deadline: Duration::from_secs(600),
        stall: Duration::from_secs(60),
        retry: Duration::from_secs(5),
        attempts: 3,
        source_base: Ipv4Addr::new(127, 1, 0, 0),
        out_prefix: String::new(),
        user_agent: "ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64)".into(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?.clone();
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addrs = vec![val.parse().map_err(|e| format!("--addr: {e}"))?],
            "--addrs" => {
                a.addrs = val
                    .split(',')
                    .map(|v| v.parse().map_err(|e| format!("--addrs {v}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--split" => {
                a.split = val
                    .split(',')
                    .map(|v| v.parse().map_err(|e| format!("--split {v}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--host" => a.host = val,
            "--clients" => a.clients = num(&val)? as usize,
            "--arrive-secs" => a.arrive = Duration::from_secs(num(&val)?),
            "--size" => a.size = num(&val)?,
            "--cvd" => a.cvd_path = val,
            "--cdiff" => a.cdiff_path = val,
            "--ims" => a.ims = val,
            "--seed" => a.seed = num(&val)?,
            "--deadline-secs" => a.deadline = Duration::from_secs(num(&val)?),
            "--stall-secs" => a.stall = Duration::from_secs(num(&val)?),
            "--retry-secs" => a.retry = Duration::from_secs(num(&val)?),
            "--attempts" => a.attempts = num(&val)? as u32,
            "--source-base" => {
                a.source_base = val.parse().map_err(|e| format!("--source-base: {e}"))?;
            }
            "--out" => a.out_prefix = val,
            "--user-agent" => a.user_agent = val,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.addrs.is_empty() {
        a.addrs
            .push("127.0.0.1:80".parse().map_err(|e| format!("{e}"))?);
    }
    if a.split.is_empty() {
        a.split = vec![1; a.addrs.len()];
    }
    if a.split.len() != a.addrs.len() || a.split.iter().all(|w| *w == 0) {
        return Err("--split needs one weight per --addrs entry, not all zero".into());
    }
    if a.addrs.iter().any(|s| !target_allowed(s.ip())) || !target_allowed(IpAddr::V4(a.source_base))
    {
        return Err("only loopback addresses may be used (or any, from an isolated network namespace without a default route)".into());
    }
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if a.size < 512 || a.out_prefix.is_empty() || a.attempts == 0 {
        return Err("--size (>= 512), --out and --attempts (> 0) are required".into());
    }
    if a.deadline > MAX_DEADLINE || a.stall.is_zero() {
        return Err(format!(
            "--deadline-secs must be <= {}, --stall-secs > 0",
            MAX_DEADLINE.as_secs()
        ));
    }
    Ok(a)
}

/// A small seeded generator (splitmix64): the same seed gives every server
/// the same herd.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CPU time (utime + stime, clock ticks) this process used so far.
pub fn self_cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| {
            let rest = t.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// A parsed response head.
pub struct Head {
    /// Status code (0 if unparsable).
    pub status: u16,
    /// `Content-Length`, if sent.
    pub content_length: Option<u64>,
    /// `Retry-After` in seconds, if sent as a number.
    pub retry_after: Option<u64>,
    /// Body bytes that arrived with the head.
    pub body_start: usize,
    /// `Location`, if sent.
    pub location: Option<String>,
}

/// Reads until the end of the response head (each read bounded by `stall`).
pub async fn read_head(
    s: &mut TcpStream,
    buf: &mut [u8],
    stall: Duration,
) -> std::io::Result<(Head, usize)> {
    let mut have = 0;
    loop {
        if have == buf.len() {
            return Err(std::io::Error::other("response head too large"));
        }
        let n = timeout(stall, s.read(&mut buf[have..]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before head",
            ));
        }
        have += n;
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]);
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut head = Head {
                status,
                content_length: None,
                retry_after: None,
                body_start: end + 4,
                location: None,
            };
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    let v = v.trim();
                    if k.eq_ignore_ascii_case("content-length") {
                        head.content_length = v.parse().ok();
                    } else if k.eq_ignore_ascii_case("retry-after") {
                        head.retry_after = v.parse().ok();
                    } else if k.eq_ignore_ascii_case("location") {
                        head.location = Some(v.to_owned());
                    }
                }
            }
            return Ok((head, have));
        }
    }
}

/// Connects from `source` (resetting on close: no TIME_WAIT left behind).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    let s = timeout(CONNECT_TIMEOUT, sock.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    s.set_zero_linger()?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Per-client live state, read by the once-a-second sampler.
#[derive(Default)]
struct Slot {
    /// Incremented when a full download starts; odd while one is running.
    generation: AtomicU64,
    /// Body bytes of the current full download.
    bytes: AtomicU64,
    requests: AtomicU64,
    s429: AtomicU64,
    failures: AtomicU64,
    wasted: AtomicU64,
    /// Milliseconds after the herd start when the client held the file.
    done_ms: AtomicU64,
    gave_up: AtomicBool,
    arrival_ms: AtomicU64,
    /// Index into `addrs` of the server this client was assigned.
    server: AtomicU64,
    redirects: AtomicU64,
}

struct Shared {
    a: HerdArgs,
    slots: Vec<Slot>,
    status: std::sync::Mutex<BTreeMap<u16, u64>>,
    errors: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Body bytes of full downloads, all clients.
    full_bytes: AtomicU64,
    /// Milliseconds after the herd start of the first full-download request.
    first_full_ms: AtomicU64,
    start: Instant,
}

enum Outcome {
    Response {
        status: u16,
        retry_after: Option<u64>,
        body: u64,
        complete: bool,
    },
    Error {
        what: &'static str,
        body: u64,
    },
    /// A redirect, with its `Location`.
    Redirect(String),
}

/// `http://IP:PORT/PATH` -> (address, Host header, path); `None` for
/// anything else (names are never resolved).
fn parse_location(location: &str) -> Option<(SocketAddr, String, String)> {
    let rest = location.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .or_else(|_| format!("{authority}:80").parse())
        .ok()?;
    Some((addr, authority.to_owned(), path.to_owned()))
}

/// Client `i`'s server: a smooth weighted round robin over `weights`
/// (nginx's upstream algorithm), so every prefix of the clients is split as
/// evenly as the weights allow.
fn assign(weights: &[u64], clients: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    (0..clients)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += *w as i64;
            }
            let best = (0..weights.len())
                .max_by_key(|i| (current[*i], std::cmp::Reverse(*i)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

impl Shared {
    fn count_status(&self, s: u16) {
        if let Ok(mut m) = self.status.lock() {
            *m.entry(s).or_default() += 1;
        }
    }

    fn count_error(&self, e: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(e).or_default() += 1;
        }
    }

    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// One request on its own connection. `full`: count body bytes as the
    /// client's full download.
    async fn fetch(&self, id: usize, path: &str, extra: &str, full: bool) -> Outcome {
        let a = &self.a;
        let slot = &self.slots[id];
        let mut addr = a.addrs[slot.server.load(Ordering::Relaxed) as usize];
        let mut host = a.host.clone();
        let mut path = path.to_owned();
        for hop in 0..=MAX_REDIRECTS {
            let out = self.fetch_once(id, addr, &host, &path, extra, full).await;
            match out {
                Outcome::Redirect(location) if hop < MAX_REDIRECTS => {
                    match parse_location(&location) {
                        Some((to, to_host, to_path)) if target_allowed(to.ip()) => {
                            slot.redirects.fetch_add(1, Ordering::Relaxed);
                            (addr, host, path) = (to, to_host, to_path);
                        }
                        _ => {
                            return Outcome::Error {
                                what: "bad_location",
                                body: 0,
                            };
                        }
                    }
                }
                Outcome::Redirect(_) => {
                    return Outcome::Error {
                        what: "too_many_redirects",
                        body: 0,
                    };
                }
                other => return other,
            }
        }
        Outcome::Error {
            what: "too_many_redirects",
            body: 0,
        }
    }

    /// One request on its own connection to `addr`; a redirect is returned,
    /// not followed.
    async fn fetch_once(
        &self,
        id: usize,
        addr: SocketAddr,
        host: &str,
        path: &str,
        extra: &str,
        full: bool,
    ) -> Outcome {
        let a = &self.a;
        let slot = &self.slots[id];
        slot.requests.fetch_add(1, Ordering::Relaxed);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {} (UUID: herd-{id})\r\nAccept: */*\r\n{extra}Connection: close\r\n\r\n",
            a.user_agent
        );
        let src = source_addr(a.source_base, id);
        let mut s = match connect(addr, Some(src)).await {
            Ok(s) => s,
            Err(e) => {
                return Outcome::Error {
                    what: if e.kind() == std::io::ErrorKind::TimedOut {
                        "connect_timeout"
                    } else {
                        "connect_error"
                    },
                    body: 0,
                };
            }
        };
        if s.write_all(req.as_bytes()).await.is_err() {
            return Outcome::Error {
                what: "write_error",
                body: 0,
            };
        }
        let mut buf = vec![0u8; 64 * 1024];
        let (head, have) = match read_head(&mut s, &mut buf, a.stall).await {
            Ok(h) => h,
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::TimedOut {
                    "stall"
                } else {
                    "head_error"
                };
                return Outcome::Error { what, body: 0 };
            }
        };
        self.count_status(head.status);
        if matches!(head.status, 301 | 302 | 303 | 307 | 308)
            && let Some(location) = head.location
        {
            return Outcome::Redirect(location);
        }
        let count = full && head.status == 200;
        if count {
            slot.bytes.store(0, Ordering::Relaxed);
            slot.generation.fetch_add(1, Ordering::AcqRel);
        }
        let add = |n: u64| {
            if count {
                slot.bytes.fetch_add(n, Ordering::Relaxed);
                self.full_bytes.fetch_add(n, Ordering::Relaxed);
            }
        };
        let mut body = (have - head.body_start) as u64;
        add(body);
        let want = head.content_length;
        let result = loop {
            if want.is_some_and(|w| body >= w) {
                break Ok(());
            }
            match timeout(a.stall, s.read(&mut buf)).await {
                Err(_) => break Err("stall"),
                Ok(Err(_)) => break Err("read_error"),
                Ok(Ok(0)) => {
                    break if want.is_none() {
                        Ok(())
                    } else {
                        Err("short_body")
                    };
                }
                Ok(Ok(n)) => {
                    body += n as u64;
                    add(n as u64);
                }
            }
        };
        if count {
            slot.generation.fetch_add(1, Ordering::AcqRel);
        }
        match result {
            Ok(()) => Outcome::Response {
                status: head.status,
                retry_after: head.retry_after,
                body,
                complete: want.is_none_or(|w| body == w),
            },
            Err(what) => Outcome::Error { what, body },
        }
    }
}

/// Client `id`'s source address: `base + 1 + id` (127.1.0.1, 127.1.0.2, ..).
fn source_addr(base: Ipv4Addr, id: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(base).wrapping_add(1 + id as u32)))
}

enum Step {
    Done,
    CoolDown(Duration),
    GiveUp,
}

/// One request with freshclam's retries: 5xx, errors and timeouts are
/// retried after `retry` up to `attempts` times; 429 means cool down.
async fn with_retries(sh: &Shared, id: usize, path: &str, extra: &str, full: bool) -> Step {
    let a = &sh.a;
    let slot = &sh.slots[id];
    for attempt in 1..=a.attempts {
        let failed = match sh.fetch(id, path, extra, full).await {
            Outcome::Response {
                status: 429,
                retry_after,
                ..
            } => {
                slot.s429.fetch_add(1, Ordering::Relaxed);
                return Step::CoolDown(retry_after.map_or(NO_RETRY_AFTER, Duration::from_secs));
            }
            Outcome::Response {
                status,
                body,
                complete,
                ..
            } if (200..300).contains(&status) || status == 304 => {
                if full && !(status == 200 && complete && body == a.size) {
                    sh.count_error("wrong_body");
                    slot.wasted.fetch_add(body, Ordering::Relaxed);
                    true
                } else {
                    return Step::Done;
                }
            }
            Outcome::Response { status, body, .. } if status >= 500 => {
                slot.wasted.fetch_add(body, Ordering::Relaxed);
                true
            }
            Outcome::Response { .. } | Outcome::Redirect(_) => return Step::GiveUp,
            Outcome::Error { what, body } => {
                sh.count_error(what);
                if full {
                    slot.wasted.fetch_add(body, Ordering::Relaxed);
                }
                true
            }
        };
        if failed {
            slot.failures.fetch_add(1, Ordering::Relaxed);
            if attempt < a.attempts {
                sleep(a.retry).await;
            }
        }
    }
    Step::GiveUp
}

async fn client(sh: Arc<Shared>, id: usize, arrival: Duration) {
    let a = &sh.a;
    let slot = &sh.slots[id];
    slot.arrival_ms
        .store(arrival.as_millis() as u64, Ordering::Relaxed);
    sleep_until(sh.start + arrival).await;
    let ims = format!("If-Modified-Since: {}\r\n", a.ims);
    let check = format!("Range: bytes=0-511\r\n{ims}");
    // Bounded: the caller aborts at the deadline; this bounds the count too.
    for _round in 0..10_000 {
        match with_retries(&sh, id, &a.cvd_path, &check, false).await {
            Step::Done => {}
            Step::CoolDown(d) => {
                sleep(d).await;
                continue;
            }
            Step::GiveUp => break,
        }
        // The missing cdiff, MaxAttempts times without pause.
        let mut cooled = None;
        for _ in 0..a.attempts {
            if let Outcome::Response {
                status: 429,
                retry_after,
                ..
            } = sh.fetch(id, &a.cdiff_path, "", false).await
            {
                slot.s429.fetch_add(1, Ordering::Relaxed);
                cooled = Some(retry_after.map_or(NO_RETRY_AFTER, Duration::from_secs));
                break;
            }
        }
        if let Some(d) = cooled {
            sleep(d).await;
            continue;
        }
        if sh.first_full_ms.load(Ordering::Relaxed) == u64::MAX {
            let _ = sh.first_full_ms.compare_exchange(
                u64::MAX,
                sh.ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        match with_retries(&sh, id, &a.cvd_path, &ims, true).await {
            Step::Done => {
                slot.done_ms.store(sh.ms(), Ordering::Release);
                return;
            }
            Step::CoolDown(d) => sleep(d).await,
            Step::GiveUp => break,
        }
    }
    slot.gave_up.store(true, Ordering::Release);
}

/// Jain's index of `xs`: (Σx)² / (n·Σx²).
pub fn jain(xs: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    let s: f64 = xs.iter().sum();
    let q: f64 = xs.iter().map(|x| x * x).sum();
    (xs.len() >= 2 && q > 0.0).then(|| s * s / (n * q))
}

/// Runs the herd; returns the `RESULT` line.
pub async fn run(args: &[String]) -> Result<String, String> {
    let a = parse(args)?;
    let mut rng = SplitMix::new(a.seed);
    let arrivals: Vec<Duration> = (0..a.clients)
        .map(|_| a.arrive.mul_f64(rng.unit()))
        .collect();
    let servers = assign(&a.split, a.clients);
    let slots = servers
        .iter()
        .map(|s| Slot {
            done_ms: AtomicU64::new(u64::MAX),
            server: AtomicU64::new(*s as u64),
            ..Slot::default()
        })
        .collect();
    let start_unix_ms = unix_ms();
    let sh = Arc::new(Shared {
        a,
        slots,
        status: Default::default(),
        errors: Default::default(),
        full_bytes: AtomicU64::new(0),
        first_full_ms: AtomicU64::new(u64::MAX),
        start: Instant::now(),
    });
    let deadline = sh.start + sh.a.deadline;
    let cpu0 = self_cpu_ticks();

    let mut tasks = Vec::with_capacity(sh.a.clients);
    for (id, arr) in arrivals.iter().enumerate() {
        let sh = sh.clone();
        let arr = *arr;
        tasks.push(tokio::spawn(async move {
            let _ = timeout_at(deadline, client(sh, id, arr)).await;
        }));
    }

    // Sampler: once a second until every client is done or the deadline.
    let mut timeline = String::from("t_s\tbytes\tactive\tjain\tdone\n");
    let mut prev: Vec<(u64, u64)> = vec![(0, 0); sh.a.clients];
    let mut per_sec: Vec<u64> = Vec::new();
    let mut jains: Vec<f64> = Vec::new();
    let mut last_total = 0u64;
    let mut tick =
        tokio::time::interval_at(sh.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut sec = 0u64;
    loop {
        tick.tick().await;
        sec += 1;
        let total = sh.full_bytes.load(Ordering::Relaxed);
        let mut xs = Vec::new();
        let mut active = 0;
        let mut finished = 0;
        for (i, s) in sh.slots.iter().enumerate() {
            let g = s.generation.load(Ordering::Acquire);
            let b = s.bytes.load(Ordering::Relaxed);
            if g % 2 == 1 {
                active += 1;
                if prev[i].0 == g {
                    xs.push((b - prev[i].1) as f64);
                }
            }
            prev[i] = (g, b);
            if s.done_ms.load(Ordering::Acquire) != u64::MAX || s.gave_up.load(Ordering::Acquire) {
                finished += 1;
            }
        }
        let j = jain(&xs);
        if let Some(j) = j {
            jains.push(j);
        }
        per_sec.push(total - last_total);
        timeline.push_str(&format!(
            "{sec}\t{}\t{active}\t{}\t{finished}\n",
            total - last_total,
            j.map_or("-".into(), |j| format!("{j:.3}"))
        ));
        last_total = total;
        if finished == sh.a.clients || Instant::now() >= deadline {
            break;
        }
    }
    let end_ms = sh.ms();
    for t in &tasks {
        t.abort();
    }
    let end_unix_ms = unix_ms();

    let a = &sh.a;
    let mut clients_tsv = String::from(
        "id\tarrival_ms\tdone_ms\tgave_up\trequests\ts429\tfailures\twasted\tserver\tredirects\n",
    );
    let n_servers = a.addrs.len();
    let mut per_server = vec![(0u64, 0u64, 0u64); n_servers]; // clients, completed, redirects
    let (mut done, mut gave_up, mut requests, mut s429, mut failures, mut wasted, mut last_done) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (i, s) in sh.slots.iter().enumerate() {
        let d = s.done_ms.load(Ordering::Acquire);
        let g = s.gave_up.load(Ordering::Acquire);
        if d != u64::MAX {
            done += 1;
            last_done = last_done.max(d);
        }
        gave_up += u64::from(g);
        requests += s.requests.load(Ordering::Relaxed);
        s429 += s.s429.load(Ordering::Relaxed);
        failures += s.failures.load(Ordering::Relaxed);
        wasted += s.wasted.load(Ordering::Relaxed);
        let server = s.server.load(Ordering::Relaxed) as usize;
        let redirects = s.redirects.load(Ordering::Relaxed);
        per_server[server].0 += 1;
        per_server[server].1 += u64::from(d != u64::MAX);
        per_server[server].2 += redirects;
        clients_tsv.push_str(&format!(
            "{i}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{server}\t{redirects}\n",
            s.arrival_ms.load(Ordering::Relaxed),
            if d == u64::MAX {
                "-".into()
            } else {
                d.to_string()
            },
            u8::from(g),
            s.requests.load(Ordering::Relaxed),
            s.s429.load(Ordering::Relaxed),
            s.failures.load(Ordering::Relaxed),
            s.wasted.load(Ordering::Relaxed)
        ));
    }
    std::fs::write(format!("{}.timeline.tsv", a.out_prefix), timeline)
        .map_err(|e| e.to_string())?;
    std::fs::write(format!("{}.clients.tsv", a.out_prefix), clients_tsv)
        .map_err(|e| e.to_string())?;

    // Busy period: first full-download request until the last client held
    // the file (or the run ended, if some never did).
    let first = sh.first_full_ms.load(Ordering::Relaxed);
    let busy_end = if done == a.clients as u64 {
        last_done
    } else {
        end_ms
    };
    let busy_ms = busy_end.saturating_sub(first.min(busy_end)).max(1);
    let full_bytes = sh.full_bytes.load(Ordering::Relaxed);
    let busy_mean_bps = full_bytes as f64 * 8.0 / (busy_ms as f64 / 1000.0);
    let mut sorted = per_sec.clone();
    sorted.sort_unstable();
    let peak = sorted.last().copied().unwrap_or(0);
    let p99 = sorted
        .get(sorted.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    let jain_mean = if jains.is_empty() {
        f64::NAN
    } else {
        jains.iter().sum::<f64>() / jains.len() as f64
    };
    let mut js = jains.clone();
    js.sort_by(f64::total_cmp);
    let jain_p10 = js
        .get(js.len().saturating_sub(1) / 10)
        .copied()
        .unwrap_or(f64::NAN);

    let mut out = format!(
        "RESULT mode=herd clients={} completed={done} gave_up={gave_up} incomplete={} requests={requests} s429={s429} \
         failures={failures} wasted_bytes={wasted} full_bytes={full_bytes} first_full_ms={} last_done_ms={} \
         all_done_s={} busy_s={:.1} busy_mean_mbit={:.2} peak_1s_mbit={:.2} p99_1s_mbit={:.2} jain_mean={jain_mean:.3} \
         jain_p10={jain_p10:.3} jain_secs={} start_unix_ms={start_unix_ms} end_unix_ms={end_unix_ms} cpu_ticks={}",
        a.clients,
        a.clients as u64 - done - gave_up,
        if first == u64::MAX { 0 } else { first },
        last_done,
        if done == a.clients as u64 {
            format!("{:.1}", last_done as f64 / 1000.0)
        } else {
            "never".into()
        },
        busy_ms as f64 / 1000.0,
        busy_mean_bps / 1e6,
        peak as f64 * 8.0 / 1e6,
        p99 as f64 * 8.0 / 1e6,
        jains.len(),
        self_cpu_ticks().saturating_sub(cpu0),
    );
    out.push_str(&format!(
        " redirects={}",
        per_server.iter().map(|p| p.2).sum::<u64>()
    ));
    if n_servers > 1 {
        for (i, (c, d, r)) in per_server.iter().enumerate() {
            out.push_str(&format!(
                " server{i}_clients={c} server{i}_completed={d} server{i}_redirects={r}"
            ));
        }
    }
    if let Ok(m) = sh.status.lock() {
        for (k, v) in m.iter() {
            out.push_str(&format!(" status_{k}={v}"));
        }
    }
    if let Ok(m) = sh.errors.lock() {
        for (k, v) in m.iter() {
            out.push_str(&format!(" err_{k}={v}"));
        }
    }
    Ok(out)
}
