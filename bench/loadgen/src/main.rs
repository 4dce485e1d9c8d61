//! Load generator for `bench/serve.sh`, for the two patterns wrk cannot do,
//! and for `bench/incident.sh` (`herd`, `probe` and `steal`, see their
//! modules).
//!
//! - `close`: one TCP connection per request, like freshclam (`Connection:
//!   close`). wrk does this too; this mode is the cross-check that the number
//!   really counts new connections.
//! - `slow`: thousands of connections that each download a large file a few
//!   KB per second through a small receive buffer, so the server's send path
//!   backs up, while the server's resident memory is sampled. This is the
//!   herd that a lagging mirror creates (every client falls back from cdiffs
//!   to the 60 MB `daily.cvd`), and what it costs the server per connection.
//!
//! Only loopback targets are accepted, every loop is bounded in time and
//! count, and every connection is closed with a reset so a run leaves no
//! TIME_WAIT behind for the next one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::{Instant, sleep, timeout};

mod herd;
mod probe;
mod steal;

const USAGE: &str = "\
usage: cvdmirror-loadgen close --addr IP:PORT --path /P [--header 'K: V']... \\
           [--concurrency 16] [--duration 10] [--source IP,IP..]
       cvdmirror-loadgen herd --addr IP:PORT --size BYTES --out PREFIX [--clients 300] \\
           [--arrive-secs 60] [--deadline-secs 600] [--ims DATE] [--seed 1] .. (see herd.rs)
       cvdmirror-loadgen herd --addrs IP:PORT,IP:PORT.. [--split 50,30,20] .. (several servers)
       cvdmirror-loadgen probe --addr IP:PORT --out FILE [--host H] [--path /] \\
           [--interval-ms 100] [--timeout-ms 2000] [--duration-secs 60]
       cvdmirror-loadgen steal --out FILE [--interval-ms 5] [--duration-secs 3600]
       cvdmirror-loadgen slow --addr IP:PORT --path /P --conns 10000 \\
           [--source 127.0.0.1,127.0.0.2,..] [--rcvbuf 4096] [--read-chunk 4096] \\
           [--interval-ms 1000] [--connect-parallel 256] [--ramp-secs 60] \\
           [--settle-secs 5] [--hold-secs 10] [--pids PID,PID..] [--header 'K: V']...

Targets must be loopback addresses (herd and probe: or any address, from an
isolated network namespace without a default route). Prints one `RESULT key=value ...` line.";

/// Hard cap on any run, whatever the arguments say.
const MAX_RUN: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNS: usize = 60_000;

struct Args {
    mode: String,
    addr: SocketAddr,
    path: String,
    headers: Vec<String>,
    sources: Vec<IpAddr>,
    concurrency: usize,
    duration: Duration,
    conns: usize,
    rcvbuf: u32,
    read_chunk: usize,
    interval: Duration,
    connect_parallel: usize,
    ramp: Duration,
    settle: Duration,
    hold: Duration,
    pids: Vec<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing mode")?;
    if mode != "close" && mode != "slow" {
        return Err(format!("unknown mode {mode}"));
    }
    let mut a = Args {
        mode,
        addr: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        path: String::new(),
        headers: Vec::new(),
        sources: Vec::new(),
        concurrency: 16,
        duration: Duration::from_secs(10),
        conns: 1000,
        rcvbuf: 4096,
        read_chunk: 4096,
        interval: Duration::from_millis(1000),
        connect_parallel: 256,
        ramp: Duration::from_secs(60),
        settle: Duration::from_secs(5),
        hold: Duration::from_secs(10),
        pids: Vec::new(),
    };
    let mut have_addr = false;
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => {
                a.addr = val.parse().map_err(|e| format!("--addr: {e}"))?;
                have_addr = true;
            }
            "--path" => a.path = val,
            "--header" => a.headers.push(val),
            "--source" => {
                for s in val.split(',').filter(|s| !s.is_empty()) {
                    a.sources
                        .push(s.parse().map_err(|e| format!("--source {s}: {e}"))?);
                }
            }
            "--concurrency" => a.concurrency = num(&val)? as usize,
            "--duration" => a.duration = Duration::from_secs(num(&val)?),
            "--conns" => a.conns = num(&val)? as usize,
            "--rcvbuf" => a.rcvbuf = num(&val)? as u32,
            "--read-chunk" => a.read_chunk = num(&val)? as usize,
            "--interval-ms" => a.interval = Duration::from_millis(num(&val)?),
            "--connect-parallel" => a.connect_parallel = num(&val)? as usize,
            "--ramp-secs" => a.ramp = Duration::from_secs(num(&val)?),
            "--settle-secs" => a.settle = Duration::from_secs(num(&val)?),
            "--hold-secs" => a.hold = Duration::from_secs(num(&val)?),
            "--pids" => {
                for p in val.split(',').filter(|s| !s.is_empty()) {
                    a.pids
                        .push(p.parse().map_err(|e| format!("--pids {p}: {e}"))?);
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !have_addr || !a.path.starts_with('/') {
        return Err("--addr and --path (starting with /) are required".into());
    }
    if !a.addr.ip().is_loopback() || a.sources.iter().any(|s| !s.is_loopback()) {
        return Err("only loopback addresses may be used".into());
    }
    if a.sources.is_empty() {
        a.sources.push(a.addr.ip());
    }
    if a.conns == 0 || a.conns > MAX_CONNS || a.concurrency == 0 || a.connect_parallel == 0 {
        return Err(format!(
            "--conns must be 1..={MAX_CONNS}; --concurrency, --connect-parallel > 0"
        ));
    }
    if a.read_chunk == 0 || a.interval.is_zero() {
        return Err("--read-chunk and --interval-ms must be > 0".into());
    }
    Ok(a)
}

fn request(a: &Args, close: bool) -> Vec<u8> {
    let mut r = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", a.path, a.addr);
    for h in &a.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

async fn connect(a: &Args, source: IpAddr, rcvbuf: Option<u32>) -> std::io::Result<TcpStream> {
    let sock = if a.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(b) = rcvbuf {
        // Before connect(), so the advertised window scale matches the small buffer.
        sock.set_recv_buffer_size(b)?;
    }
    if source != a.addr.ip() {
        sock.bind(SocketAddr::new(source, 0))?;
    }
    let s = timeout(CONNECT_TIMEOUT, sock.connect(a.addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    // Reset on drop: no TIME_WAIT left behind to starve the next run of ports.
    s.set_zero_linger()?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads until the end of the response head; returns the status code and how
/// many bytes were read (head plus any body bytes that came with it).
async fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<(u16, usize)> {
    let mut have = 0;
    loop {
        if have == buf.len() {
            return Err(std::io::Error::other("response head too large"));
        }
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before head",
            ));
        }
        have += n;
        if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
            let line = buf[..have]
                .split(|&c| c == b'\n')
                .next()
                .unwrap_or_default();
            let code = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Ok((code, have));
        }
    }
}

#[derive(Default)]
struct CloseStats {
    requests: u64,
    bytes: u64,
    errors: u64,
    status: BTreeMap<u16, u64>,
}

async fn run_close(a: Arc<Args>) -> Result<String, String> {
    let req = Arc::new(request(&a, true));
    let stats = Arc::new(Mutex::new(CloseStats::default()));
    let start = Instant::now();
    let deadline = start + a.duration.min(MAX_RUN);
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (a, req, stats) = (a.clone(), req.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = CloseStats::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut i = w;
            while Instant::now() < deadline {
                let src = a.sources[i % a.sources.len()];
                i += 1;
                let one = async {
                    let mut s = connect(&a, src, None).await?;
                    s.write_all(&req).await?;
                    let (code, mut n) = read_head(&mut s, &mut buf).await?;
                    loop {
                        let k = s.read(&mut buf).await?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    Ok::<_, std::io::Error>((code, n))
                };
                match timeout(RESPONSE_TIMEOUT, one).await {
                    Ok(Ok((code, n))) => {
                        local.requests += 1;
                        local.bytes += n as u64;
                        *local.status.entry(code).or_default() += 1;
                    }
                    _ => {
                        local.errors += 1;
                        sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let mut g = stats.lock().await;
            g.requests += local.requests;
            g.bytes += local.bytes;
            g.errors += local.errors;
            for (k, v) in local.status {
                *g.status.entry(k).or_default() += v;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let secs = start.elapsed().as_secs_f64();
    let g = stats.lock().await;
    let mut out = format!(
        "RESULT mode=close requests={} secs={secs:.2} rps={:.1} bytes={} errors={}",
        g.requests,
        g.requests as f64 / secs,
        g.bytes,
        g.errors
    );
    for (k, v) in &g.status {
        out.push_str(&format!(" status_{k}={v}"));
    }
    Ok(out)
}

/// Resident and proportional set size (kB) summed over `pids`.
fn memory_kb(pids: &[u32]) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (mut rss, mut pss) = (0, 0);
    for p in pids {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            rss += field(&t, "VmRSS:");
        }
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            pss += field(&t, "Pss:");
        }
    }
    (rss, pss)
}

/// Kernel TCP buffer memory in kB (all sockets on the machine), for context.
fn kernel_tcp_kb() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("TCP:"))?.to_owned();
            let mut w = l.split_whitespace();
            while let Some(k) = w.next() {
                if k == "mem" {
                    return w.next()?.parse::<u64>().ok();
                }
            }
            None
        })
        .map_or(0, |pages| pages * 4)
}

#[derive(Default)]
struct SlowStats {
    established: AtomicUsize,
    failed: AtomicUsize,
    status_ok: AtomicUsize,
    ended_early: AtomicUsize,
    bytes: AtomicU64,
    /// Status codes other than 200, with counts.
    other_status: std::sync::Mutex<BTreeMap<u16, u64>>,
}

async fn run_slow(a: Arc<Args>) -> Result<String, String> {
    let req = Arc::new(request(&a, false));
    let stats = Arc::new(SlowStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Semaphore::new(a.connect_parallel));
    let hard_end = Instant::now() + MAX_RUN;

    let (rss0, pss0) = memory_kb(&a.pids);
    let ktcp0 = kernel_tcp_kb();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let (a, req, stats, stop, gate) = (
            a.clone(),
            req.clone(),
            stats.clone(),
            stop.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let src = a.sources[i % a.sources.len()];
            let opened = async {
                let _permit = gate.acquire().await.map_err(std::io::Error::other)?;
                let mut s = connect(&a, src, Some(a.rcvbuf)).await?;
                s.write_all(&req).await?;
                let mut head = vec![0u8; 8192];
                let (code, n) = timeout(RESPONSE_TIMEOUT, read_head(&mut s, &mut head))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "head timeout")
                    })??;
                Ok::<_, std::io::Error>((s, code, n))
            };
            let (mut s, code, n) = match opened.await {
                Ok(v) => v,
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            stats.established.fetch_add(1, Ordering::Relaxed);
            if code == 200 {
                stats.status_ok.fetch_add(1, Ordering::Relaxed);
            } else if let Ok(mut m) = stats.other_status.lock() {
                *m.entry(code).or_default() += 1;
            }
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            // Spread the readers over the interval so wake-ups are not in lockstep.
            let nanos = a.interval.as_nanos() as u64;
            sleep(Duration::from_nanos(
                (i as u64).wrapping_mul(2_654_435_761) % nanos.max(1),
            ))
            .await;
            let mut buf = vec![0u8; a.read_chunk];
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_end {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        stats.ended_early.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(k) => {
                        stats.bytes.fetch_add(k as u64, Ordering::Relaxed);
                    }
                }
                sleep(a.interval).await;
            }
        }));
    }

    // Wait for every connection to be established or to have failed.
    let ramp_end = Instant::now() + a.ramp;
    loop {
        let done = stats.established.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed);
        if done >= a.conns || Instant::now() >= ramp_end {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    let ramp_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} established, {} failed after {ramp_secs:.1}s; settling {}s, sampling {}s",
        stats.established.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        a.settle.as_secs(),
        a.hold.as_secs()
    );
    sleep(a.settle).await;
    let bytes_hold0 = stats.bytes.load(Ordering::Relaxed);
    let (mut rss_peak, mut pss_peak, mut ktcp_peak) = (0, 0, 0);
    let (mut rss_last, mut pss_last) = (0, 0);
    let hold_start = Instant::now();
    let samples = a.hold.as_secs().max(1);
    for _ in 0..samples {
        let (r, p) = memory_kb(&a.pids);
        (rss_last, pss_last) = (r, p);
        rss_peak = rss_peak.max(r);
        pss_peak = pss_peak.max(p);
        ktcp_peak = ktcp_peak.max(kernel_tcp_kb());
        sleep(Duration::from_secs(1)).await;
    }
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let hold_bytes = stats.bytes.load(Ordering::Relaxed) - bytes_hold0;
    let est = stats.established.load(Ordering::Relaxed);
    // Connections still open at the end of the hold (not closed by the server).
    let alive = est - stats.ended_early.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let others: String = stats
        .other_status
        .lock()
        .map(|m| m.iter().map(|(k, v)| format!(" status_{k}={v}")).collect())
        .unwrap_or_default();
    let per_conn = |peak: u64, base: u64| {
        if alive == 0 {
            0.0
        } else {
            peak.saturating_sub(base) as f64 / alive as f64
        }
    };
    Ok(format!(
        "RESULT mode=slow conns={} established={est} alive={alive} failed={} status_200={} \
         ramp_secs={ramp_secs:.1} rss_before_kb={rss0} rss_peak_kb={rss_peak} rss_last_kb={rss_last} \
         pss_before_kb={pss0} pss_peak_kb={pss_peak} pss_last_kb={pss_last} \
         rss_per_conn_kb={:.2} pss_per_conn_kb={:.2} kernel_tcp_before_kb={ktcp0} kernel_tcp_peak_kb={ktcp_peak} \
         hold_mb_per_s={:.2} total_bytes={}{others}",
        a.conns,
        stats.failed.load(Ordering::Relaxed),
        stats.status_ok.load(Ordering::Relaxed),
        per_conn(rss_peak, rss0),
        per_conn(pss_peak, pss0),
        hold_bytes as f64 / hold_secs / 1e6,
        stats.bytes.load(Ordering::Relaxed),
    ))
}

fn main() -> ExitCode {
    // The incident bench's modes (herd.rs, probe.rs) parse their own flags
    // and run on one thread: the server under test needs the cores.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(mode @ ("herd" | "probe")) = argv.first().map(String::as_str) {
        return incident_mode(mode, &argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("steal") {
        return match steal::run(&argv[1..]) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cvdmirror-loadgen steal: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("cvdmirror-loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cvdmirror-loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let work = async {
            if args.mode == "close" {
                run_close(args.clone()).await
            } else {
                run_slow(args.clone()).await
            }
        };
        timeout(MAX_RUN + Duration::from_secs(30), work)
            .await
            .unwrap_or_else(|_| Err("run exceeded its time cap".into()))
    });
    // Do not wait for aborted tasks' sockets: exiting closes (resets) them.
    rt.shutdown_background();
    match res {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvdmirror-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `herd` or `probe` on a single-threaded runtime.
fn incident_mode(mode: &str, args: &[String]) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cvdmirror-loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        if mode == "herd" {
            herd::run(args).await
        } else {
            probe::run(args).await
        }
    });
    rt.shutdown_background();
    match res {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvdmirror-loadgen {mode}: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
