//! The play: "the failed update" in its phases (first sync, a quiet spell,
//! upstream publishing without the middle cdiff, the herd and its gate, the
//! cdiff appearing, latecomers patching), with the watchers that narrate
//! the sync engine and the herd gate while it runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::DemoArgs;
use super::clients::{Client, Stats};
use super::log::DemoLog;
use super::mirror::Mirror;
use super::narrate::{Narrator, narrate_alerts, summary};
use super::upstream::{self, Upstream};
use crate::rate::human_bits as bits;

/// Clients doing routine header checks throughout.
const ROUTINE_CLIENTS: u32 = 4;

pub async fn play(
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
