//! The two facts the operator of the 16:41 incident never had: what the
//! time stamps in his log meant (and so how full the link really was, and
//! how sure that figure is), and the trigger — the file the mirror did not
//! have, from when to when, how many clients, what it cost, and which
//! version the mirror served meanwhile.

use super::{Decided, EpisodeReport, Fallback, MirrorVersion, TimeReport, Trigger, mbit, percent};
use crate::aggregate::Analyzer;
use crate::stamps::{Certainty, Source, Stamp};
use crate::time::{format_clock, rfc3339};
use crate::timeline::Bucket;

/// What the stamps are taken to mean, and why.
pub(super) fn decide(a: &Analyzer) -> (Stamp, Decided) {
    if let Some(s) = a.options.logged_at.fixed() {
        return (s, Decided::Flag);
    }
    match a.stamps.detected() {
        Some((s, Source::RequestTimes)) => (s, Decided::RequestTimes),
        Some((s, Source::LogOrder)) => (s, Decided::LogOrder),
        None => (Stamp::Start, Decided::Default),
    }
}

/// The time-stamp section of the report.
pub(super) fn time_report(
    a: &Analyzer,
    stamp: Stamp,
    decided: Decided,
    dense: &[(i64, Bucket)],
    width: i64,
    offset: i32,
) -> TimeReport {
    let rate = |b: u64| b as f64 * 8.0 / width as f64;
    let (peak_time, peak) = dense
        .iter()
        .map(|(t, b)| (*t, b.total_bytes()))
        .max_by_key(|&(t, b)| (b, -t))
        .unwrap_or((0, 0));
    let naive = dense.iter().map(|(_, b)| b.naive_bytes).max().unwrap_or(0);
    let capacity = a.options.link_capacity.map(|c| c * 8.0);
    // A bucket's average may sit a little above the link's rate when
    // transfers are spread evenly over their durations; 5 % is that slack.
    let above = capacity.is_some_and(|c| rate(peak) > c * 1.05);
    let detected = a.stamps.detected().map(|d| d.0);
    let certainty = a.stamps.certainty(stamp);
    let ev = a.stamps.evidence();
    let mut summary = Vec::new();
    let how = match decided {
        Decided::Flag => "as given with --logged-at".to_owned(),
        Decided::RequestTimes => format!(
            "detected from request times: {} pairs of one client's consecutive requests fit only {} stamps ({} fit only the other reading)",
            ev.pairs_start.max(ev.pairs_end),
            stamp.word(),
            ev.pairs_start.min(ev.pairs_end)
        ),
        Decided::LogOrder => match stamp {
            Stamp::Start if ev.timed * 2 >= ev.lines => format!(
                "detected from the log's order: stamp plus request time never goes back, while {} stamps lag behind lines written before them",
                ev.stamp_regressions
            ),
            Stamp::Start => format!(
                "detected from the log's order: {} of {} large transfers are logged behind lines written before them, as a log stamped at arrival and written at completion shows them",
                ev.large_regressions, ev.large
            ),
            Stamp::End if ev.timed * 2 >= ev.lines => format!(
                "detected from the log's order: stamps never go back, while {} would if they marked arrivals",
                ev.completion_regressions
            ),
            Stamp::End => format!(
                "detected from the log's order: it is in time order although it holds {} large transfers (a log stamped at arrival is written at completion and would show them out of order)",
                ev.large
            ),
        },
        Decided::Default => {
            "the log does not tell (no request times, no large transfers out of order); arrival assumed, use --logged-at if you know better".to_owned()
        }
    };
    summary.push(format!(
        "Time stamps mark each request's {}: {how}.",
        stamp.word()
    ));
    if decided == Decided::Flag
        && let Some(d) = detected
        && d != stamp
    {
        summary.push(format!(
            "The log itself looks stamped at {}: check --logged-at.",
            d.word()
        ));
    }
    let names: Vec<(&str, Stamp)> = a
        .stamps
        .per_input()
        .zip(&a.inputs)
        .filter_map(|(e, i)| Some((i.name.as_str(), e.detected()?.0)))
        .collect();
    if names.iter().any(|(_, s)| *s != names[0].1) {
        let list: Vec<String> = names
            .iter()
            .map(|(n, s)| format!("{n}: {}", s.word()))
            .collect();
        summary.push(format!(
            "The inputs disagree ({}); all were read as {} stamps. Analyse them separately, or with --logged-at, to be sure.",
            list.join(", "),
            stamp.word()
        ));
    }
    let large_bytes = crate::report::human_bytes(ev.large_bytes);
    summary.push(match certainty {
        Certainty::Measured if ev.large == 0 => {
            "No transfer of 1 MiB or more: rates do not depend on durations.".to_owned()
        }
        Certainty::Measured => format!(
            "Request times are logged{}: each transfer's bytes are spread over its duration, sharing the link equally with the transfers it overlapped.",
            a.stamps
                .integer_unit()
                .map(|u| format!(" (integers read as {u})"))
                .unwrap_or_default()
        ),
        Certainty::Estimated => match stamp {
            Stamp::End => format!(
                "No request times: each large transfer ({large_bytes} in all) is spread from its client's previous request to its logged completion (the longest it can have taken), sharing the link with the others; rates are estimates."
            ),
            Stamp::Start => format!(
                "No request times: each large transfer ({large_bytes} in all) is spread from its stamp to the latest stamp written before it (the least it can have taken), sharing the link with the others; rates are estimates."
            ),
        },
        Certainty::Unknown => format!(
            "No request times, and the log does not show how long its large transfers ({large_bytes}) took: they are booked at their stamps, so rates per {width} s are upper bounds, not measurements."
        ),
    });
    let peak_word = format!(
        "Peak {} at {}",
        mbit(rate(peak)),
        format_clock(peak_time, offset)
    );
    let naive_differs = rate(naive) > rate(peak) * 1.2;
    let mut p = match certainty {
        Certainty::Measured => format!("{peak_word}."),
        Certainty::Estimated => format!("{peak_word} (estimated)."),
        Certainty::Unknown => {
            format!("{peak_word} at most, if every transfer took less than a bucket.")
        }
    };
    if naive_differs && certainty != Certainty::Unknown {
        p += &format!(
            " {} the same bytes would make {}{}.",
            if certainty == Certainty::Measured {
                "Spread evenly over each transfer's duration"
            } else {
                "Booked at their log stamps"
            },
            mbit(rate(naive)),
            match capacity {
                Some(c) if rate(naive) > c * 1.05 => {
                    format!(", more than the {} link carries", mbit(c))
                }
                _ => String::new(),
            }
        );
    }
    if let Some(c) = capacity {
        if above {
            p += &format!(
                " That is above the link's {} (--link-capacity): the log's timing cannot support it; the link was full, not faster.",
                mbit(c)
            );
        } else {
            p += &format!(" The link carries {}.", mbit(c));
        }
    }
    summary.push(p);
    TimeReport {
        stamps: stamp,
        decided_by: decided,
        detected,
        evidence: ev,
        integer_unit: a.stamps.integer_unit(),
        certainty,
        peak_bits_per_sec: rate(peak),
        peak_time,
        naive_peak_bits_per_sec: rate(naive),
        link_capacity_bits_per_sec: capacity,
        above_capacity: above,
        peak_supported: certainty != Certainty::Unknown && !above,
        summary,
    }
}

/// The trigger, when a missing file started fallback chains.
pub(super) fn trigger(
    a: &Analyzer,
    fallback: &Fallback,
    episodes: &[EpisodeReport],
    total: u64,
) -> Option<Trigger> {
    let (file_id, m) = a.triggers.costliest()?;
    let file = a.chains.name(file_id).to_owned();
    let db = a.chains.name(m.db).to_owned();
    let row = fallback
        .patches
        .iter()
        .filter(|p| p.patch == file)
        .max_by_key(|p| (p.clients, p.downloads));
    let (fallback_clients, fallback_file) =
        row.map_or((0, String::new()), |r| (r.clients, r.file.clone()));
    let newest = a
        .triggers
        .newest_patch(m.db, m.version.unwrap_or(u32::MAX), m.last);
    let cvd = a.triggers.cvd_between(m.db, m.first, m.last);
    let mirror = match (cvd, newest) {
        (None, None) => None,
        (c, n) => Some(MirrorVersion {
            db: db.clone(),
            version: c.map_or_else(|| n.map_or(0, |n| n.0), |c| c.0),
            newest_patch: n.map(|(v, _)| format!("{db}-{v}.cdiff")),
            cvd_sign: c,
        }),
    };
    let resolved = m
        .version
        .and_then(|v| a.triggers.patch_served(m.db, v))
        .map(|s| s.0)
        .filter(|&t| t >= m.first);
    let surge_start = episodes.iter().find(|e| e.end > m.first).map(|e| e.start);
    Some(Trigger {
        file,
        first: m.first,
        last: m.last,
        first_rfc3339: rfc3339(m.first),
        last_rfc3339: rfc3339(m.last),
        requests: m.requests,
        clients: m.clients(),
        clients_at_least: m.clients_at_least,
        chains: m.chains,
        fallback_clients,
        fallback_file,
        bytes: m.chain_bytes,
        share_percent: percent(m.chain_bytes, total),
        mirror,
        resolved,
        surge_start,
    })
}
