//! The plain-language explanation: first the cause (the file the mirror did
//! not have, from when, for how many clients, at what cost, and the version
//! it served meanwhile), then one paragraph per episode saying what filled
//! the link (a fallback herd, or which class of traffic), general
//! paragraphs when there was no surge, one about `.sign` files the mirror
//! did not have (ClamAV 1.5 clients asked for them), and how sure the
//! rates are.

use super::{EpisodeReport, TimeReport, Trigger, human_bytes, mbit, pct, percent};
use crate::aggregate::Analyzer;
use crate::classify::Class;
use crate::episodes::{self, Baseline};
use crate::time::{format_clock, format_minute, format_offset};

pub(super) fn explain_episode(
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
                .map_or((Class::Other as usize, 0), |(i, b)| (i, *b));
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

/// "N clients asked for `.sign` files the mirror did not have (...)", when
/// any did. These `404`s are not missing patches: no client falls back to a
/// whole download for them, but a FIPS-mode client cannot update its CVD.
fn missing_signs(a: &Analyzer) -> Option<String> {
    let s = &a.signs;
    let clients = s.missing_clients();
    if clients.is_empty() {
        return None;
    }
    let mut p = format!(
        "{}{} clients asked for `.sign` files the mirror did not have (ClamAV 1.5 clients; those in FIPS mode cannot update without them): {} requests",
        if clients.at_least() { "At least " } else { "" },
        clients.len(),
        s.not_found
    );
    if let Some((file, n)) = s.missing(1).into_iter().next() {
        p += &format!(", {n} of them for {file}");
    }
    p.push('.');
    Some(p)
}

/// What the explanation is written from.
pub(super) struct Context<'a> {
    pub episodes: &'a [EpisodeReport],
    pub base: &'a Baseline,
    pub width: i64,
    pub offset: i32,
    pub total: u64,
    pub span: Option<(i64, i64)>,
    pub trigger: Option<&'a Trigger>,
    pub time: &'a TimeReport,
}

/// "Cause: ..." — the trigger, dated apart from the surge.
pub(super) fn cause(t: &Trigger, offset: i32) -> String {
    let at = |x| format_clock(x, offset);
    let least = if t.clients_at_least { "at least " } else { "" };
    let mut p = format!(
        "Cause: the mirror did not have {} from {} to {} (first and last request for it, answered 404); {least}{} clients asked for it, {} times.",
        t.file,
        at(t.first),
        at(t.last),
        t.clients,
        t.requests
    );
    if !t.fallback_file.is_empty() {
        p += &format!(
            " {} of them downloaded {} in full instead: {} downloads, {}, {} of all bytes.",
            t.fallback_clients,
            t.fallback_file,
            t.chains,
            human_bytes(t.bytes),
            pct(t.share_percent)
        );
    }
    if let Some(m) = &t.mirror {
        let mut why = Vec::new();
        if let Some(n) = &m.newest_patch {
            why.push(format!("the newest patch it served was {n}"));
        }
        if let Some((v, n)) = m.cvd_sign {
            why.push(format!(
                "{n} ClamAV 1.5 clients asked for {}-{v}.cvd.sign right after downloading its CVD",
                m.db
            ));
        }
        p += &format!(
            " Meanwhile the mirror served {} version {} ({}).",
            m.db,
            m.version,
            why.join("; ")
        );
    }
    if let Some(r) = t.resolved {
        p += &format!(" It served {} from {}.", t.file, at(r));
    }
    if let Some(s) = t.surge_start {
        let lead = (s - t.first) / 60;
        p += &match lead {
            l if l > 0 => format!(
                " Traffic surged from {}, {l} min after the first 404.",
                at(s)
            ),
            l if l < 0 => format!(" Traffic was already high from {}, before it.", at(s)),
            _ => format!(" Traffic surged from {}, the same minute.", at(s)),
        };
    }
    p
}

pub(super) fn explain(a: &Analyzer, c: &Context<'_>) -> Vec<String> {
    let (eps, base, width) = (c.episodes, c.base, c.width);
    let mut out: Vec<String> = c.trigger.map(|t| cause(t, c.offset)).into_iter().collect();
    out.extend(eps.iter().map(|e| e.explanation.clone()));
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
    if let Some(p) = missing_signs(a) {
        out.push(p);
    }
    if !c.time.peak_supported
        && let Some(p) = c.time.summary.last()
    {
        out.push(p.clone());
    }
    if let (Some((lo, hi)), true) = (c.span, c.total > 0) {
        out.push(format!(
            "The logs cover {} to {} (UTC{}): {} requests, {}.",
            format_minute(lo, c.offset),
            format_minute(hi, c.offset),
            format_offset(c.offset),
            a.class_requests.iter().sum::<u64>(),
            human_bytes(c.total)
        ));
    }
    out
}
