//! Integration tests of `cvdmirror analyze`: the seed incident replayed as
//! cvdmirror, Apache and nginx logs (one gzipped, one split across files)
//! must be explained correctly and exactly; hostile input is skipped and
//! counted, never a panic; a 2-million-line stream stays inside the bounded
//! tables.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on broken fixtures"
)]

#[path = "analyze/generator.rs"]
mod generator;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cvdmirror::analyze::{
    self, AnalyzeArgs, Analyzer, Limits, LoggedAt, Options, Report, parse::parse_line,
};
use generator::{Dialect, FULL, Incident, ONSET, RESYNC};
use proptest::prelude::*;

const CLIENTS: usize = 900;

fn args(logs: &[&Path], dir: &Path) -> AnalyzeArgs {
    AnalyzeArgs {
        logs: logs.iter().map(|p| p.display().to_string()).collect(),
        html: dir.join("report.html"),
        no_html: false,
        json: Some(dir.join("report.json")),
        since: None,
        until: None,
        bucket: 60,
        chain_window: 600,
        min_rate: cvdmirror::shape::Rate::from_bytes_per_sec(131_072).unwrap(),
        logged_at: LoggedAt::Start,
        utc_offset: None,
        top: 10,
    }
}

fn write(dir: &Path, name: &str, text: &str, gzip: bool) -> PathBuf {
    let path = dir.join(name);
    let bytes = if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    } else {
        text.as_bytes().to_vec()
    };
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What every dialect must conclude about the incident.
fn assert_explains(r: &Report, inc: &Incident, what: &str) {
    assert_eq!(r.malformed.count, 0, "{what}: {:?}", r.malformed.examples);
    assert_eq!(r.totals.bytes, inc.total_bytes, "{what}: total bytes");
    assert_eq!(r.episodes.len(), 1, "{what}: episodes {:#?}", r.episodes);
    let e = &r.episodes[0];
    assert!(
        (e.start - ONSET).abs() <= 60,
        "{what}: onset {}",
        e.start_rfc3339
    );
    assert!(
        (e.end - RESYNC).abs() <= 5 * 60,
        "{what}: end {}",
        e.end_rfc3339
    );
    assert!(!e.ongoing);
    let f = e.fallback.as_ref().expect("the herd is found");
    assert_eq!(
        (f.patch.as_str(), f.file.as_str()),
        ("daily-27654.cdiff", "daily.cvd")
    );
    assert_eq!(
        f.clients as usize, inc.fallback_clients,
        "{what}: fallback clients in the episode"
    );
    assert_eq!(
        f.downloads as usize, inc.chains,
        "{what}: downloads in the episode"
    );
    assert_eq!(f.aborted as usize, inc.aborted, "{what}: aborted");
    assert_eq!(r.fallback.clients as usize, inc.fallback_clients);
    assert_eq!(r.fallback.chains as usize, inc.chains);
    assert!(!r.fallback.at_least);
    let expl = &r.explanation[0];
    assert!(expl.starts_with("From "), "{expl}");
    assert!(
        expl.contains(&format!(
            "{} clients requested daily-27654.cdiff, got 404 and then downloaded daily.cvd in full",
            inc.fallback_clients
        )),
        "{what}: {expl}"
    );
    let files: Vec<&str> = r
        .top_files
        .iter()
        .take(2)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(files, ["daily.cvd", "daily-27654.cdiff"], "{what}");
    let d = &r.downloads[0];
    assert_eq!(d.file, "daily.cvd");
    assert_eq!(d.full_sizes, [FULL]);
    assert_eq!(d.aborted as usize, inc.aborted);
    assert_eq!(r.wasted_bytes, inc.aborted_bytes);
    assert!(r.top_versions.iter().any(|v| v.name == "ClamAV/1.4.6"));
    assert!(r.top_agents.iter().all(|a| !a.name.contains("UUID")));
}

fn assert_outputs(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );
    assert!(!html.contains("<script") && !html.contains("<link"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        json["episodes"][0]["fallback"]["patch"],
        "daily-27654.cdiff"
    );
    assert!(json["timeline"].as_array().unwrap().len() > 300);
}

#[test]
fn cvdmirror_log_explains_the_incident() {
    let inc = generator::incident(1, CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "access.log",
        &generator::log(&inc, Dialect::Cvdmirror, |_| true),
        false,
    );
    let a = args(&[&log], dir.path());
    analyze::run(a.clone()).unwrap();
    let r = analyze::analyze(&a).unwrap();
    assert_explains(&r, &inc, "cvdmirror");
    assert_outputs(dir.path());
    let summary = analyze::report::text::render(&r);
    assert!(summary.contains("From 16:41,"), "{summary}");
    println!("{summary}");
}

#[test]
fn apache_log_with_dashes_and_an_offset_explains_the_incident() {
    let inc = generator::incident(2, CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let text = generator::log(&inc, Dialect::Apache, |_| true);
    assert!(text.contains("+0200] ") && text.contains(" 304 - "));
    let log = write(dir.path(), "access_log", &text, false);
    let r = analyze::analyze(&args(&[&log], dir.path())).unwrap();
    assert_explains(&r, &inc, "apache");
    assert_eq!(r.utc_offset, 7200, "times are shown in the log's own zone");
    assert!(
        r.explanation[0].starts_with("From 18:41,"),
        "{}",
        r.explanation[0]
    );
}

#[test]
fn gzipped_nginx_log_explains_the_incident() {
    let inc = generator::incident(3, CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    // Rotated and compressed, without a .gz name: detected by magic bytes.
    let log = write(
        dir.path(),
        "access.log.1",
        &generator::log(&inc, Dialect::Nginx, |_| true),
        true,
    );
    let mut a = args(&[&log], dir.path());
    a.logged_at = LoggedAt::End;
    let r = analyze::analyze(&a).unwrap();
    assert_explains(&r, &inc, "nginx");
}

#[test]
fn three_servers_in_three_dialects_merge_by_time() {
    let inc = generator::incident(4, CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let pick = |n: u64| move |r: &generator::Request| fnv(&r.host) % 3 == n;
    let a = write(
        dir.path(),
        "a.log",
        &generator::log(&inc, Dialect::Cvdmirror, pick(0)),
        false,
    );
    let b = write(
        dir.path(),
        "b.log",
        &generator::log(&inc, Dialect::Apache, pick(1)),
        true,
    );
    let c = write(
        dir.path(),
        "c.log",
        &generator::log(&inc, Dialect::Nginx, pick(2)),
        false,
    );
    let mut args = args(&[&a, &b, &c], dir.path());
    args.utc_offset = Some(0);
    let r = analyze::analyze(&args).unwrap();
    assert_eq!(r.inputs.len(), 3);
    assert_explains(&r, &inc, "three servers");
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn since_and_until_cut_the_window() {
    let inc = generator::incident(5, 300);
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "access.log",
        &generator::log(&inc, Dialect::Cvdmirror, |_| true),
        false,
    );
    let mut a = args(&[&log], dir.path());
    a.since = Some(RESYNC + 600);
    let r = analyze::analyze(&a).unwrap();
    assert!(r.episodes.is_empty());
    assert_eq!(r.fallback.chains, 0);
    assert!(r.first.unwrap() >= RESYNC + 600);
    a.until = Some(RESYNC + 300);
    assert!(analyze::analyze(&a).is_err(), "--since after --until");
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let inc = generator::incident(6, 50);
    let good = generator::log(&inc, Dialect::Cvdmirror, |_| true);
    let lines: Vec<&str> = good.lines().collect();
    let mut text = Vec::new();
    let mut bad = 0;
    let mut rng = generator::Rng(99);
    for (i, l) in lines.iter().enumerate() {
        text.extend_from_slice(l.as_bytes());
        text.push(b'\n');
        if i % 50 == 7 {
            bad += 1;
            match i % 4 {
                0 => text.extend_from_slice(b"garbage in, garbage out"),
                1 => text.extend_from_slice(&l.as_bytes()[..l.len() / 2]),
                2 => (0..300).for_each(|_| text.push(rng.next_u64() as u8 | 1)),
                _ => text.extend(std::iter::repeat_n(b'A', 3 << 20)),
            }
            // Binary may hold its own newlines: count what the reader sees.
            text.push(b'\n');
        }
    }
    let newlines_in_binary = text.iter().filter(|&&b| b == b'\n').count() - lines.len() - bad;
    let mut analyzer = Analyzer::new(Options::default());
    analyzer.feed("mixed", std::io::Cursor::new(text)).unwrap();
    let r = analyzer.finish();
    assert_eq!(r.parsed as usize, lines.len());
    assert_eq!(r.malformed.count as usize, bad + newlines_in_binary);
    assert!(r.malformed.examples.len() >= 5);
    assert_eq!(
        r.malformed.examples[0].line, 9,
        "line numbers are 1-based and count skipped lines"
    );
    assert!(
        r.malformed
            .by_reason
            .iter()
            .any(|(why, _)| why.describe() == "line too long")
    );
    let html = analyze::report::html::render(&r);
    assert!(html.contains("Skipped lines"));
}

#[test]
fn exit_is_an_error_only_when_nothing_could_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.log", "not a log\n\x00\x01\x02\n", false);
    let err = analyze::analyze(&args(&[&junk], dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no line of") && err.contains("junk.log:1"),
        "{err}"
    );
    let missing = dir.path().join("missing.log");
    let err = format!(
        "{:#}",
        analyze::analyze(&args(&[&missing], dir.path())).unwrap_err()
    );
    assert!(
        err.contains("cannot read") && err.contains("missing.log"),
        "{err}"
    );
    let empty = write(dir.path(), "empty.log", "", false);
    assert!(analyze::analyze(&args(&[&empty], dir.path())).is_err());
    // A truncated gzip still yields what was readable.
    let inc = generator::incident(7, 40);
    let gz = write(
        dir.path(),
        "cut.gz",
        &generator::log(&inc, Dialect::Cvdmirror, |_| true),
        true,
    );
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let r = analyze::analyze(&args(&[&gz], dir.path())).unwrap();
    assert!(r.parsed > 0 && r.inputs[0].error.is_some());
}

/// Writes random but well-formed lines on the fly: a stream no file holds.
struct Flood {
    rng: generator::Rng,
    left: u64,
    t: i64,
    pending: Vec<u8>,
    at: usize,
}

impl Read for Flood {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            if self.left == 0 {
                return Ok(0);
            }
            self.pending.clear();
            self.at = 0;
            for _ in 0..self.left.min(1000) {
                self.left -= 1;
                self.t += (self.rng.next_u64() % 3) as i64;
                let r = self.rng.next_u64();
                let ip = r as u32;
                let (path, status, bytes) = match r >> 61 {
                    0 | 1 => (format!("/daily-{}.cdiff", r >> 40 & 0xffff), 404, 0),
                    2 => ("/daily.cvd".to_string(), 200, r >> 20 & 0x3ff_ffff),
                    3 => (format!("/file-{}", r >> 32 & 0xfffff), 200, r & 0xffff),
                    _ => ("/daily.cvd".to_string(), 304, 0),
                };
                let ua = format!(
                    "ClamAV/{}.{} (OS: x, UUID: {:x})",
                    r >> 50 & 0xff,
                    r >> 44 & 0x3f,
                    r >> 8
                );
                let line = generator::line(
                    &generator::Request {
                        t: self.t,
                        host: format!(
                            "{}.{}.{}.{}",
                            ip >> 24,
                            ip >> 16 & 255,
                            ip >> 8 & 255,
                            ip & 255
                        ),
                        path,
                        status,
                        bytes,
                        ua,
                        dur_ms: r & 0x3ffff,
                    },
                    Dialect::Cvdmirror,
                );
                self.pending.extend_from_slice(line.as_bytes());
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The same bound check at a size a debug build runs in seconds.
#[test]
fn a_flood_of_distinct_keys_stays_inside_the_bounds() {
    flood_stays_inside_the_bounds(4 * 60_000);
}

fn flood_stays_inside_the_bounds(lines: u64) {
    let limits = Limits {
        buckets: 2000,
        top_capacity: 200,
        pending_streaks: 20_000,
        fallback_clients: 5_000,
    };
    let mut analyzer = Analyzer::new(Options {
        limits,
        ..Options::default()
    });
    for part in 0..4 {
        let flood = Flood {
            rng: generator::Rng(part),
            left: lines / 4,
            t: generator::START + part as i64 * 100_000,
            pending: Vec::new(),
            at: 0,
        };
        analyzer.feed("flood", flood).unwrap();
        let s = analyzer.table_sizes();
        for (name, (len, cap)) in [
            ("buckets", s.buckets),
            ("clients", s.clients),
            ("agents", s.agents),
            ("versions", s.versions),
            ("files", s.files),
            ("pending", s.pending_streaks),
            ("fallback clients", s.fallback_clients),
            ("sized files", s.sized_files),
        ] {
            assert!(len <= cap, "{name}: {len} > {cap}");
        }
        assert!(s.clients.0 > 0 && s.pending_streaks.0 > 0);
    }
    assert_eq!(analyzer.parsed(), lines);
    let r = analyzer.finish();
    assert_eq!(r.totals.requests, lines);
    assert!(
        r.bounds.evicted["clients"] > 0,
        "the flood did overflow the tables"
    );
    assert!(r.timeline.len() <= 2000);
}

proptest! {
    #[test]
    fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_line(&bytes);
    }

    #[test]
    fn mutated_lines_never_panic(cut in 0usize..200, byte in any::<u8>(), at in 0usize..200) {
        let mut line = b"192.0.2.7 - - [27/Nov/2026:16:41:07 +0000] \"GET /daily.cvd HTTP/1.1\" 200 61234567 \"-\" \"ClamAV/1.4.6 (OS: linux-gnu)\" 96.021".to_vec();
        if at < line.len() { line[at] = byte; }
        line.truncate(cut.min(line.len()));
        let _ = parse_line(&line);
        let mut a = Analyzer::new(Options::default());
        let i = a.add_input("p");
        a.feed_line(i, 1, &line);
        let _ = a.finish();
    }

    #[test]
    fn well_formed_lines_round_trip(
        host in "[0-9a-f:.]{1,39}",
        status in 100u16..600,
        bytes in any::<u64>(),
        ua in "[ -!#-\\[\\]-~]{0,80}",
        millis in 0u64..10_000_000,
        secs in 0i64..4_000_000_000,
    ) {
        let r = generator::Request { t: secs, host: host.clone(), path: "/daily.cvd".into(), status, bytes, ua: ua.clone(), dur_ms: millis };
        let line = generator::line(&r, Dialect::Cvdmirror);
        let e = parse_line(line.as_bytes()).unwrap();
        prop_assert_eq!(e.host, host.as_bytes());
        prop_assert_eq!(e.time, secs);
        prop_assert_eq!((e.status, e.bytes), (status, bytes));
        prop_assert_eq!(e.user_agent, if ua.is_empty() || ua == "-" { &b""[..] } else { ua.as_bytes() });
        prop_assert_eq!(e.duration_ms, Some(millis));
    }
}
