//! The terminal summary: what an operator reads first, in an SSH session on
//! the struggling machine. Plain text, no colour, under 100 columns, the
//! explanation on top and the evidence below it.

use std::fmt::Write as _;

use super::{Report, Row, human_bytes, mbit, pct, percent};
use crate::time::{format_clock, format_minute};

/// Renders the summary.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let off = r.utc_offset;
    let _ = writeln!(
        s,
        "cvdmirror analyze — {} lines, {} parsed, {} skipped",
        r.lines, r.parsed, r.malformed.count
    );
    if let (Some(a), Some(b)) = (r.first, r.last) {
        let _ = writeln!(
            s,
            "Span: {} to {} (UTC{}), {}-second buckets",
            format_minute(a, off),
            format_minute(b, off),
            r.utc_offset_text,
            r.bucket_secs
        );
    }
    s.push_str("\nWhat happened\n");
    for p in &r.explanation {
        let _ = writeln!(s, "  {}", wrap(p, 96, "  "));
    }
    cause(&mut s, r);
    s.push_str("\nTime stamps and rates\n");
    for p in &r.time.summary {
        let _ = writeln!(s, "  {}", wrap(p, 96, "  "));
    }

    s.push_str("\nEpisodes\n");
    if r.episodes.is_empty() {
        s.push_str("  none\n");
    }
    for e in &r.episodes {
        let _ = writeln!(
            s,
            "  {}–{}{}  {:>4} min  {:>8}  {:>5} of all bytes  peak {} at {}",
            format_clock(e.start, off),
            format_clock(e.end, off),
            if e.ongoing { "+" } else { "" },
            e.minutes,
            human_bytes(e.bytes),
            pct(e.share_percent),
            peak_word(r, e.peak_bits_per_sec),
            format_clock(e.peak_time, off)
        );
    }
    let w = r.bucket_secs as f64;
    let _ = writeln!(
        s,
        "  baseline {} (onset above {}, end at or below {})",
        mbit(r.baseline.level * 8.0 / w),
        mbit(r.baseline.onset_threshold * 8.0 / w),
        mbit(r.baseline.end_threshold * 8.0 / w)
    );

    s.push_str("\nTraffic by class\n");
    for c in &r.totals.classes {
        let _ = writeln!(
            s,
            "  {:<14} {:>10} requests  {:>9}  {:>5}",
            c.class.label(),
            c.requests,
            human_bytes(c.bytes),
            pct(percent(c.bytes, r.totals.bytes))
        );
    }
    let _ = writeln!(
        s,
        "  {:<14} {:>10} requests  {:>9}",
        "total",
        r.totals.requests,
        human_bytes(r.totals.bytes)
    );

    let f = &r.fallback;
    let _ = writeln!(
        s,
        "\nFallback chains (cdiff 404 → {})\n  {}{} clients, {} chains, {}",
        f.window_secs.map_or_else(
            || "the client's next whole download".to_owned(),
            |w| format!("whole download within {w} s")
        ),
        if f.at_least { "at least " } else { "" },
        f.clients,
        f.chains,
        human_bytes(f.bytes)
    );
    for p in &f.patches {
        let _ = writeln!(
            s,
            "  {:<28} → {:<14} {:>6} clients {:>6} downloads {:>9}",
            p.patch,
            p.file,
            p.clients,
            p.downloads,
            human_bytes(p.bytes)
        );
    }

    sign(&mut s, r);

    if !r.downloads.is_empty() {
        s.push_str("\nWhole-database downloads (200)\n");
        for d in &r.downloads {
            let full: Vec<String> = d.full_sizes.iter().map(|b| b.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:<16} {:>6} downloads, {:>5} aborted, {:>9} wasted; full size {}",
                d.file,
                d.downloads,
                d.aborted,
                human_bytes(d.wasted_bytes),
                full.join(" / ")
            );
        }
    }

    table(&mut s, "Top files", &r.top_files, r.totals.bytes);
    table(&mut s, "Top clients", &r.top_clients, r.totals.bytes);
    table(&mut s, "Top user agents", &r.top_agents, r.totals.bytes);
    table(&mut s, "Client versions", &r.top_versions, r.totals.bytes);

    s.push_str("\nStatus codes\n  ");
    let codes: Vec<String> = r
        .statuses
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    s.push_str(&codes.join("  "));
    s.push('\n');

    if r.malformed.count > 0 {
        let _ = writeln!(s, "\nSkipped lines: {}", r.malformed.count);
        for (reason, n) in &r.malformed.by_reason {
            let _ = writeln!(s, "  {n:>8}  {}", reason.describe());
        }
        for e in &r.malformed.examples {
            let _ = writeln!(
                s,
                "  {}:{}: {}: {}",
                e.input,
                e.line,
                e.reason.describe(),
                cut(&e.snippet, 60)
            );
        }
    }
    for i in r.inputs.iter().filter(|i| i.error.is_some()) {
        let _ = writeln!(
            s,
            "\nWarning: {} was cut short: {}",
            i.name,
            i.error.as_deref().unwrap_or_default()
        );
    }
    let ev: u64 = r.bounds.evicted.values().sum();
    if ev > 0 || r.bounds.coarsened || r.bounds.untracked_chains > 0 || r.bounds.dropped_streaks > 0
    {
        let _ = writeln!(
            s,
            "\nApproximate: {} keys evicted from top tables, buckets widened: {}, {} chains unattributed, {} 404 streaks dropped",
            ev, r.bounds.coarsened, r.bounds.untracked_chains, r.bounds.dropped_streaks
        );
    }
    s
}

/// A peak rate, marked when the log cannot support it.
pub(super) fn peak_word(r: &Report, bits: f64) -> String {
    use crate::stamps::Certainty;
    let m = mbit(bits);
    if r.time.above_capacity
        && r.time
            .link_capacity_bits_per_sec
            .is_some_and(|c| bits > c * 1.05)
    {
        format!("{m} (above the link)")
    } else if r.time.certainty == Certainty::Unknown {
        format!("≤ {m}")
    } else if r.time.certainty == Certainty::Estimated {
        format!("≈ {m}")
    } else {
        m
    }
}

/// The cause in figures, when a missing file started fallback chains.
fn cause(s: &mut String, r: &Report) {
    let Some(t) = &r.trigger else { return };
    let off = r.utc_offset;
    let _ = writeln!(
        s,
        "\nCause\n  {} missing {}–{}: {}{} clients, {} requests answered 404",
        t.file,
        format_clock(t.first, off),
        format_clock(t.last, off),
        if t.clients_at_least { "at least " } else { "" },
        t.clients,
        t.requests
    );
    if !t.fallback_file.is_empty() {
        let _ = writeln!(
            s,
            "  → {} clients downloaded {} instead: {} downloads, {} ({} of all bytes)",
            t.fallback_clients,
            t.fallback_file,
            t.chains,
            human_bytes(t.bytes),
            pct(t.share_percent)
        );
    }
    if let Some(m) = &t.mirror {
        let mut how = Vec::new();
        if let Some(p) = &m.newest_patch {
            how.push(format!("newest patch served {p}"));
        }
        if let Some((v, n)) = m.cvd_sign {
            how.push(format!("{n}× {}-{v}.cvd.sign after its CVD", m.db));
        }
        let _ = writeln!(
            s,
            "  meanwhile the mirror served {} {} ({})",
            m.db,
            m.version,
            how.join(", ")
        );
    }
    let mut tail = Vec::new();
    if let Some(at) = t.resolved {
        tail.push(format!("served from {}", format_clock(at, off)));
    }
    if let Some(at) = t.surge_start {
        tail.push(format!("traffic surged from {}", format_clock(at, off)));
    }
    if !tail.is_empty() {
        let _ = writeln!(s, "  {}", tail.join("; "));
    }
}

/// The `.sign` section, when any were asked for.
fn sign(s: &mut String, r: &Report) {
    let g = &r.sign;
    if g.requests == 0 {
        return;
    }
    let least = if g.at_least { "at least " } else { "" };
    let _ = writeln!(
        s,
        "\nSignatures (.sign, ClamAV 1.5)\n  {} requests, {}, {} answered 404; {least}{} clients, {} of them got a 404",
        g.requests,
        human_bytes(g.bytes),
        g.not_found,
        g.clients,
        g.clients_not_found
    );
    let _ = writeln!(
        s,
        "  {} after their CVD, {} after their cdiff (within {} s), {} on their own; {least}{} clients followed the 1.5 chain",
        g.after_cvd, g.after_cdiff, g.window_secs, g.standalone, g.chain_clients
    );
    for m in &g.missing {
        let _ = writeln!(s, "  missing {:<40} {:>8} requests", m.file, m.requests);
    }
}

fn table(s: &mut String, title: &str, rows: &[Row], total: u64) {
    let _ = writeln!(s, "\n{title}");
    for row in rows {
        let _ = writeln!(
            s,
            "  {:<60} {:>8} req {:>9} {:>5}{}",
            cut(&row.name, 60),
            row.requests,
            human_bytes(row.bytes),
            pct(percent(row.bytes, total)),
            if row.error > 0 { " (≈)" } else { "" }
        );
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Wraps a paragraph at `width` columns, indenting continuation lines.
fn wrap(p: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in p.split_whitespace() {
        let len = word.chars().count();
        if col > 0 && col + 1 + len > width {
            out.push('\n');
            out.push_str(indent);
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
    }
    out
}
