//! Scheduler behaviour under a simulated clock: accuracy, fairness, work
//! conservation, priority, hierarchy and leaks.
//!
//! The tree is driven tick by tick with injected time and flows that drain
//! their credit at once, as a fast client would; numbers are those of the
//! 100 Mbit/s link of the incident. Measurements follow
//! `bandwidth-prior-art.md`: error over 100 ms and 1 s windows,
//! peak-to-average, and Jain's index over per-client throughput.

use tokio::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::config::{ShapeConfig, TICK_LATENESS};
use super::pacer::next_deadline;
use super::rate::Rate;
use super::spec::FlowSpec;
use super::tree::{NodeId, Tree};

const TICK: Duration = Duration::from_millis(2);
const CHUNK: u64 = 256 * 1024;
/// 100 Mbit/s in bytes per second.
const LINK: f64 = 12_500_000.0;

struct Sim {
    tree: Tree,
    now: Instant,
    flows: Vec<SimFlow>,
    /// Bytes granted to all flows, per tick.
    per_tick: Vec<u64>,
}

struct SimFlow {
    id: Option<NodeId>,
    got: u64,
    /// Bytes still to send; `u64::MAX` for endless demand.
    left: u64,
}

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

fn config(link: Option<&str>) -> ShapeConfig {
    ShapeConfig {
        link_rate: link.map(rate),
        ..ShapeConfig::default()
    }
}

impl Sim {
    fn new(config: ShapeConfig) -> Self {
        config.validate().unwrap();
        let now = Instant::now();
        Self {
            tree: Tree::new(config, now),
            now,
            flows: Vec::new(),
            per_tick: Vec::new(),
        }
    }

    fn add(&mut self, spec: FlowSpec, left: u64) -> usize {
        let (id, _) = self.tree.register(&spec, self.now);
        self.tree.take_credit(id, left.min(CHUNK), None, self.now);
        self.flows.push(SimFlow {
            id: Some(id),
            got: 0,
            left,
        });
        self.flows.len() - 1
    }

    fn bulk(&mut self, site: &str, client: &str) -> usize {
        self.add(FlowSpec::new(site, "bulk", client), u64::MAX)
    }

    fn stop(&mut self, i: usize) {
        if let Some(id) = self.flows[i].id.take() {
            self.tree.deregister(id);
        }
    }

    /// A simulation of a configuration validation would refuse.
    fn unchecked(config: ShapeConfig) -> Self {
        let now = Instant::now();
        Self {
            tree: Tree::new(config, now),
            now,
            flows: Vec::new(),
            per_tick: Vec::new(),
        }
    }

    /// Advances one tick; every flow takes its credit and asks for more.
    fn step(&mut self) {
        self.step_at(self.now + TICK);
    }

    /// A tick firing at `at`.
    fn step_at(&mut self, at: Instant) {
        self.now = at;
        self.tree.tick(self.now);
        let mut total = 0;
        for f in &mut self.flows {
            let Some(id) = f.id else { continue };
            if f.left == 0 {
                continue;
            }
            let taken = self.tree.take_credit(id, f.left.min(CHUNK), None, self.now);
            f.got += taken;
            total += taken;
            if f.left != u64::MAX {
                f.left -= taken;
                if f.left > 0 {
                    self.tree.take_credit(id, f.left.min(CHUNK), None, self.now);
                }
            }
        }
        self.per_tick.push(total);
    }

    /// Runs for `d`; returns the bytes each flow got meanwhile.
    fn run(&mut self, d: Duration) -> Vec<u64> {
        let before: Vec<u64> = self.flows.iter().map(|f| f.got).collect();
        for _ in 0..d.as_millis() / TICK.as_millis() {
            self.step();
        }
        self.flows
            .iter()
            .zip(before)
            .map(|(f, b)| f.got - b)
            .collect()
    }

    /// Totals over consecutive windows of `d`, from tick `from`.
    fn windows(&self, from: usize, d: Duration) -> Vec<u64> {
        let n = (d.as_millis() / TICK.as_millis()) as usize;
        self.per_tick[from..]
            .chunks_exact(n)
            .map(|w| w.iter().sum())
            .collect()
    }
}

fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    sum * sum / (x.len() as f64 * sq)
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want
}

#[tokio::test(start_paused = true)]
async fn link_cap_holds_over_1s_and_100ms_windows() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for c in 0..10 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(10));
    let seconds = sim.windows(0, Duration::from_secs(1));
    for (i, w) in seconds.iter().enumerate() {
        assert!(rel_err(*w as f64, LINK) < 0.02, "second {i}: {w}");
    }
    let tenths = sim.windows(0, Duration::from_millis(100));
    let errs: Vec<f64> = tenths
        .iter()
        .map(|&w| rel_err(w as f64, LINK / 10.0))
        .collect();
    let worst = errs.iter().copied().fold(0.0, f64::max);
    let peak = *tenths.iter().max().unwrap() as f64 / (LINK / 10.0);
    let mut steady = errs[1..].to_vec();
    steady.sort_by(f64::total_cmp);
    eprintln!(
        "100 ms windows: worst {:.2}% (first window, initial burst), after it median {:.3}% p99 {:.3}%; peak-to-average {peak:.4}",
        worst * 100.0,
        steady[steady.len() / 2] * 100.0,
        steady[steady.len() * 99 / 100] * 100.0,
    );
    // The first window carries the initial 4 ms burst; the rest are within
    // one grant of exact.
    assert!(worst < 0.05, "{worst}");
    assert!(errs[1..].iter().all(|&e| e < 0.02), "{errs:?}");
    // Sub-second smoothness: no 10 ms window after the first far above cap.
    let hundredths = sim.windows(5, Duration::from_millis(10));
    let max = *hundredths.iter().max().unwrap() as f64;
    assert!(max < LINK / 100.0 * 1.5, "10 ms peak {max}");
}

#[tokio::test(start_paused = true)]
async fn lowered_cap_holds_within_two_ticks() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for c in 0..5 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(2));
    let change = sim.per_tick.len();
    sim.tree.guard_rate = Some(rate("20Mbit"));
    sim.tree.apply_link_rate(sim.now);
    sim.run(Duration::from_secs(3));
    // After two ticks, no 10 ms window exceeds 20 Mbit/s by more than a grant.
    let after: Vec<u64> = sim.windows(change + 2, Duration::from_millis(10));
    assert!(after.iter().all(|&w| w <= 25_000 + 16_384), "{after:?}");
    let seconds = sim.windows(change + 2, Duration::from_secs(1));
    for w in seconds {
        assert!(rel_err(w as f64, 2_500_000.0) < 0.02, "{w}");
    }
    // And raising it again is as quick.
    let change = sim.per_tick.len();
    sim.tree.guard_rate = None;
    sim.tree.apply_link_rate(sim.now);
    sim.run(Duration::from_secs(1));
    let w = sim.windows(change + 2, Duration::from_millis(500))[0] as f64;
    assert!(rel_err(w, LINK / 2.0) < 0.02, "{w}");
}

#[tokio::test(start_paused = true)]
async fn equal_clients_get_equal_shares() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for c in 0..10 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(1));
    let got: Vec<f64> = sim
        .run(Duration::from_secs(1))
        .iter()
        .map(|&b| b as f64)
        .collect();
    let j = jain(&got);
    eprintln!("Jain's index over 10 equal clients: {j:.5}");
    assert!(j >= 0.98, "{j} {got:?}");
}

#[tokio::test(start_paused = true)]
async fn weighted_clients_share_by_weight() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for w in 1..=3 {
        sim.add(
            FlowSpec::new("s", "bulk", format!("w{w}").as_str()).with_weight(w),
            u64::MAX,
        );
    }
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(1));
    let per_weight: Vec<f64> = got
        .iter()
        .enumerate()
        .map(|(i, &b)| b as f64 / (i + 1) as f64)
        .collect();
    assert!(jain(&per_weight) > 0.999, "{got:?}");
    assert!(rel_err(got.iter().sum::<u64>() as f64, LINK) < 0.02);
}

#[tokio::test(start_paused = true)]
async fn fair_per_client_not_per_connection() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for _ in 0..10 {
        sim.bulk("s", "greedy");
    }
    sim.bulk("s", "modest");
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(1));
    let greedy: u64 = got[..10].iter().sum();
    let modest = got[10];
    assert!(
        rel_err(greedy as f64, modest as f64) < 0.02,
        "{greedy} vs {modest}"
    );
    // The greedy client's own flows share its half fairly too.
    let inner: Vec<f64> = got[..10].iter().map(|&b| b as f64).collect();
    assert!(jain(&inner) > 0.98);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_flows_share_goes_to_the_others_at_once() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for c in 0..4 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(1));
    sim.stop(0);
    let got = sim.run(Duration::from_millis(100));
    let total: u64 = got.iter().sum();
    assert!(rel_err(total as f64, LINK / 10.0) < 0.03, "{got:?}");
    for &g in &got[1..] {
        assert!(rel_err(g as f64, LINK / 30.0) < 0.05, "{got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_capped_client_leaves_the_rest_to_others() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    sim.add(
        FlowSpec::new("s", "bulk", "slow").with_client_rate(rate("1Mbit")),
        u64::MAX,
    );
    for c in 0..3 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(5));
    assert!(rel_err(got[0] as f64, 125_000.0 * 5.0) < 0.02, "{got:?}");
    let rest = (LINK - 125_000.0) * 5.0 / 3.0;
    for &g in &got[1..] {
        assert!(rel_err(g as f64, rest) < 0.02, "{got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn class_client_cap_applies_to_each_client() {
    let mut cfg = config(None);
    cfg.classes[1].client_rate = Some(rate("8Mbit"));
    let mut sim = Sim::new(cfg);
    sim.bulk("s", "a");
    sim.bulk("s", "b");
    sim.bulk("s", "b");
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(2));
    assert!(rel_err(got[0] as f64, 2_000_000.0) < 0.02, "{got:?}");
    assert!(
        rel_err((got[1] + got[2]) as f64, 2_000_000.0) < 0.02,
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn small_responses_pass_a_saturating_herd() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    for c in 0..50 {
        sim.bulk("s", &format!("herd{c}"));
    }
    sim.run(Duration::from_secs(1));
    let small = sim.add(FlowSpec::new("s", "small", "checker"), SMALL);
    let mut ticks = 0;
    while sim.flows[small].got < SMALL {
        sim.step();
        ticks += 1;
        assert!(
            ticks <= 4,
            "small response still waiting after {ticks} ticks"
        );
    }
    eprintln!("64 KiB small response done in {ticks} ticks under a 50-flow herd");
    // The herd got the rest, and the link stayed within its cap.
    let last: u64 = sim.per_tick[sim.per_tick.len() - 500..].iter().sum();
    assert!(rel_err(last as f64, LINK) < 0.02);
}
const SMALL: u64 = 64 * 1024;

#[tokio::test(start_paused = true)]
async fn priority_is_strict_only_among_a_sites_classes() {
    // A second site's bulk still gets its share while the first site's small
    // class is busy: priority orders classes, weights order sites.
    let mut sim = Sim::new(config(Some("100Mbit")));
    sim.add(FlowSpec::new("a", "small", "x"), u64::MAX);
    sim.bulk("a", "y");
    sim.bulk("b", "z");
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(1));
    assert!(
        got[1] < 20_000,
        "bulk of site a must wait behind its small class: {got:?}"
    );
    assert!(rel_err(got[0] as f64, LINK / 2.0) < 0.02, "{got:?}");
    assert!(rel_err(got[2] as f64, LINK / 2.0) < 0.02, "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn sites_share_by_weight_and_site_caps_hold() {
    let mut cfg = config(Some("100Mbit"));
    cfg.sites.insert(
        "a".into(),
        super::SiteConfig {
            weight: 3,
            rate: None,
        },
    );
    cfg.sites.insert(
        "capped".into(),
        super::SiteConfig {
            weight: 10,
            rate: Some(rate("10Mbit")),
        },
    );
    let mut sim = Sim::new(cfg);
    for c in 0..3 {
        sim.bulk("a", &format!("a{c}"));
    }
    sim.bulk("b", "b0");
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(2));
    let a: u64 = got[..3].iter().sum();
    assert!(rel_err(a as f64 / got[3] as f64, 3.0) < 0.02, "{got:?}");
    // A capped site with a huge weight takes its cap, no more; the others
    // split the rest 3:1.
    sim.bulk("capped", "k");
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(2));
    assert!(rel_err(got[4] as f64, 2_500_000.0) < 0.02, "{got:?}");
    let a: u64 = got[..3].iter().sum();
    assert!(
        rel_err(a as f64, (LINK * 2.0 - 2_500_000.0) * 0.75) < 0.02,
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn class_cap_without_link_cap() {
    let mut cfg = config(None);
    cfg.classes[1].rate = Some(rate("40Mbit"));
    let mut sim = Sim::new(cfg);
    for c in 0..7 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim.run(Duration::from_secs(1));
    let got = sim.run(Duration::from_secs(2));
    assert!(
        rel_err(got.iter().sum::<u64>() as f64, 10_000_000.0) < 0.02,
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn low_caps_move_in_small_steady_steps() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    sim.add(
        FlowSpec::new("s", "bulk", "dialup").with_client_rate(rate("64KB/s")),
        u64::MAX,
    );
    sim.run(Duration::from_secs(1));
    let start = sim.per_tick.len();
    sim.run(Duration::from_secs(10));
    for w in sim.windows(start, Duration::from_millis(100)) {
        assert!(w.abs_diff(6_400) <= 4096, "{w}");
    }
    assert!(
        rel_err(
            sim.windows(start, Duration::from_secs(10))[0] as f64,
            640_000.0
        ) < 0.01
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_flows_leave_no_trace() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    let empty = sim.tree.len();
    for i in 0..10_000 {
        let site = ["a", "b"][i % 2];
        let class = ["small", "bulk"][i % 3 % 2];
        sim.add(
            FlowSpec::new(site, class, format!("c{}", i % 1000).as_str()),
            u64::MAX,
        );
    }
    sim.run(Duration::from_millis(50));
    for i in (0..10_000).rev() {
        sim.stop(i);
        if i % 1000 == 0 {
            sim.step();
        }
    }
    sim.run(Duration::from_millis(10));
    assert_eq!(sim.tree.waiting, 0);
    // Only the two sites and their two classes remain.
    assert_eq!(sim.tree.len(), empty + 2 + 4);
    let snap = sim.tree.snapshot();
    assert!(
        snap.sites
            .iter()
            .flat_map(|s| &s.classes)
            .all(|c| c.clients.is_empty() && c.node.active_flows == 0)
    );
    assert_eq!(snap.link.active_flows, 0);
    assert_eq!(snap.link.waiting_flows, 0);
}

#[tokio::test(start_paused = true)]
async fn reconfiguration_keeps_flows_and_applies_at_once() {
    let mut sim = Sim::new(config(Some("100Mbit")));
    sim.bulk("a", "x");
    sim.bulk("b", "y");
    sim.run(Duration::from_secs(1));
    let mut cfg = config(Some("50Mbit"));
    cfg.sites.insert(
        "a".into(),
        super::SiteConfig {
            weight: 4,
            rate: None,
        },
    );
    sim.tree.reconfigure(cfg, sim.now);
    sim.step();
    let got = sim.run(Duration::from_secs(2));
    assert!(
        rel_err((got[0] + got[1]) as f64, 12_500_000.0) < 0.02,
        "{got:?}"
    );
    assert!(
        rel_err(got[0] as f64 / got[1] as f64, 4.0) < 0.02,
        "{got:?}"
    );
    // Removing every cap releases the flows from the scheduler.
    sim.tree.reconfigure(config(None), sim.now);
    assert_eq!(sim.tree.waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn flows_without_any_cap_bypass_the_scheduler() {
    let now = Instant::now();
    let mut tree = Tree::new(config(None), now);
    let (id, cell) = tree.register(&FlowSpec::new("s", "bulk", "c"), now);
    assert!(cell.bypass.load(std::sync::atomic::Ordering::Relaxed));
    tree.guard_rate = Some(rate("1Mbit"));
    tree.apply_link_rate(now);
    tree.refresh_bypass();
    assert!(!cell.bypass.load(std::sync::atomic::Ordering::Relaxed));
    tree.deregister(id);
}

/// A running flow's client cap can be set and lifted (a quota slowing a
/// transfer, a new slice restoring it); a flow waiting for a grant when
/// the last cap goes is released at once.
#[tokio::test(start_paused = true)]
async fn a_running_flows_client_cap_can_change() {
    use std::sync::atomic::Ordering::Relaxed;
    let now = Instant::now();
    let mut tree = Tree::new(config(None), now);
    let (id, cell) = tree.register(&FlowSpec::new("s", "bulk", "c"), now);
    assert!(cell.bypass.load(Relaxed));
    assert!(tree.set_client_rate(id, Some(rate("1Mbit")), now).is_none());
    assert!(!cell.bypass.load(Relaxed));
    // Ask for more than the cap's burst: the flow waits.
    let waker = futures_util::task::noop_waker();
    assert_eq!(tree.take_credit(id, CHUNK, Some(&waker), now), 0);
    tree.tick(now);
    let granted = tree.take_credit(id, CHUNK, Some(&waker), now);
    assert!(
        granted > 0 && granted < CHUNK,
        "a 1 Mbit/s cap granted {granted} at once"
    );
    assert_eq!(tree.waiting, 1);
    assert!(tree.set_client_rate(id, None, now).is_some());
    assert!(cell.bypass.load(Relaxed));
    assert_eq!(tree.waiting, 0);
    tree.deregister(id);
    assert_eq!(tree.len(), 3, "link, site, class and nothing else");
}

#[tokio::test(start_paused = true)]
async fn stats_follow_sent_bytes() {
    let now = Instant::now();
    let mut tree = Tree::new(config(Some("10Mbit")), now);
    let (id, cell) = tree.register(&FlowSpec::new("s", "bulk", "c"), now);
    let mut t = now;
    for _ in 0..30 {
        // 1 MB/s sent for 3 s, folded every 100 ms.
        cell.sent
            .fetch_add(100_000, std::sync::atomic::Ordering::Relaxed);
        t += Duration::from_millis(100);
        tree.fold(t);
    }
    let snap = tree.snapshot();
    let class = &snap.sites[0].classes[0];
    assert_eq!(class.node.bytes, 3_000_000);
    assert!(
        rel_err(snap.link.rate, 1_000_000.0) < 0.06,
        "{}",
        snap.link.rate
    );
    assert_eq!(class.clients[0].active_flows, 1);
    let load = tree.class_load("s", "bulk");
    assert_eq!(load.active_flows, 1);
    assert!(
        load.available
            .is_some_and(|a| rel_err(a, 1_250_000.0) < 0.01),
        "{load:?}"
    );
    assert_eq!(tree.class_flows("bulk"), 1);
    tree.deregister(id);
    assert_eq!(tree.class_flows("bulk"), 0);
}

/// What a run on the pacer's real schedule sent.
struct LateRun {
    /// Share of the cap used.
    share: f64,
    /// Most bytes granted by one tick.
    largest: u64,
}

/// Runs `sim` for `d` on the pacer's schedule (see [`next_deadline`]), each
/// tick firing `late()` after its deadline, against a cap of `cap` bytes/s.
fn run_late(sim: &mut Sim, d: Duration, cap: f64, late: &mut dyn FnMut() -> Duration) -> LateRun {
    let (start, first) = (sim.now, sim.per_tick.len());
    let mut due = sim.now;
    while sim.now < start + d {
        let fired = due + late();
        sim.step_at(fired);
        due = next_deadline(due, fired, TICK);
    }
    let ticks = &sim.per_tick[first..];
    LateRun {
        share: ticks.iter().sum::<u64>() as f64 / (cap * (sim.now - start).as_secs_f64()),
        largest: ticks.iter().copied().max().unwrap_or(0),
    }
}

/// 85 Mbit/s, the incident's cap, in bytes per second.
const CAP85: f64 = 85e6 / 8.0;

fn herd_at_85(config: ShapeConfig) -> Sim {
    let mut sim = Sim::unchecked(config);
    for c in 0..10 {
        sim.bulk("s", &format!("c{c}"));
    }
    sim
}

#[tokio::test(start_paused = true)]
async fn late_ticks_still_reach_the_cap_in_small_steps() {
    // tokio's timer has 1 ms slots: a 2 ms tick fires 1-1.9 ms late.
    let mut rng = StdRng::seed_from_u64(7);
    let mut late = || Duration::from_micros(rng.random_range(1_000..=1_900));
    let cfg = config(Some("85Mbit"));
    cfg.validate().unwrap();
    let mut sim = herd_at_85(cfg);
    run_late(&mut sim, Duration::from_secs(1), CAP85, &mut late);
    let run = run_late(&mut sim, Duration::from_secs(10), CAP85, &mut late);
    eprintln!(
        "default burst, late ticks: {:.2}% of the cap, largest tick {} B",
        run.share * 100.0,
        run.largest
    );
    assert!((0.99..=1.001).contains(&run.share), "{}", run.share);
    // No tick sends more than the 32 KB bucket of the bench's tbf qdisc, so
    // other traffic on the link does not queue behind it.
    assert!(run.largest <= 32 * 1024, "{}", run.largest);

    // A burst of one tick (validation refuses it) loses what late ticks earn.
    let mut cfg = config(Some("85Mbit"));
    cfg.burst = cfg.tick;
    assert!(cfg.validate().is_err());
    let mut sim = herd_at_85(cfg);
    run_late(&mut sim, Duration::from_secs(1), CAP85, &mut late);
    let short = run_late(&mut sim, Duration::from_secs(10), CAP85, &mut late);
    eprintln!("burst = tick: {:.2}% of the cap", short.share * 100.0);
    assert!(short.share < 0.99, "{}", short.share);
}

#[tokio::test(start_paused = true)]
async fn stalled_ticks_are_carried_over_not_dumped() {
    // One tick in 25 comes 4-6 ms late (a busy machine): it earned more
    // than the burst holds.
    let mut rng = StdRng::seed_from_u64(8);
    let mut n = 0;
    let mut late = || {
        n += 1;
        let micros = if n % 25 == 0 {
            4_000..=6_000
        } else {
            1_000..=1_900
        };
        Duration::from_micros(rng.random_range(micros))
    };
    let cfg = config(Some("85Mbit"));
    let burst = (CAP85 * cfg.burst.as_secs_f64()) as u64;
    assert!(cfg.burst >= cfg.tick + TICK_LATENESS);
    let mut sim = herd_at_85(cfg);
    run_late(&mut sim, Duration::from_secs(1), CAP85, &mut late);
    let run = run_late(&mut sim, Duration::from_secs(10), CAP85, &mut late);
    eprintln!(
        "stalls: {:.2}% of the cap, largest tick {} B (burst {burst} B)",
        run.share * 100.0,
        run.largest
    );
    assert!((0.99..=1.001).contains(&run.share), "{}", run.share);
    assert!(run.largest <= burst, "{} > {burst}", run.largest);
}

/// A header check, `304` or cdiff (the top-priority class) is granted at
/// once while the caps on its path have tokens, instead of waiting up to a
/// tick behind the pacer; bulk waits for the pacer, and once the link's
/// tokens are spent small flows wait too, so the cap still holds.
#[tokio::test(start_paused = true)]
async fn top_priority_flows_are_granted_without_waiting_for_a_tick() {
    let now = Instant::now();
    let mut tree = Tree::new(config(Some("80Mbit")), now);
    let waker = futures_util::task::noop_waker();
    let (bulk, _) = tree.register(&FlowSpec::new("s", "bulk", "a"), now);
    assert_eq!(
        tree.take_credit(bulk, CHUNK, Some(&waker), now),
        0,
        "bulk waits for the pacer"
    );
    let (small, _) = tree.register(&FlowSpec::new("s", "small", "b"), now);
    assert_eq!(tree.take_credit(small, 8192, Some(&waker), now), 8192);
    assert_eq!(tree.waiting, 1, "only the bulk flow waits");

    // Small responses take the link's burst and then borrow one more, each
    // charged and each whole; then they too wait.
    let burst = tree.config.burst.as_secs_f64() * rate("80Mbit").bytes_per_sec() as f64;
    let mut granted = 8192u64;
    let mut flows = vec![small];
    let mut short = 0;
    loop {
        let (id, _) = tree.register(&FlowSpec::new("s", "small", "c"), now);
        flows.push(id);
        let got = tree.take_credit(id, 8192, Some(&waker), now);
        if got == 0 {
            break;
        }
        granted += got;
        short += usize::from(got < 8192);
        assert!(flows.len() < 1000, "express grants never ran out");
    }
    assert_eq!(short, 0, "a response that fits is granted whole");
    assert!(
        (granted as f64) <= 2.0 * burst + 1.0,
        "granted {granted} at once against a burst of {burst} (plus one borrowed)"
    );
    assert!(
        (granted as f64) > 2.0 * burst - 8192.0,
        "small responses did not borrow: {granted} against a burst of {burst}"
    );
    assert_eq!(
        tree.waiting,
        2 + short,
        "bulk, the small flow refused and any granted short wait"
    );
    // The debt is repaid before bulk is served: one tick later the link
    // has earned less than it owes, and bulk still gets nothing.
    let later = now + tree.config.tick;
    tree.tick(later);
    assert_eq!(tree.take_credit(bulk, CHUNK, Some(&waker), later), 0);
    for id in flows.into_iter().chain([bulk]) {
        tree.deregister(id);
    }
}
