//! `cvdmirror demo`: one command that shows a newcomer what the mirror does
//! when upstream stumbles. It builds a small test-signed upstream on
//! loopback, starts a mirror that syncs from it (link cap, herd gate, admin
//! API with the live status page), and plays "the failed update": upstream
//! publishes a version without the cdiff before it, simulated freshclam
//! clients fall back to the whole CVD, the herd gate refuses the excess with
//! `429` + `Retry-After`, the self-healing sync notices, the missing cdiff
//! appears and the herd subsides. Every phase is narrated on stdout; at the
//! end a summary is printed and the temporary directories are removed.
//! The servers' own log goes to a file the narration names (see
//! [`log`]), so it does not interleave with the story.
//!
//! Nothing here is for production: the files are signed with the public
//! test keys of [`crate::cvd::testkeys`], which no real client trusts.

mod clients;
pub mod log;
mod mirror;
mod narrate;
mod play;
mod upstream;
mod workdir;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::rate::{Rate, human_bytes};
use log::DemoLog;
use mirror::{Mirror, MirrorSettings};
use narrate::Narrator;
use upstream::Upstream;
use workdir::WorkDir;

/// The `daily` version upstream starts at.
const FIRST_VERSION: u32 = 27_480;
/// The admin port tried first.
const PREFERRED_ADMIN_PORT: u16 = 8081;

/// The default link cap, 40 Mbit/s.
const DEFAULT_LINK_RATE: Rate = match Rate::from_bits_per_sec(40_000_000) {
    Some(rate) => rate,
    None => panic!("40 Mbit/s is a rate"),
};
/// The default herd gate minimum, 8 Mbit/s.
const DEFAULT_BULK_MIN_RATE: Rate = match Rate::from_bits_per_sec(8_000_000) {
    Some(rate) => rate,
    None => panic!("8 Mbit/s is a rate"),
};

/// Flags of `cvdmirror demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the scenario runs once the mirror has its first copy
    /// (Ctrl-C stops earlier, cleanly).
    #[arg(long, default_value = "75s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Simulated freshclam clients in the herd.
    #[arg(long, default_value_t = 60)]
    pub clients: u32,

    /// Size of the generated `daily.cvd`, in bytes (suffixes k, M allowed).
    #[arg(long, default_value = "3M", value_parser = parse_size)]
    pub cvd_size: u64,

    /// The mirror's link cap.
    #[arg(long, default_value = "40Mbit")]
    pub link_rate: Rate,

    /// The herd gate: each admitted whole-CVD download keeps at least this.
    #[arg(long, default_value = "8Mbit")]
    pub bulk_min_rate: Rate,

    /// Shortest `Retry-After` the herd gate hands out.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_after_min: Duration,

    /// Longest `Retry-After` the herd gate hands out.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub retry_after_max: Duration,

    /// Admin API (status page) address; default 127.0.0.1:8081, or any free
    /// port if that is taken. Loopback only.
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,

    /// Where to create the demo's temporary directory (default: the system's).
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,

    /// Keep the temporary directory (upstream and mirror files) at the end.
    #[arg(long)]
    pub keep: bool,

    /// Where the servers' log goes (INFO and up, or what RUST_LOG says;
    /// errors are also shown on stderr). Default: beside the temporary
    /// directory, `cvdmirror-demo-….log`; kept after the demo.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(75),
            clients: 60,
            cvd_size: 3_000_000,
            link_rate: DEFAULT_LINK_RATE,
            bulk_min_rate: DEFAULT_BULK_MIN_RATE,
            retry_after_min: Duration::from_secs(5),
            retry_after_max: Duration::from_secs(20),
            admin_listen: None,
            tmp_dir: None,
            keep: false,
            log_file: None,
        }
    }
}

/// `1500000`, `300k`, `3M` (decimal multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1_000),
        Some((i, 'm' | 'M')) => (&text[..i], 1_000_000),
        _ => (text, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 3M, 300k, 1500000)"))?;
    let size = n.saturating_mul(multiplier);
    if !(10_000..=200_000_000).contains(&size) {
        return Err("the CVD size must be between 10k and 200M".into());
    }
    Ok(size)
}

/// Runs the demo to the end (or Ctrl-C, or until this future is dropped)
/// and cleans up.
///
/// The demo runs on a runtime of its own, on threads that log to the
/// demo's log file instead of the terminal (see [`log`]); this future only
/// waits for it.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    check_loopback(args.admin_listen)?;
    if args.retry_after_min > args.retry_after_max {
        anyhow::bail!("--retry-after-min must not exceed --retry-after-max");
    }
    let work = WorkDir::create(args.tmp_dir.as_deref(), args.keep)?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| work.path.with_extension("log"));
    let log = DemoLog::create(&log_path)?;
    let failed = format!("the demo failed (its log: {})", log_path.display());
    let stop = CancellationToken::new();
    let _stop_when_dropped = stop.clone().drop_guard();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cvdmirror-demo".into())
        .spawn(move || {
            let outcome = log.scope(|| {
                let runtime = log.runtime().context("cannot start the demo's runtime")?;
                let outcome = runtime.block_on(demo(&args, work, &log, &stop));
                runtime.shutdown_timeout(Duration::from_secs(2));
                outcome
            });
            let _ = done.send(outcome);
        })
        .context("cannot start the demo's thread")?;
    result
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("it stopped unexpectedly")))
        .context(failed)
}

/// The demo on its own runtime: servers up, the scenario, servers down.
async fn demo(
    args: &DemoArgs,
    work: WorkDir,
    log: &DemoLog,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let say = Narrator::new();
    say.line(&format!(
        "cvdmirror demo: building a test upstream in {} (daily {FIRST_VERSION}, {} per CVD, signed with test keys)",
        work.path.display(),
        human_bytes(args.cvd_size)
    ));
    let upstream =
        Upstream::start(&work.path.join("upstream"), FIRST_VERSION, args.cvd_size).await?;
    let mirror_root = work.path.join("mirror");
    std::fs::create_dir_all(&mirror_root)
        .with_context(|| format!("cannot create {}", mirror_root.display()))?;
    let admin = match args.admin_listen {
        Some(addr) => vec![addr],
        None => vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, PREFERRED_ADMIN_PORT)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ],
    };
    let mirror = Mirror::start(MirrorSettings {
        root: mirror_root,
        config_file: work.path.join("mirror.toml"),
        upstream: upstream.url.clone(),
        dns: (upstream::DNS_NAME.to_owned(), upstream.nameserver()),
        link_rate: args.link_rate,
        bulk_min_rate: args.bulk_min_rate,
        retry_after: (args.retry_after_min, args.retry_after_max),
        // Anything near the CVD's size is a whole-CVD download; cdiffs are tiny.
        bulk_threshold: (upstream.cvd_len() / 2).max(1),
        admin,
    })
    .await?;

    let result = scenario(args, &say, &upstream, &mirror, log, stop).await;
    mirror.stop().await;
    upstream.stop().await;
    if args.keep {
        say.raw(&format!("  kept            {}", work.path.display()));
    }
    say.raw(&format!("  log             {}", log.path().display()));
    drop(work);
    result
}

/// The admin API serves on loopback only: the demo is not a service.
fn check_loopback(addr: Option<SocketAddr>) -> anyhow::Result<()> {
    match addr {
        Some(addr) if !addr.ip().is_loopback() => {
            anyhow::bail!(
                "--admin-listen must be a loopback address (127.0.0.1 or ::1), not {addr}"
            )
        }
        _ => Ok(()),
    }
}

async fn scenario(
    args: &DemoArgs,
    say: &Narrator,
    upstream: &Upstream,
    mirror: &Mirror,
    log: &DemoLog,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let stop = stop.child_token();
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        })
    };
    let result = play::play(args, say, upstream, mirror, log, &stop).await;
    ctrl_c.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("3M"), Ok(3_000_000));
        assert_eq!(parse_size("300k"), Ok(300_000));
        assert_eq!(parse_size("150000"), Ok(150_000));
        assert!(parse_size("1k").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn admin_must_be_loopback() {
        assert!(check_loopback(Some("0.0.0.0:8081".parse().unwrap())).is_err());
        assert!(check_loopback(Some("[::1]:8081".parse().unwrap())).is_ok());
        assert!(check_loopback(None).is_ok());
    }
}
