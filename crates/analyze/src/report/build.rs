//! Assembling the [`Report`] from the aggregates once the input is read:
//! the meaning of the time stamps (which of the two timelines to use), the
//! baseline and episodes over it, each episode's share of the fallback
//! chains, the trigger, the top tables and the bounds of the approximation.

use std::collections::HashMap;

use super::cause::{time_report, trigger};
use super::explain::{explain, explain_episode};
use super::fallback::{all_fallback, episode_fallback};
use super::{
    Bounds, ClassTotal, EpisodeReport, Malformed, MissingSign, Point, Report, Row, SignReport,
    Totals, percent,
};
use crate::aggregate::Analyzer;
use crate::chains::Chain;
use crate::classify::Class;
use crate::episodes;
use crate::time::{format_offset, rfc3339};
use crate::topk::{Counter, TopK};

impl Analyzer {
    /// Finishes the analysis.
    pub fn finish(self) -> Report {
        let mut a = self;
        let offset = a.options.display_offset.or(a.first_offset).unwrap_or(0);
        let (stamp, decided) = super::cause::decide(&a);
        let si = stamp.idx();
        a.shared.place(stamp, &mut a.timelines[si]);
        let timeline = &a.timelines[si];
        let width = timeline.width();
        let dense = timeline.dense();
        let bytes: Vec<u64> = dense.iter().map(|(_, b)| b.total_bytes()).collect();
        let base = episodes::baseline(&bytes, width, a.options.min_rate);
        let series: Vec<(i64, u64)> = dense.iter().map(|(t, b)| (*t, b.total_bytes())).collect();
        let found = episodes::detect(&series, width, &base);
        let total_bytes: u64 = a.class_bytes.iter().sum();
        let verdicts = a.sizes.verdicts();
        let top = a.options.top;
        // Chains in time order, each episode takes its slice.
        let mut chains: Vec<(u64, Chain)> = a.chains.each().map(|(k, c)| (k, *c)).collect();
        chains.sort_unstable_by_key(|(_, c)| c.start[si]);

        let episodes = found
            .iter()
            .map(|e| {
                let mut class_bytes = [0u64; Class::COUNT];
                for (_, b) in dense.iter().filter(|(t, _)| *t >= e.start && *t < e.end) {
                    for (acc, v) in class_bytes.iter_mut().zip(b.bytes) {
                        *acc += v;
                    }
                }
                let ep_bytes: u64 = class_bytes.iter().sum();
                let naive_peak = dense
                    .iter()
                    .filter(|(t, _)| *t >= e.start && *t < e.end)
                    .map(|(_, b)| b.naive_bytes)
                    .max()
                    .unwrap_or(0);
                let lo = chains.partition_point(|(_, c)| c.start[si] < e.start);
                let hi = chains.partition_point(|(_, c)| c.start[si] < e.end);
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
                    naive_peak_bits_per_sec: naive_peak as f64 * 8.0 / width as f64,
                    fallback,
                    explanation: String::new(),
                };
                r.explanation = explain_episode(&r, &base, width, total_bytes, offset);
                r
            })
            .collect::<Vec<_>>();

        let fallback = all_fallback(&a, top);
        let sign = sign_report(&a, top);
        let wasted_bytes = verdicts.iter().map(|v| v.wasted_bytes).sum();
        let time = time_report(&a, stamp, decided, &dense, width, offset);
        let trigger = trigger(&a, &fallback, &episodes, total_bytes);
        let span = a.spans[si];
        let explanation = explain(
            &a,
            &super::explain::Context {
                episodes: &episodes,
                base: &base,
                width,
                offset,
                total: total_bytes,
                span,
                trigger: trigger.as_ref(),
                time: &time,
            },
        );
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
            first: span.map(|s| s.0),
            last: span.map(|s| s.1),
            bucket_secs: width,
            json_lines: a.json_lines,
            time,
            trigger,
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
            sign,
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
                sequence_resets: a.stamps.resets,
                unshared_transfers: a.shared.overflow,
                dropped_missing: a.triggers.dropped,
                coarsened: width != a.options.bucket_secs,
            },
            inputs: a.inputs,
        }
    }
}

fn sign_report(a: &Analyzer, top: usize) -> SignReport {
    let s = &a.signs;
    let sets = [s.clients(), s.missing_clients(), s.chain_clients()];
    SignReport {
        requests: s.requests,
        bytes: s.bytes,
        not_found: s.not_found,
        clients: s.clients().len() as u64,
        clients_not_found: s.missing_clients().len() as u64,
        chain_clients: s.chain_clients().len() as u64,
        at_least: sets.iter().any(|c| c.at_least()),
        after_cvd: s.after_cvd,
        after_cdiff: s.after_cdiff,
        standalone: s.standalone,
        missing: s
            .missing(top)
            .into_iter()
            .map(|(file, requests)| MissingSign { file, requests })
            .collect(),
        window_secs: s.window_secs(),
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
