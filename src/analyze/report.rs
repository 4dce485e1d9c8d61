//! The analysis result as data: what the terminal summary, the HTML page and
//! the JSON file all show, computed once from the aggregates. It also writes
//! the plain-language explanation, because the point of `analyze` is to say
//! *why* the link was full, not only that it was.

pub mod html;
pub mod svg;
pub mod text;

use std::collections::{HashMap, HashSet};

use super::aggregate::{Analyzer, InputSummary, Limits, MalformedExample, TableSizes};
use super::chains::Chain;
use super::classify::Class;
use super::episodes::{self, Baseline};
use super::parse::ParseError;
use super::sizes::FileVerdict;
use super::time::{format_clock, format_minute, format_offset, rfc3339};
use super::timeline::Bucket;
use super::topk::{Counter, TopK};

/// Everything the analysis found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Each input read.
    pub inputs: Vec<InputSummary>,
    /// Lines read in all.
    pub lines: u64,
    /// Lines that parsed.
    pub parsed: u64,
    /// Parsed lines outside `--since`/`--until`.
    pub out_of_range: u64,
    /// Skipped lines.
    pub malformed: Malformed,
    /// Zone of the times shown to people (seconds east of UTC).
    pub utc_offset: i32,
    /// The same as `+hhmm`.
    pub utc_offset_text: String,
    /// First request (UTC seconds).
    pub first: Option<i64>,
    /// Last request (UTC seconds).
    pub last: Option<i64>,
    /// Bucket width in seconds (wider than asked if the span needed it).
    pub bucket_secs: i64,
    /// Totals by class.
    pub totals: Totals,
    /// Every bucket from first to last.
    pub timeline: Vec<Point>,
    /// Normal level and thresholds, in bytes per bucket.
    pub baseline: Baseline,
    /// The surges.
    pub episodes: Vec<EpisodeReport>,
    /// cdiff 404 → whole download chains.
    pub fallback: Fallback,
    /// Whole-database downloads per file, with aborted ones.
    pub downloads: Vec<FileVerdict>,
    /// Bytes of aborted whole-database downloads.
    pub wasted_bytes: u64,
    /// Clients by bytes.
    pub top_clients: Vec<Row>,
    /// User agents (UUID removed) by requests.
    pub top_agents: Vec<Row>,
    /// freshclam versions (or other products) by requests.
    pub top_versions: Vec<Row>,
    /// Files by bytes.
    pub top_files: Vec<Row>,
    /// Requests per status code.
    pub statuses: Vec<(u16, u64)>,
    /// Plain-language explanation, one paragraph per entry.
    pub explanation: Vec<String>,
    /// Table bounds and how much approximation happened.
    pub bounds: Bounds,
}

/// Skipped lines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Malformed {
    /// How many.
    pub count: u64,
    /// Per reason.
    pub by_reason: Vec<(ParseError, u64)>,
    /// The first few.
    pub examples: Vec<MalformedExample>,
}

/// Totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Per class.
    pub classes: Vec<ClassTotal>,
}

/// Totals of one class.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassTotal {
    /// The class.
    pub class: Class,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One timeline bucket.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Point {
    /// Bucket start, UTC seconds.
    pub start: i64,
    /// Counts (indexed by class: cvd, cdiff, header checks, other).
    #[serde(flatten)]
    pub counts: Bucket,
}

/// One row of a top table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Client, agent, version or file.
    pub name: String,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Possible undercount of the ranked value (0 = exact).
    pub error: u64,
}

/// One episode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpisodeReport {
    /// Onset, UTC seconds.
    pub start: i64,
    /// Back to normal, UTC seconds.
    pub end: i64,
    /// Onset, RFC 3339.
    pub start_rfc3339: String,
    /// End, RFC 3339.
    pub end_rfc3339: String,
    /// Whether the log ended first.
    pub ongoing: bool,
    /// Length in minutes.
    pub minutes: i64,
    /// Bytes during the episode.
    pub bytes: u64,
    /// Bytes per class during the episode.
    pub class_bytes: [u64; 4],
    /// Share of all bytes in the log, percent.
    pub share_percent: f64,
    /// Busiest bucket start.
    pub peak_time: i64,
    /// Rate in the busiest bucket.
    pub peak_bits_per_sec: f64,
    /// The fallback herd inside it, if any.
    pub fallback: Option<EpisodeFallback>,
    /// What happened, in one paragraph.
    pub explanation: String,
}

/// Fallback chains that started within an episode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpisodeFallback {
    /// The patch most clients missed.
    pub patch: String,
    /// The whole database they fetched instead.
    pub file: String,
    /// Distinct clients that missed that patch and fell back.
    pub clients: u64,
    /// Distinct clients that fell back from any patch.
    pub all_clients: u64,
    /// Whole downloads by them in the episode.
    pub downloads: u64,
    /// Bytes of those downloads.
    pub bytes: u64,
    /// Of which aborted.
    pub aborted: u64,
    /// Bytes of the aborted ones.
    pub wasted_bytes: u64,
}

/// All fallback chains.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fallback {
    /// Distinct clients with at least one chain.
    pub clients: u64,
    /// True when the client table overflowed: `clients` is a lower bound.
    pub at_least: bool,
    /// Chains.
    pub chains: u64,
    /// Bytes of the whole downloads that ended the chains.
    pub bytes: u64,
    /// Per missed patch.
    pub patches: Vec<PatchRow>,
    /// Clients with most chains: (client, chains, bytes of remembered chains).
    pub top_clients: Vec<(String, u64, u64)>,
    /// Window from the last 404 to the download, seconds.
    pub window_secs: i64,
}

/// Chains that started with one missing patch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchRow {
    /// The patch that got 404.
    pub patch: String,
    /// The whole database then fetched.
    pub file: String,
    /// Distinct clients.
    pub clients: u64,
    /// Remembered chains.
    pub downloads: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Bounds and approximation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bounds {
    /// Configured limits.
    pub limits: Limits,
    /// Table sizes at the end.
    pub tables: TableSizes,
    /// Keys forgotten per table (0 = exact).
    pub evicted: HashMap<&'static str, u64>,
    /// Chains counted but not attributed to a client.
    pub untracked_chains: u64,
    /// 404 streaks not followed because the table was full.
    pub dropped_streaks: u64,
    /// Whether buckets were widened to fit the span.
    pub coarsened: bool,
}

impl Analyzer {
    /// Finishes the analysis.
    pub fn finish(self) -> Report {
        let a = self;
        let offset = a.options.display_offset.or(a.first_offset).unwrap_or(0);
        let width = a.timeline.width();
        let dense = a.timeline.dense();
        let bytes: Vec<u64> = dense.iter().map(|(_, b)| b.total_bytes()).collect();
        let base = episodes::baseline(&bytes, width, a.options.min_rate);
        let series: Vec<(i64, u64)> = dense.iter().map(|(t, b)| (*t, b.total_bytes())).collect();
        let found = episodes::detect(&series, width, &base);
        let total_bytes: u64 = a.class_bytes.iter().sum();
        let verdicts = a.sizes.verdicts();
        let top = a.options.top;
        // Chains in time order, each episode takes its slice.
        let mut chains: Vec<(u64, Chain)> = a.chains.each().map(|(k, c)| (k, *c)).collect();
        chains.sort_unstable_by_key(|(_, c)| c.time);

        let episodes = found
            .iter()
            .map(|e| {
                let mut class_bytes = [0u64; 4];
                for (_, b) in dense.iter().filter(|(t, _)| *t >= e.start && *t < e.end) {
                    for (acc, v) in class_bytes.iter_mut().zip(b.bytes) {
                        *acc += v;
                    }
                }
                let ep_bytes: u64 = class_bytes.iter().sum();
                let lo = chains.partition_point(|(_, c)| c.time < e.start);
                let hi = chains.partition_point(|(_, c)| c.time < e.end);
                let fallback = episode_fallback(&a, &chains[lo..hi], &verdicts);
                let mut r = EpisodeReport {
                    start: e.start,
                    end: e.end,
                    start_rfc3339: rfc3339(e.start),
                    end_rfc3339: rfc3339(e.end),
                    ongoing: e.ongoing,
                    minutes: (e.end - e.start) / 60,
                    bytes: ep_bytes,
                    class_bytes,
                    share_percent: percent(ep_bytes, total_bytes),
                    peak_time: e.peak_time,
                    peak_bits_per_sec: e.peak_bytes as f64 * 8.0 / width as f64,
                    fallback,
                    explanation: String::new(),
                };
                r.explanation = explain_episode(&r, &base, width, total_bytes, offset);
                r
            })
            .collect::<Vec<_>>();

        let fallback = all_fallback(&a, top);
        let wasted_bytes = verdicts.iter().map(|v| v.wasted_bytes).sum();
        let explanation = explain(&a, &episodes, &base, width, offset, total_bytes);
        let tables = a.table_sizes();
        let evicted = HashMap::from([
            ("clients", a.clients.evicted()),
            ("agents", a.agents.evicted()),
            ("versions", a.versions.evicted()),
            ("files", a.files.evicted()),
        ]);
        Report {
            malformed: Malformed {
                count: a.malformed.values().sum(),
                by_reason: a.malformed.iter().map(|(r, n)| (*r, *n)).collect(),
                examples: a.examples.clone(),
            },
            lines: a.lines,
            parsed: a.parsed,
            out_of_range: a.out_of_range,
            utc_offset: offset,
            utc_offset_text: format_offset(offset),
            first: a.span.map(|s| s.0),
            last: a.span.map(|s| s.1),
            bucket_secs: width,
            totals: Totals {
                requests: a.class_requests.iter().sum(),
                bytes: total_bytes,
                classes: Class::ALL
                    .iter()
                    .map(|&c| ClassTotal {
                        class: c,
                        requests: a.class_requests[c as usize],
                        bytes: a.class_bytes[c as usize],
                    })
                    .collect(),
            },
            timeline: dense
                .iter()
                .map(|&(start, counts)| Point { start, counts })
                .collect(),
            baseline: base,
            episodes,
            fallback,
            downloads: verdicts,
            wasted_bytes,
            top_clients: rows(&a.clients, top),
            top_agents: rows(&a.agents, top),
            top_versions: rows(&a.versions, top),
            top_files: rows(&a.files, top),
            statuses: a.statuses.iter().map(|(s, n)| (*s, *n)).collect(),
            explanation,
            bounds: Bounds {
                limits: a.options.limits,
                tables,
                evicted,
                untracked_chains: a.chains.untracked_chains,
                dropped_streaks: a.chains.dropped_streaks,
                coarsened: width != a.options.bucket_secs,
            },
            inputs: a.inputs,
        }
    }
}

fn rows(t: &TopK<String>, n: usize) -> Vec<Row> {
    t.top(n)
        .into_iter()
        .map(
            |(
                name,
                Counter {
                    requests,
                    bytes,
                    error,
                },
            )| Row {
                name,
                requests,
                bytes,
                error,
            },
        )
        .collect()
}

fn all_fallback(a: &Analyzer, top: usize) -> Fallback {
    let mut per: HashMap<(u32, u32), (HashSet<u64>, u64, u64)> = HashMap::new();
    for (client, chain) in a.chains.each() {
        let e = per.entry((chain.patch, chain.file)).or_default();
        e.0.insert(client);
        e.1 += 1;
        e.2 = e.2.saturating_add(chain.bytes);
    }
    let mut patches: Vec<PatchRow> = per
        .into_iter()
        .map(|((p, f), (clients, downloads, bytes))| PatchRow {
            patch: a.chains.name(p).to_owned(),
            file: a.chains.name(f).to_owned(),
            clients: clients.len() as u64,
            downloads,
            bytes,
        })
        .collect();
    patches.sort_by(|x, y| y.clients.cmp(&x.clients).then(x.patch.cmp(&y.patch)));
    patches.truncate(top);
    Fallback {
        clients: a.chains.clients() as u64,
        at_least: a.chains.untracked_chains > 0,
        chains: a.chains.total_chains,
        bytes: a.chains.total_bytes,
        patches,
        top_clients: a.chains.top_clients(top),
        window_secs: a.options.chain_window_secs,
    }
}

fn episode_fallback(
    a: &Analyzer,
    chains: &[(u64, Chain)],
    verdicts: &[FileVerdict],
) -> Option<EpisodeFallback> {
    let mut per_patch: HashMap<(u32, u32), HashSet<u64>> = HashMap::new();
    let mut all = HashSet::new();
    for (client, chain) in chains {
        per_patch
            .entry((chain.patch, chain.file))
            .or_default()
            .insert(*client);
        all.insert(*client);
    }
    let (&(patch, file), clients) = per_patch
        .iter()
        .max_by(|x, y| x.1.len().cmp(&y.1.len()).then(y.0.cmp(x.0)))?;
    let (mut downloads, mut bytes, mut aborted, mut wasted) = (0u64, 0u64, 0u64, 0u64);
    let file_name = a.chains.name(file);
    let full = verdicts
        .iter()
        .find(|v| v.file == file_name)
        .map(|v| v.full_sizes.as_slice());
    for (_, chain) in chains
        .iter()
        .filter(|(k, c)| c.patch == patch && clients.contains(k))
    {
        downloads += 1;
        bytes = bytes.saturating_add(chain.bytes);
        let largest = full.and_then(|f| f.first()).copied().unwrap_or(0);
        if !full.is_some_and(|f| f.contains(&chain.bytes)) && chain.bytes < largest {
            aborted += 1;
            wasted = wasted.saturating_add(chain.bytes);
        }
    }
    Some(EpisodeFallback {
        patch: a.chains.name(patch).to_owned(),
        file: file_name.to_owned(),
        clients: clients.len() as u64,
        all_clients: all.len() as u64,
        downloads,
        bytes,
        aborted,
        wasted_bytes: wasted,
    })
}

fn explain_episode(
    r: &EpisodeReport,
    base: &Baseline,
    width: i64,
    total: u64,
    offset: i32,
) -> String {
    let at = |t| format_clock(t, offset);
    let normal = mbit(base.level * 8.0 / width as f64);
    let peak = mbit(r.peak_bits_per_sec);
    let back = if r.ongoing {
        format!(
            "The log ends at {} with traffic still high (peak {peak}, normally {normal}).",
            at(r.end)
        )
    } else {
        format!(
            "Traffic was back to normal at {} (peak {peak}, normally {normal}).",
            at(r.end)
        )
    };
    match &r.fallback {
        Some(f) if f.bytes.saturating_mul(4) >= r.bytes => {
            let mut s = format!(
                "From {}, {} clients requested {}, got 404 and then downloaded {} in full; {} in {} min ({} of all bytes).",
                at(r.start),
                f.clients,
                f.patch,
                f.file,
                human_bytes(f.bytes),
                r.minutes,
                pct(percent(f.bytes, total)),
            );
            if f.all_clients > f.clients {
                s += &format!(
                    " {} more clients fell back after missing other patches.",
                    f.all_clients - f.clients
                );
            }
            if f.downloads > f.clients {
                s += &format!(
                    " Some fetched it more than once: {} downloads in all.",
                    f.downloads
                );
            }
            if f.aborted > 0 {
                s += &format!(
                    " {} of those downloads were aborted part-way and will be repeated ({} wasted).",
                    f.aborted,
                    human_bytes(f.wasted_bytes)
                );
            }
            s + " " + &back
        }
        _ => {
            let (ci, cb) = r
                .class_bytes
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| **b)
                .map_or((3, 0), |(i, b)| (i, *b));
            format!(
                "From {} to {}, traffic surged to {peak} ({} in {} min, {} of all bytes); {} made up {} of it. {back}",
                at(r.start),
                at(r.end),
                human_bytes(r.bytes),
                r.minutes,
                pct(r.share_percent),
                Class::ALL[ci].label(),
                pct(percent(cb, r.bytes)),
            )
        }
    }
}

fn explain(
    a: &Analyzer,
    eps: &[EpisodeReport],
    base: &Baseline,
    width: i64,
    offset: i32,
    total: u64,
) -> Vec<String> {
    let mut out: Vec<String> = eps.iter().map(|e| e.explanation.clone()).collect();
    if eps.is_empty() {
        out.push(format!(
            "No surge: traffic never stayed above {} for {} buckets in a row (normally {}).",
            mbit(base.onset_threshold * 8.0 / width as f64),
            episodes::ONSET_RUN,
            mbit(base.level * 8.0 / width as f64)
        ));
    }
    if a.chains.total_chains > 0 && eps.iter().all(|e| e.fallback.is_none()) {
        out.push(format!(
            "{} clients fell back from a missing patch to a whole download ({} chains, {}).",
            a.chains.clients(),
            a.chains.total_chains,
            human_bytes(a.chains.total_bytes)
        ));
    }
    if let (Some((lo, hi)), true) = (a.span, total > 0) {
        out.push(format!(
            "The logs cover {} to {} (UTC{}): {} requests, {}.",
            format_minute(lo, offset),
            format_minute(hi, offset),
            format_offset(offset),
            a.class_requests.iter().sum::<u64>(),
            human_bytes(total)
        ));
    }
    out
}

/// Percentage of `part` in `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `88 %`.
pub fn pct(p: f64) -> String {
    // One decimal where rounding would claim "0 %" or "100 %" falsely.
    if (p > 0.0 && p < 1.0) || (99.5..100.0).contains(&p) {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

/// Decimal units, as link and disk vendors count: `37 GB`, `1.2 MB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `93.4 Mbit/s`.
pub fn mbit(bits_per_sec: f64) -> String {
    let m = bits_per_sec / 1e6;
    if m >= 10.0 {
        format!("{m:.0} Mbit/s")
    } else if m >= 0.01 {
        format!("{m:.2} Mbit/s")
    } else {
        format!("{:.1} kbit/s", bits_per_sec / 1e3)
    }
}
