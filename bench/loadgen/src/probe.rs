//! `probe`: a website visitor next to the mirror, for `bench/incident.sh`.
//!
//! Every `--interval-ms` (100) it requests a small page on a new connection
//! (`Connection: close`), whatever the previous request is doing, and writes
//! one line per request to `--out`: start time (Unix ms), latency (ms, until
//! the whole body arrived), `ok` (1/0), status or error. A request that has
//! not finished within `--timeout-ms` (2000) is a failure. Runs for
//! `--duration-secs` or until killed (lines are written as they complete).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use crate::herd::{connect, read_head, target_allowed, unix_ms};

const MAX_DURATION: Duration = Duration::from_secs(3600);

struct ProbeArgs {
    addr: SocketAddr,
    host: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    duration: Duration,
    out: String,
}

fn parse(args: &[String]) -> Result<ProbeArgs, String> {
    let mut a = ProbeArgs {
        addr: "127.0.0.1:80".parse().map_err(|e| format!("{e}"))?,
        host: "localhost".into(),
        path: "/".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(2000),
        duration: Duration::from_secs(60),
        out: String::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?.clone();
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = val.parse().map_err(|e| format!("--addr: {e}"))?,
            "--host" => a.host = val,
            "--path" => a.path = val,
            "--interval-ms" => a.interval = Duration::from_millis(num(&val)?),
            "--timeout-ms" => a.timeout = Duration::from_millis(num(&val)?),
            "--duration-secs" => a.duration = Duration::from_secs(num(&val)?),
            "--out" => a.out = val,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !target_allowed(a.addr.ip()) {
        return Err(
            "only loopback addresses may be used (or any, from an isolated network namespace without a default route)"
                .into(),
        );
    }
    if a.out.is_empty() || a.interval.is_zero() || a.timeout.is_zero() || a.duration > MAX_DURATION
    {
        return Err(
            "--out is required; --interval-ms, --timeout-ms > 0; --duration-secs <= 3600".into(),
        );
    }
    Ok(a)
}

async fn one(a: &ProbeArgs, req: &[u8]) -> Result<u16, &'static str> {
    let mut s = connect(a.addr, None).await.map_err(|_| "connect")?;
    s.write_all(req).await.map_err(|_| "write")?;
    let mut buf = vec![0u8; 16 * 1024];
    let (head, have) = read_head(&mut s, &mut buf, a.timeout)
        .await
        .map_err(|_| "head")?;
    let mut body = (have - head.body_start) as u64;
    let want = head.content_length.ok_or("no_length")?;
    while body < want {
        let n = s.read(&mut buf).await.map_err(|_| "read")?;
        if n == 0 {
            return Err("short");
        }
        body += n as u64;
    }
    Ok(head.status)
}

/// Runs the probe; returns the `RESULT` line.
pub async fn run(args: &[String]) -> Result<String, String> {
    let a = Arc::new(parse(args)?);
    let req: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: incident-probe\r\nConnection: close\r\n\r\n",
        a.path, a.host
    )
    .into_bytes()
    .into();
    let file = std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out))?;
    let file = Arc::new(std::sync::Mutex::new(file));
    let start = Instant::now();
    let mut tick = tokio::time::interval(a.interval);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while start.elapsed() < a.duration {
        tick.tick().await;
        sent += 1;
        let (a, req, file) = (a.clone(), req.clone(), file.clone());
        tasks.spawn(async move {
            let t_unix = unix_ms();
            let t0 = Instant::now();
            let r = timeout(a.timeout, one(&a, &req)).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let line = match r {
                Ok(Ok(s)) if (200..300).contains(&s) => format!("{t_unix}\t{ms:.2}\t1\t{s}\n"),
                Ok(Ok(s)) => format!("{t_unix}\t{ms:.2}\t0\t{s}\n"),
                Ok(Err(e)) => format!("{t_unix}\t{ms:.2}\t0\t{e}\n"),
                Err(_) => format!("{t_unix}\t{ms:.2}\t0\ttimeout\n"),
            };
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(format!("RESULT mode=probe sent={sent}"))
}
