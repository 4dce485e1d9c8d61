//! The lagging-mirror incident from `cvdmirror::analyze::generate` (a
//! shared 100 Mbit/s link, 61 MB downloads taking up to an hour, IPv4 and
//! IPv6 clients, ClamAV 1.5 clients fetching `.sign` files) written in every
//! dialect and stamped at arrival and at completion: with default options
//! the report must name the trigger, its minute, its clients and cost, find
//! every fallback chain, total the bytes exactly, tell what the stamps
//! mean, and never report a rate the link could not carry without saying
//! so. Property tests: reordering lines within a minute and adding
//! malformed lines never change the totals.

use std::sync::OnceLock;

use cvdmirror::analyze::generate::{self, Dialect, Incident, Request, Scenario};
use cvdmirror::analyze::stamps::{Certainty, Stamp};
use cvdmirror::analyze::{Analyzer, LoggedAt, Options, Report, report::Decided};
use proptest::prelude::*;

const LINK_BITS: f64 = 100e6;

fn incident() -> &'static Incident {
    static INC: OnceLock<Incident> = OnceLock::new();
    INC.get_or_init(|| generate::generate(&Scenario::incident(42, 1400)))
}

fn run(text: &str, options: Options) -> Report {
    let mut a = Analyzer::new(options);
    a.feed("access.log", std::io::Cursor::new(text.as_bytes().to_vec()))
        .unwrap();
    a.finish()
}

fn minute(t: i64) -> i64 {
    t.div_euclid(60)
}

/// What every dialect and stamp must conclude.
fn assert_truth(r: &Report, inc: &Incident, what: &str) {
    let t = &inc.truth;
    assert_eq!(r.malformed.count, 0, "{what}: {:?}", r.malformed.examples);
    assert_eq!(
        (r.totals.requests, r.totals.bytes),
        (t.requests, t.total_bytes),
        "{what}: totals"
    );
    let g = r
        .trigger
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no trigger"));
    assert_eq!(g.file, t.trigger_file, "{what}");
    assert_eq!(
        (minute(g.first), minute(g.last)),
        (minute(t.trigger_first), minute(t.trigger_last)),
        "{what}: trigger minutes"
    );
    assert_eq!(
        (g.clients as usize, g.requests),
        (t.trigger_clients, t.trigger_requests),
        "{what}: trigger clients and requests"
    );
    assert_eq!(
        (g.chains, g.bytes),
        (t.chains, t.chain_bytes),
        "{what}: cost"
    );
    assert_eq!(g.fallback_file, "daily.cvd");
    assert_eq!(g.fallback_clients as usize, t.fallback_clients, "{what}");
    assert_eq!(
        g.mirror.as_ref().map(|m| m.version),
        Some(t.mirror_version),
        "{what}: the version served meanwhile"
    );
    assert_eq!(g.resolved.map(minute), t.resolved.map(minute), "{what}");
    assert_eq!(
        (r.fallback.chains, r.fallback.clients as usize),
        (t.chains, t.fallback_clients),
        "{what}: chains"
    );
    let d = &r.downloads[0];
    assert_eq!(
        (d.file.as_str(), d.aborted),
        ("daily.cvd", t.aborted),
        "{what}"
    );
    assert_eq!(r.wasted_bytes, t.aborted_bytes, "{what}");
    assert!(
        r.explanation[0].starts_with(&format!(
            "Cause: the mirror did not have {} from ",
            t.trigger_file
        )),
        "{what}: {:?}",
        r.explanation
    );
}

#[test]
fn the_generated_incident_is_the_one_the_issue_describes() {
    let t = &incident().truth;
    assert!(t.longest_ms > 30 * 60 * 1000, "longest {} ms", t.longest_ms);
    assert!(t.chains > 800, "{t:?}");
    let peak = t.peak_bits_per_sec();
    assert!(
        peak > 0.95 * LINK_BITS && peak <= LINK_BITS * 1.001,
        "{peak}"
    );
    assert!(incident().requests.iter().any(|r| r.host.contains(':')));
}

#[test]
fn every_dialect_and_both_stamps_match_the_truth() {
    let inc = incident();
    for dialect in Dialect::ALL {
        for stamp in Stamp::BOTH {
            let what = format!("{} stamped at {}", dialect.name(), stamp.word());
            let text = generate::log(&inc.requests, dialect, stamp, |_| true);
            let r = run(&text, Options::default());
            assert_truth(&r, inc, &what);
            assert_eq!(r.time.stamps, stamp, "{what}: {:#?}", r.time);
            assert_ne!(r.time.decided_by, Decided::Default, "{what}");
            let json = matches!(dialect, Dialect::NginxJson | Dialect::Caddy);
            assert_eq!(r.json_lines == r.parsed, json, "{what}");
            match dialect {
                Dialect::ApacheT => assert_eq!(r.time.integer_unit, Some("seconds (Apache %T)")),
                Dialect::ApacheD => {
                    assert_eq!(r.time.integer_unit, Some("microseconds (Apache %D)"))
                }
                _ => assert_eq!(r.time.integer_unit, None, "{what}"),
            }
            let want = if dialect.has_request_time() {
                Certainty::Measured
            } else {
                Certainty::Estimated
            };
            assert_eq!(r.time.certainty, want, "{what}");
            // The link carried at most 100 Mbit/s; spread over their
            // durations (logged or inferred), the bytes say so too.
            let peak = r.time.peak_bits_per_sec;
            assert!(
                peak <= LINK_BITS * 1.05,
                "{what}: peak {peak} (truth {})\n{:#?}",
                inc.truth.peak_bits_per_sec(),
                r.time
            );
            assert!(r.time.peak_supported, "{what}");
            println!(
                "{what}: peak {:.1} Mbit/s (naive {:.1}), detected by {:?}",
                peak / 1e6,
                r.time.naive_peak_bits_per_sec / 1e6,
                r.time.decided_by
            );
        }
    }
}

#[test]
fn nginx_without_request_times_the_issues_case() {
    // Completion stamps, no request time: what the issue's user had.
    let inc = incident();
    let text = generate::log(&inc.requests, Dialect::Nginx, Stamp::End, |_| true);
    let capacity = Options {
        link_capacity: Some(LINK_BITS / 8.0),
        ..Options::default()
    };
    let r = run(&text, capacity.clone());
    assert_truth(&r, inc, "nginx");
    assert_eq!(
        (r.time.stamps, r.time.decided_by),
        (Stamp::End, Decided::LogOrder)
    );
    assert!(!r.time.above_capacity, "{:#?}", r.time);
    // Booked where they were logged, the same bytes would make an
    // impossible peak; the report says so instead of claiming it.
    assert!(
        r.time.naive_peak_bits_per_sec > LINK_BITS * 1.3,
        "{:#?}",
        r.time
    );
    assert!(
        r.time
            .summary
            .iter()
            .any(|s| s.contains("more than the 100 Mbit/s link carries")),
        "{:#?}",
        r.time.summary
    );
    // A fixed 10-minute window (the old default) misses most chains.
    let windowed = run(
        &text,
        Options {
            chain_window_secs: Some(600),
            ..capacity
        },
    );
    assert!(
        windowed.fallback.chains * 2 < inc.truth.chains,
        "{} of {}",
        windowed.fallback.chains,
        inc.truth.chains
    );
    let text = analyze_text(&r);
    assert!(
        text.contains("Cause\n  daily-27654.cdiff missing "),
        "{text}"
    );
    assert!(
        text.contains("Time stamps mark each request's completion"),
        "{text}"
    );
}

fn analyze_text(r: &Report) -> String {
    cvdmirror::analyze::report::text::render(r)
}

#[test]
fn an_unsupported_peak_is_flagged_not_claimed() {
    // Arrival stamps, no request times, and lines sorted by stamp (as no
    // server writes them): nothing tells how long a download took.
    let inc = incident();
    let mut sorted: Vec<&Request> = inc.requests.iter().collect();
    sorted.sort_by_key(|r| r.t);
    let text: String = sorted
        .iter()
        .map(|r| generate::line(r, Dialect::Apache, Stamp::Start))
        .collect();
    let r = run(
        &text,
        Options {
            logged_at: LoggedAt::Start,
            link_capacity: Some(LINK_BITS / 8.0),
            ..Options::default()
        },
    );
    assert_eq!(r.time.certainty, Certainty::Unknown, "{:#?}", r.time);
    assert!(r.time.above_capacity && !r.time.peak_supported);
    let said = r
        .explanation
        .iter()
        .find(|p| p.contains("--link-capacity"))
        .unwrap_or_else(|| panic!("{:#?}", r.explanation));
    assert!(said.contains("cannot support it"), "{said}");
    let text = analyze_text(&r);
    assert!(text.contains("(above the link)"), "{text}");
    // The chains and the trigger do not depend on it.
    assert_eq!(r.fallback.chains, inc.truth.chains);
}

/// A smaller incident for the property tests (each case analyses it).
fn small() -> &'static Incident {
    static INC: OnceLock<Incident> = OnceLock::new();
    INC.get_or_init(|| {
        let mut s = Scenario::incident(7, 120);
        s.end = s.resync + 1800;
        generate::generate(&s)
    })
}

/// What no reordering and no junk may change.
fn totals(r: &Report) -> impl PartialEq + std::fmt::Debug {
    let classes: Vec<(u64, u64)> = r
        .totals
        .classes
        .iter()
        .map(|c| (c.requests, c.bytes))
        .collect();
    let trigger = r.trigger.as_ref().map(|t| {
        (
            t.file.clone(),
            minute(t.first),
            minute(t.last),
            t.clients,
            t.requests,
        )
    });
    (
        r.totals.requests,
        r.totals.bytes,
        classes,
        r.statuses.clone(),
        trigger,
        r.wasted_bytes,
    )
}

fn lines_of(dialect: Dialect, stamp: Stamp) -> Vec<String> {
    generate::write_order(&small().requests, |_| true)
        .into_iter()
        .map(|r| generate::line(r, dialect, stamp))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn reordering_within_a_minute_never_changes_the_totals(
        d in 0usize..Dialect::ALL.len(),
        end in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (dialect, stamp) = (Dialect::ALL[d], if end { Stamp::End } else { Stamp::Start });
        let lines = lines_of(dialect, stamp);
        let base = run(&lines.concat(), Options::default());
        // Shuffle each run of lines stamped in the same minute.
        let stamp_of = |l: &str| cvdmirror::analyze::parse::parse_line(l.as_bytes()).map(|e| minute(e.time)).ok();
        let mut rng = generate::Rng(seed);
        let mut shuffled = Vec::with_capacity(lines.len());
        let mut i = 0;
        while i < lines.len() {
            let m = stamp_of(&lines[i]);
            let mut j = i + 1;
            while j < lines.len() && stamp_of(&lines[j]) == m {
                j += 1;
            }
            let mut run_of: Vec<&String> = lines[i..j].iter().collect();
            for k in (1..run_of.len()).rev() {
                run_of.swap(k, rng.range(0, k as u64 + 1) as usize);
            }
            shuffled.extend(run_of);
            i = j;
        }
        let text: String = shuffled.into_iter().map(String::as_str).collect();
        let r = run(&text, Options::default());
        prop_assert_eq!(totals(&r), totals(&base));
    }

    #[test]
    fn malformed_lines_never_change_the_totals(
        d in 0usize..Dialect::ALL.len(),
        junk in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..5, any::<u64>()), 1..40),
    ) {
        let dialect = Dialect::ALL[d];
        let lines = lines_of(dialect, dialect.default_stamp());
        let base = run(&lines.concat(), Options::default());
        let mut out: Vec<String> = lines.clone();
        for (at, kind, x) in &junk {
            let donor = &lines[at.index(lines.len())];
            let bad = match kind {
                0 => "garbage in, garbage out".to_owned(),
                1 => donor[..donor.len() / 3].to_owned(),
                2 => format!("{{\"status\":{x},\"remote_addr\":"),
                3 => donor.replacen("HTTP/1.1\" ", "HTTP/1.1\" 9", 1).replacen("\"status\":", "\"status\":9", 1),
                _ => format!("{}-{x}", "\u{fffd}".repeat((x % 7) as usize)),
            };
            let bad = bad.replace('\n', " ");
            out.insert(at.index(out.len() + 1), format!("{bad}\n"));
        }
        let r = run(&out.concat(), Options::default());
        prop_assert_eq!(totals(&r), totals(&base));
        prop_assert_eq!(r.malformed.count as usize, junk.len());
    }
}
