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
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::shape::Rate;
use clients::{Client, Stats};
use log::DemoLog;
use mirror::{Mirror, MirrorSettings};
use upstream::Upstream;

/// The `daily` version upstream starts at.
const FIRST_VERSION: u32 = 27_480;
/// Clients doing routine header checks throughout.
const ROUTINE_CLIENTS: u32 = 4;
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
    let result = play(args, say, upstream, mirror, log, &stop).await;
    ctrl_c.abort();
    result
}

async fn play(
    args: &DemoArgs,
    say: &Narrator,
    upstream: &Upstream,
    mirror: &Mirror,
    log: &DemoLog,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let v = upstream.first;
    say.blank();
    say.raw(&format!(
        "  Status page: http://{}/ — open it now",
        mirror.admin
    ));
    say.raw(&format!(
        "  Mirror:      {}/  (what freshclam would use as its PrivateMirror)",
        mirror.url
    ));
    say.raw(&format!(
        "  Upstream:    {}/  (DNS TXT {} at {})",
        upstream.url,
        upstream::DNS_NAME,
        upstream.nameserver()
    ));
    say.raw(&format!(
        "  Log:         {}  (the servers' own log lines go there, not here)",
        log.path().display()
    ));
    say.raw(&format!(
        "  Link cap {}; herd gate admits a whole-CVD download only while each keeps ≥ {}; refusals get 429 with Retry-After {}–{} s.",
        bits(args.link_rate.bytes_per_sec_f64()),
        bits(args.bulk_min_rate.bytes_per_sec_f64()),
        args.retry_after_min.as_secs(),
        args.retry_after_max.as_secs()
    ));
    say.raw(&format!(
        "  What happens: first sync of daily {v}; a quiet spell; upstream publishes daily {} without daily-{}.cdiff; {} clients fall back to the whole CVD; the gate holds the link; the cdiff appears; the herd subsides. About {} s, Ctrl-C stops early.",
        v + 2,
        v + 1,
        args.clients,
        args.duration.as_secs()
    ));
    say.blank();

    let watchers = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_sync(
        mirror.status.clone(),
        say.clone(),
        watchers.clone(),
    ));

    say.line(&format!(
        "mirror is empty; first sync pass is fetching daily {v} from upstream"
    ));
    let first_sync = async {
        let mut status = mirror.status.clone();
        status
            .wait_for(|s| s.published.get("daily") == Some(&v))
            .await
            .map(|_| ())
    };
    tokio::select! {
        () = stop.cancelled() => {
            say.line("stopped before the first sync finished");
            watchers.cancel();
            tasks.shutdown().await;
            return Ok(());
        }
        done = tokio::time::timeout(Duration::from_secs(120), first_sync) => {
            done.context("the first sync did not publish within 2 minutes")?
                .context("the sync engine stopped")?;
        }
    }

    let stats = Arc::new(Stats::default());
    let clients = CancellationToken::new();
    let start = Instant::now();
    let at = |fraction: f64| start + args.duration.mul_f64(fraction);
    let herd_started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tasks.spawn(watch_herd(
        MirrorView {
            control: Arc::clone(&mirror.control),
            observer: Arc::clone(&mirror.observer),
            heal: Arc::clone(&mirror.trigger),
        },
        Arc::clone(&stats),
        Arc::clone(&herd_started),
        v,
        say.clone(),
        watchers.clone(),
    ));

    // Quiet phase: routine header checks, all through the demo.
    say.line(&format!(
        "quiet: {ROUTINE_CLIENTS} up-to-date clients check the daily.cvd header now and then"
    ));
    let mut client_tasks = JoinSet::new();
    for n in 0..ROUTINE_CLIENTS {
        let client = Client::new(&mirror.url, 1, n)?;
        let (stats, clients) = (Arc::clone(&stats), clients.clone());
        let offset = Duration::from_millis(700 * u64::from(n));
        client_tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            while !clients.is_cancelled() {
                client.header_check(&stats, &clients).await;
                tokio::select! {
                    () = clients.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(3)) => {}
                }
            }
        });
    }

    let phases = async {
        sleep_until(at(0.15)).await;
        upstream.publish_without_middle_cdiff()?;
        say.line(&format!(
            "upstream published daily {} without daily-{}.cdiff — clients will fall back to the whole CVD",
            v + 2,
            v + 1
        ));
        say.line("the mirror's scheduled pass runs (as every interval)");
        mirror.trigger.push();

        // The herd: clients at v learn v+2 from DNS and arrive over 30 % of the run.
        let herd_window = args.duration.mul_f64(0.30);
        for n in 0..args.clients {
            let arrival =
                at(0.15) + herd_window.mul_f64(f64::from(n) / f64::from(args.clients.max(1)));
            sleep_until(arrival).await;
            herd_started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let client = Client::new(&mirror.url, 2, n)?;
            let (stats, clients) = (Arc::clone(&stats), clients.clone());
            client_tasks.spawn(async move { client.update(v, v + 2, &stats, &clients).await });
        }
        say.line(&format!("all {} herd clients have arrived", args.clients));

        sleep_until(at(0.55)).await;
        upstream.publish_middle_cdiff()?;
        say.line(&format!(
            "upstream finally publishes daily-{}.cdiff; the mirror's retry picks it up (as after POST /sync)",
            v + 1
        ));
        mirror.trigger.push();

        // Latecomers find the cdiffs and never touch the CVD.
        let late = (args.clients / 5).max(2);
        sleep_until(at(0.62)).await;
        say.line(&format!(
            "{late} more clients at daily {v} arrive: they should patch with cdiffs, no whole CVD"
        ));
        for n in 0..late {
            sleep_until(at(0.62) + args.duration.mul_f64(0.2 * f64::from(n) / f64::from(late)))
                .await;
            let client = Client::new(&mirror.url, 3, n)?;
            let (stats, clients) = (Arc::clone(&stats), clients.clone());
            client_tasks.spawn(async move { client.update(v, v + 2, &stats, &clients).await });
        }
        sleep_until(at(1.0)).await;
        anyhow::Ok(())
    };
    let stopped_early = tokio::select! {
        () = stop.cancelled() => true,
        done = phases => { done?; false }
    };
    if stopped_early {
        say.line("Ctrl-C: stopping the clients and the servers");
    } else {
        say.line("time is up: stopping the clients and the servers");
    }
    clients.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while client_tasks.join_next().await.is_some() {}
    })
    .await;
    client_tasks.abort_all();
    watchers.cancel();
    tasks.shutdown().await;
    summary(say, &stats, mirror, upstream, start.elapsed());
    Ok(())
}

/// What the herd watcher reads.
struct MirrorView {
    control: Arc<crate::control::Control>,
    observer: Arc<crate::observe::Observer>,
    heal: Arc<crate::sync::schedule::Trigger>,
}

/// Narrates the sync engine: passes starting, publishing, failing.
async fn watch_sync(
    mut status: tokio::sync::watch::Receiver<crate::sync::SyncStatus>,
    say: Narrator,
    stop: CancellationToken,
) {
    let mut last = status.borrow().clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
        let now = status.borrow_and_update().clone();
        if now.running && !last.running {
            say.line("sync: pass started");
        }
        if now.last_pass != last.last_pass
            && let Some(pass) = &now.last_pass
        {
            let published = now
                .published
                .get("daily")
                .map_or_else(|| "nothing yet".to_owned(), |v| format!("daily {v}"));
            match &pass.error {
                None if pass.ok => say.line(&format!(
                    "sync: pass done — mirror now publishes {published} (verified, atomic)"
                )),
                error => say.line(&format!(
                    "sync: pass did not finish — {}; mirror keeps serving {published}",
                    error.as_deref().unwrap_or("incomplete")
                )),
            }
        }
        last = now;
    }
}

/// Narrates the herd gate, the self-healing trigger, and progress.
async fn watch_herd(
    view: MirrorView,
    stats: Arc<Stats>,
    arrived: Arc<std::sync::atomic::AtomicU64>,
    v: u32,
    say: Narrator,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut refusing = false;
    let mut denied = 0;
    let mut last_denial = Instant::now();
    let mut heals = view.heal.heal_requests();
    let mut last_progress = Instant::now();
    let mut firing = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        narrate_alerts(&view.observer, &mut firing, &say);
        let now_heals = view.heal.heal_requests();
        if now_heals > heals && heals == 0 {
            say.line(&format!(
                "clients ask the mirror for daily-{}.cdiff, newer than it publishes: 404, and the self-healing sync is triggered",
                v + 1
            ));
        }
        heals = now_heals;

        if let Some(herd) = view.control.limits().herd_stats() {
            // Closed while it refuses; open again after two quiet seconds.
            if herd.denied > denied {
                last_denial = Instant::now();
                if !refusing {
                    refusing = true;
                    say.line(&format!(
                        "herd gate closed: {} whole-CVD downloads share the link at ≥ {} each; newcomers get 429 + Retry-After",
                        herd.active,
                        bits(herd.min_rate as f64)
                    ));
                }
            } else if refusing && last_denial.elapsed() >= Duration::from_secs(2) {
                refusing = false;
                say.line(&format!(
                    "herd gate open again ({} whole-CVD downloads running; {} refused so far)",
                    herd.active, herd.denied
                ));
            }
            denied = herd.denied;
        }
        let started = arrived.load(std::sync::atomic::Ordering::Relaxed);
        if started > 0 && last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let rate = view.observer.rates().total;
            say.line(&format!(
                "  … {started} herd clients arrived, {} whole CVDs delivered, {} refused (429), link {}",
                Stats::get(&stats.full_downloads),
                Stats::get(&stats.refused),
                bits(rate)
            ));
        }
    }
}

/// Says when an alert starts firing (a real mirror would call its webhook
/// and log a WARN; the demo's log has that line too).
fn narrate_alerts(
    observer: &crate::observe::Observer,
    firing: &mut std::collections::BTreeSet<&'static str>,
    say: &Narrator,
) {
    let now: Vec<&'static str> = observer
        .alert_names()
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
    if now.iter().all(|name| firing.contains(name)) {
        firing.retain(|name| now.contains(name));
        return;
    }
    let status: serde_json::Value =
        serde_json::from_str(&observer.status_json_text(false)).unwrap_or_default();
    for name in &now {
        if firing.contains(name) {
            continue;
        }
        let summary = status["alerts"]
            .as_array()
            .and_then(|alerts| alerts.iter().find(|a| a["alert"] == *name))
            .and_then(|a| a["summary"].as_str())
            .unwrap_or("");
        say.line(&format!(
            "alert `{name}` fires: {summary} (the status page shows it; a webhook would be called)"
        ));
    }
    *firing = now.into_iter().collect();
}

fn summary(say: &Narrator, stats: &Stats, mirror: &Mirror, upstream: &Upstream, elapsed: Duration) {
    let status: serde_json::Value =
        serde_json::from_str(&mirror.observer.status_json_text(false)).unwrap_or_default();
    let code = |c: &str| status["status_codes"][c].as_u64().unwrap_or(0);
    let published = mirror.status.borrow().published.get("daily").copied();
    let passes = &status["sync"]["passes"];
    say.blank();
    say.raw(&format!("Summary ({} s of scenario)", elapsed.as_secs()));
    say.raw(&format!(
        "  mirror served   {} requests, {} ({} × 200, {} × 206, {} × 404, {} × 429)",
        status["totals"]["requests"].as_u64().unwrap_or(0),
        human_bytes(status["totals"]["bytes"].as_u64().unwrap_or(0)),
        code("200"),
        code("206"),
        code("404"),
        code("429")
    ));
    say.raw(&format!(
        "  clients         {} patched with cdiffs, {} downloaded the whole CVD, {} unfinished; {} refusals honoured",
        Stats::get(&stats.patched),
        Stats::get(&stats.full_downloads),
        Stats::get(&stats.unfinished),
        Stats::get(&stats.refused)
    ));
    say.raw(&format!(
        "  versions        upstream daily {}, mirror publishes {}",
        upstream.first + 2,
        published.map_or_else(|| "nothing".to_owned(), |v| format!("daily {v}"))
    ));
    say.raw(&format!(
        "  sync passes     {} ok, {} failed; {} self-healing requests from clients",
        passes["ok"].as_u64().unwrap_or(0),
        passes["failed"].as_u64().unwrap_or(0),
        status["sync"]["heal_requests"].as_u64().unwrap_or(0)
    ));
}

/// Timestamped lines on stdout.
#[derive(Clone)]
struct Narrator;

impl Narrator {
    fn new() -> Self {
        Self
    }

    fn line(&self, text: &str) {
        println!("{} {text}", clock(SystemTime::now()));
    }

    fn raw(&self, text: &str) {
        println!("{text}");
    }

    fn blank(&self) {
        println!();
    }
}

/// `HH:MM:SS` (UTC): the standard library knows no time zones.
fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn bits(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    if bits >= 1e6 {
        format!("{:.1} Mbit/s", bits / 1e6)
    } else {
        format!("{:.0} kbit/s", bits / 1e3)
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.0} kB", n as f64 / 1e3)
    }
}

/// The demo's temporary directory, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(parent: Option<&Path>, keep: bool) -> anyhow::Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nonce: u32 = rand::random();
        let path = parent.join(format!("cvdmirror-demo-{}-{nonce:08x}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            eprintln!("cvdmirror demo: cannot remove {}: {e}", self.path.display());
        }
    }
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
    fn clock_is_hours_minutes_seconds() {
        assert_eq!(
            clock(UNIX_EPOCH + Duration::from_secs(86_400 + 3_723)),
            "01:02:03"
        );
    }

    #[test]
    fn admin_must_be_loopback() {
        assert!(check_loopback(Some("0.0.0.0:8081".parse().unwrap())).is_err());
        assert!(check_loopback(Some("[::1]:8081".parse().unwrap())).is_ok());
        assert!(check_loopback(None).is_ok());
    }
}
