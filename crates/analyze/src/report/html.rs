//! The HTML report: one self-contained file (inline CSS and SVG, no script,
//! no external reference) that an operator can mail to a colleague or attach
//! to a ticket and that still opens in ten years.

use std::fmt::Write as _;

use super::svg::{self, COLOURS, Chart};
use super::{Report, Row, human_bytes, pct, percent};
use crate::classify::Class;
use crate::time::{format_clock, format_minute};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%;font-size:13px}td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.expl p{font-size:1.1em;background:#fff8e1;padding:.6em;border-left:4px solid #d62728}\
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}code{font-size:12px}";

/// Escapes text for HTML, and defuses `://` so that no text from a log can
/// ever read as a link to somewhere else.
pub fn escape(s: &str) -> String {
    crate::html::escape(s).replace("://", "&#58;//")
}

/// Renders the whole page.
pub fn render(r: &Report) -> String {
    let off = r.utc_offset;
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cvdmirror traffic analysis</title><style>{STYLE}</style></head><body>"
    );
    s.push_str("<h1>cvdmirror traffic analysis</h1>");
    if let (Some(a), Some(b)) = (r.first, r.last) {
        let _ = write!(
            s,
            "<p>{} to {} (UTC{}), {} lines read, {} parsed, {} skipped, {}-second buckets.</p>",
            format_minute(a, off),
            format_minute(b, off),
            escape(&r.utc_offset_text),
            r.lines,
            r.parsed,
            r.malformed.count,
            r.bucket_secs
        );
    }
    s.push_str("<section class=\"expl\"><h2>What happened</h2>");
    for p in &r.explanation {
        let _ = write!(s, "<p>{}</p>", escape(p));
    }
    s.push_str("</section>");
    cause(&mut s, r);
    s.push_str("<h2>Time stamps and rates</h2>");
    for p in &r.time.summary {
        let _ = write!(s, "<p>{}</p>", escape(p));
    }

    charts(&mut s, r);
    episodes(&mut s, r);

    let f = &r.fallback;
    let _ = write!(
        s,
        "<h2>Fallback chains</h2><p>A client that gets <code>404</code> for a patch and then downloads the whole database {}. {}{} clients, {} chains, {}.</p>",
        f.window_secs.map_or_else(
            || "as its next request for that database, however long the download took".to_owned(),
            |w| format!("within {w} s")
        ),
        if f.at_least { "At least " } else { "" },
        f.clients,
        f.chains,
        escape(&human_bytes(f.bytes))
    );
    s.push_str("<table><tr><th>missing patch</th><th>then downloaded</th><th class=n>clients</th><th class=n>downloads</th><th class=n>bytes</th></tr>");
    for p in &f.patches {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            escape(&p.patch),
            escape(&p.file),
            p.clients,
            p.downloads,
            human_bytes(p.bytes)
        );
    }
    s.push_str("</table>");
    if !f.top_clients.is_empty() {
        s.push_str("<table><tr><th>client</th><th class=n>chains</th><th class=n>bytes</th></tr>");
        for (c, n, b) in &f.top_clients {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=n>{n}</td><td class=n>{}</td></tr>",
                escape(c),
                human_bytes(*b)
            );
        }
        s.push_str("</table>");
    }

    sign(&mut s, r);

    s.push_str("<h2>Whole-database downloads</h2><table><tr><th>file</th><th class=n>downloads</th><th class=n>aborted</th><th class=n>wasted</th><th class=n>full size</th></tr>");
    for d in &r.downloads {
        let full: Vec<String> = d.full_sizes.iter().map(u64::to_string).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            escape(&d.file),
            d.downloads,
            d.aborted,
            human_bytes(d.wasted_bytes),
            full.join(" / ")
        );
    }
    s.push_str("</table>");

    s.push_str("<h2>Traffic by class</h2><table><tr><th>class</th><th class=n>requests</th><th class=n>bytes</th><th class=n>share</th></tr>");
    for c in &r.totals.classes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            c.class.label(),
            c.requests,
            human_bytes(c.bytes),
            pct(percent(c.bytes, r.totals.bytes))
        );
    }
    s.push_str("</table>");
    table(&mut s, "Top files", &r.top_files, r.totals.bytes);
    table(&mut s, "Top clients", &r.top_clients, r.totals.bytes);
    table(
        &mut s,
        "Top user agents (UUID removed)",
        &r.top_agents,
        r.totals.bytes,
    );
    table(&mut s, "Client versions", &r.top_versions, r.totals.bytes);

    s.push_str("<h2>Status codes</h2><table><tr><th>status</th><th class=n>requests</th></tr>");
    for (c, n) in &r.statuses {
        let _ = write!(s, "<tr><td>{c}</td><td class=n>{n}</td></tr>");
    }
    s.push_str("</table>");

    let _ = write!(s, "<h2>Skipped lines: {}</h2>", r.malformed.count);
    if r.malformed.count > 0 {
        s.push_str("<table><tr><th>where</th><th>why</th><th>line starts</th></tr>");
        for e in &r.malformed.examples {
            let _ = write!(
                s,
                "<tr><td>{}:{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&e.input),
                e.line,
                escape(e.reason.describe()),
                escape(&e.snippet)
            );
        }
        s.push_str("</table>");
    }
    let ev: u64 = r.bounds.evicted.values().sum();
    let _ = write!(
        s,
        "<h2>Method</h2><p>Bytes are spread over each transfer's duration when the log records one, else over the duration the log implies (see Time stamps). Baseline: 25th percentile of bytes per bucket; onset: {} consecutive buckets above max(baseline + 6σ, 3× baseline, minimum rate); end: {} consecutive buckets at or below the halfway mark. Top tables are bounded (space-saving, {} keys evicted; rows marked ≈ may be undercounted). Buckets widened to fit: {}.</p>",
        crate::episodes::ONSET_RUN,
        crate::episodes::QUIET_RUN,
        ev,
        if r.bounds.coarsened { "yes" } else { "no" }
    );
    s.push_str("</body></html>\n");
    s
}

/// The trigger as a table, when a missing file started fallback chains.
fn cause(s: &mut String, r: &Report) {
    let Some(t) = &r.trigger else { return };
    let off = r.utc_offset;
    let row = |s: &mut String, k: &str, v: String| {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    };
    s.push_str("<h2>Cause</h2><table>");
    row(s, "missing file", t.file.clone());
    row(
        s,
        "first and last request (404)",
        format!(
            "{} – {}",
            format_minute(t.first, off),
            format_clock(t.last, off)
        ),
    );
    row(
        s,
        "clients, requests",
        format!(
            "{}{}, {}",
            if t.clients_at_least { "≥ " } else { "" },
            t.clients,
            t.requests
        ),
    );
    if !t.fallback_file.is_empty() {
        row(
            s,
            "what it cost",
            format!(
                "{} clients downloaded {} instead: {} downloads, {} ({})",
                t.fallback_clients,
                t.fallback_file,
                t.chains,
                human_bytes(t.bytes),
                pct(t.share_percent)
            ),
        );
    }
    if let Some(m) = &t.mirror {
        row(
            s,
            "version served meanwhile",
            format!("{} {}", m.db, m.version),
        );
    }
    if let Some(at) = t.resolved {
        row(s, "served again from", format_minute(at, off));
    }
    if let Some(at) = t.surge_start {
        row(s, "traffic surged from", format_minute(at, off));
    }
    s.push_str("</table>");
}

/// The `.sign` section: always present, so a reader knows it was looked for.
fn sign(s: &mut String, r: &Report) {
    let g = &r.sign;
    let least = if g.at_least { "at least " } else { "" };
    let _ = write!(
        s,
        "<h2>Signatures (.sign)</h2><p>Detached signatures ClamAV 1.5 clients fetch after a CVD (<code>daily-&lt;version&gt;.cvd.sign</code>) or a patch (<code>daily-N.cdiff.sign</code>). A <code>404</code> is harmless to most clients and never a missing patch, but a client in FIPS mode cannot update its CVD without one. {} requests, {}, {} answered <code>404</code>; {least}{} clients, {} of them got a <code>404</code>; {} requests right after their CVD and {} after their patch (within {} s), {} on their own; {least}{} clients followed the 1.5 chain.</p>",
        g.requests,
        escape(&human_bytes(g.bytes)),
        g.not_found,
        g.clients,
        g.clients_not_found,
        g.after_cvd,
        g.after_cdiff,
        g.window_secs,
        g.standalone,
        g.chain_clients
    );
    if !g.missing.is_empty() {
        s.push_str("<table><tr><th>missing .sign</th><th class=n>404 answers</th></tr>");
        for m in &g.missing {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=n>{}</td></tr>",
                escape(&m.file),
                m.requests
            );
        }
        s.push_str("</table>");
    }
}

fn charts(s: &mut String, r: &Report) {
    let times: Vec<i64> = r.timeline.iter().map(|p| p.start).collect();
    let w = r.bucket_secs as f64;
    let rate: Vec<[f64; Class::COUNT]> = r
        .timeline
        .iter()
        .map(|p| p.counts.bytes.map(|b| b as f64 * 8.0 / w / 1e6))
        .collect();
    let reqs: Vec<[f64; Class::COUNT]> = r
        .timeline
        .iter()
        .map(|p| p.counts.requests.map(|n| n as f64))
        .collect();
    let shaded: Vec<(i64, i64)> = r.episodes.iter().map(|e| (e.start, e.end)).collect();
    let base = r.baseline.onset_threshold * 8.0 / w / 1e6;
    s.push_str("<h2>Timeline</h2><p class=key>");
    for c in Class::ALL {
        let _ = write!(
            s,
            "<span style=\"background:{}\"></span>{}",
            COLOURS[c as usize],
            c.label()
        );
    }
    s.push_str("<span style=\"background:#fff3b0\"></span>episode</p>");
    let _ = write!(
        s,
        "<p>Bandwidth ({}):</p>",
        escape(&format!(
            "Mbit/s averaged per {}-second bucket",
            r.bucket_secs
        ))
    );
    s.push_str(&svg::stacked(&Chart {
        title: "Bandwidth by class",
        unit: "Mbit/s",
        times: &times,
        values: &rate,
        width_secs: r.bucket_secs,
        shaded: &shaded,
        lines: &[(base, "onset threshold")],
        offset: r.utc_offset,
    }));
    let _ = write!(s, "<p>Requests per {}-second bucket:</p>", r.bucket_secs);
    s.push_str(&svg::stacked(&Chart {
        title: "Requests by class",
        unit: "",
        times: &times,
        values: &reqs,
        width_secs: r.bucket_secs,
        shaded: &shaded,
        lines: &[],
        offset: r.utc_offset,
    }));
}

fn episodes(s: &mut String, r: &Report) {
    let off = r.utc_offset;
    s.push_str("<h2>Episodes</h2>");
    if r.episodes.is_empty() {
        s.push_str("<p>None: traffic stayed within normal bounds.</p>");
        return;
    }
    s.push_str("<table><tr><th>from</th><th>to</th><th class=n>minutes</th><th class=n>bytes</th><th class=n>share</th><th class=n>peak</th><th>fallback herd</th></tr>");
    for e in &r.episodes {
        let herd = e.fallback.as_ref().map_or(String::from("—"), |f| {
            format!(
                "{} clients: {} → {}, {} downloads, {} aborted",
                f.clients, f.patch, f.file, f.downloads, f.aborted
            )
        });
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{} at {}</td><td>{}</td></tr>",
            format_clock(e.start, off),
            format_clock(e.end, off),
            if e.ongoing { " (log ends)" } else { "" },
            e.minutes,
            human_bytes(e.bytes),
            pct(e.share_percent),
            escape(&super::text::peak_word(r, e.peak_bits_per_sec)),
            format_clock(e.peak_time, off),
            escape(&herd)
        );
    }
    s.push_str("</table>");
}

fn table(s: &mut String, title: &str, rows: &[Row], total: u64) {
    let _ = write!(
        s,
        "<h2>{}</h2><table><tr><th>name</th><th class=n>requests</th><th class=n>bytes</th><th class=n>share</th></tr>",
        escape(title)
    );
    for row in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}{}</td><td class=n>{}</td></tr>",
            escape(&row.name),
            row.requests,
            human_bytes(row.bytes),
            if row.error > 0 { " ≈" } else { "" },
            pct(percent(row.bytes, total))
        );
    }
    s.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_is_escaped_and_never_a_link() {
        assert_eq!(
            escape("<b>http://x/'a'&"),
            "&lt;b&gt;http&#58;//x/&#39;a&#39;&amp;"
        );
    }
}
