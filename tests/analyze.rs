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
    self, AnalyzeArgs, Analyzer, Limits, LoggedAt, Options, Report,
    classify::Class,
    parse::{RequestTime, parse_line},
    stamps::Stamp,
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
        chain_window: None,
        min_rate: cvdmirror::shape::Rate::from_bytes_per_sec(131_072).unwrap(),
        logged_at: LoggedAt::Auto,
        link_capacity: None,
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
    // The cause comes first, dated by its own first request.
    let t = r.trigger.as_ref().expect("the trigger is named");
    assert_eq!(t.file, "daily-27654.cdiff", "{what}");
    assert_eq!(
        t.first.div_euclid(60),
        ONSET.div_euclid(60),
        "{what}: trigger minute"
    );
    assert_eq!(
        t.clients as usize, inc.fallback_clients,
        "{what}: trigger clients"
    );
    assert_eq!(t.chains as usize, inc.chains, "{what}: trigger chains");
    assert!(
        r.explanation[0].starts_with("Cause: the mirror did not have daily-27654.cdiff"),
        "{what}: {:?}",
        r.explanation
    );
    let expl = &e.explanation;
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
        r.episodes[0].explanation.starts_with("From 18:41,"),
        "{}",
        r.episodes[0].explanation
    );
    assert!(
        r.explanation[0].contains("from 18:41 to 20:1"),
        "{}",
        r.explanation[0]
    );
    assert_eq!(r.time.stamps, Stamp::Start, "Apache %t is the arrival");
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
    let r = analyze::analyze(&a).unwrap();
    assert_explains(&r, &inc, "nginx");
    assert_eq!(r.time.stamps, Stamp::End, "detected: {:?}", r.time.summary);
    a.logged_at = LoggedAt::End;
    let flagged = analyze::analyze(&a).unwrap();
    assert_explains(&flagged, &inc, "nginx --logged-at end");
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

const UA_15: &str = "ClamAV/1.5.1 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 5a1e0000-0000-4000-8000-00000000000";

/// One request of `host` (ClamAV `ua`) at `t`.
fn req(
    t: i64,
    host: &str,
    ua: &str,
    path: &str,
    status: u16,
    bytes: u64,
    dur_ms: u64,
) -> generator::Request {
    generator::Request {
        t,
        host: host.into(),
        path: path.into(),
        status,
        bytes,
        ua: ua.into(),
        dur_ms,
    }
}

fn analyze_requests(requests: &[generator::Request]) -> Report {
    let text: String = requests
        .iter()
        .map(|r| generator::line(r, Dialect::Cvdmirror))
        .collect();
    let mut analyzer = Analyzer::new(Options::default());
    analyzer
        .feed("access.log", std::io::Cursor::new(text.into_bytes()))
        .unwrap();
    analyzer.finish()
}

#[test]
fn clamav_15_sign_requests_are_their_own_class_and_chain() {
    let t = generator::START;
    let ua = |n: u8| format!("{UA_15}{n})");
    let ua14 = "ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 14)";
    let full = 61_234_567;
    let mut log = vec![
        // A: two patches, each followed by its signature.
        req(t, "10.0.0.1", &ua(1), "/daily.cvd", 206, 512, 30),
        req(
            t + 1,
            "10.0.0.1",
            &ua(1),
            "/daily-27655.cdiff",
            200,
            30_000,
            90,
        ),
        req(
            t + 1,
            "10.0.0.1",
            &ua(1),
            "/daily-27655.cdiff.sign",
            200,
            8_870,
            5,
        ),
        req(
            t + 2,
            "10.0.0.1",
            &ua(1),
            "/daily-27656.cdiff",
            200,
            30_000,
            90,
        ),
        req(
            t + 2,
            "10.0.0.1",
            &ua(1),
            "/daily-27656.cdiff.sign",
            200,
            8_870,
            5,
        ),
        // B: the whole CVD, then its signature, which the mirror lacks.
        req(t + 10, "10.0.0.2", &ua(2), "/daily.cvd", 200, full, 20_000),
        req(
            t + 30,
            "10.0.0.2",
            &ua(2),
            "/mirror/daily-27656.cvd.sign",
            404,
            14,
            1,
        ),
        // C: a patch whose signature is missing, then (for whatever reason)
        // the whole CVD: not a fallback from a missing patch.
        req(
            t + 40,
            "10.0.0.3",
            &ua(3),
            "/daily-27656.cdiff",
            200,
            30_000,
            90,
        ),
        req(
            t + 40,
            "10.0.0.3",
            &ua(3),
            "/daily-27656.cdiff.sign",
            404,
            14,
            1,
        ),
        req(t + 50, "10.0.0.3", &ua(3), "/daily.cvd", 200, full, 20_000),
        // E: a current CVD whose missing signature is fetched alone.
        req(t + 70, "10.0.0.5", &ua(5), "/main.cvd", 304, 0, 10),
        req(
            t + 70,
            "10.0.0.5",
            &ua(5),
            "/main-62.cvd.sign",
            200,
            9_000,
            5,
        ),
    ];
    // D (1.4): the real thing, a missing patch and the whole CVD.
    for _ in 0..3 {
        log.push(req(
            t + 60,
            "10.0.0.4",
            ua14,
            "/daily-27657.cdiff",
            404,
            0,
            2,
        ));
    }
    log.push(req(
        t + 61,
        "10.0.0.4",
        ua14,
        "/daily.cvd",
        200,
        full,
        20_000,
    ));
    log.sort_by_key(|r| r.t);
    let r = analyze_requests(&log);
    assert_eq!(r.malformed.count, 0);

    let sign = r
        .totals
        .classes
        .iter()
        .find(|c| c.class == Class::Sign)
        .unwrap();
    assert_eq!((sign.requests, sign.bytes), (5, 8_870 * 2 + 14 * 2 + 9_000));
    let other = r
        .totals
        .classes
        .iter()
        .find(|c| c.class == Class::Other)
        .unwrap();
    assert_eq!(other.requests, 0, ".sign is no longer \"other\"");
    let s = &r.sign;
    assert_eq!((s.requests, s.not_found), (5, 2));
    assert_eq!((s.clients, s.clients_not_found, s.chain_clients), (4, 2, 3));
    assert_eq!((s.after_cvd, s.after_cdiff, s.standalone), (1, 3, 1));
    assert!(!s.at_least);
    let missing: Vec<(&str, u64)> = s
        .missing
        .iter()
        .map(|m| (m.file.as_str(), m.requests))
        .collect();
    assert_eq!(
        missing,
        [("daily-27656.cdiff.sign", 1), ("daily-27656.cvd.sign", 1)]
    );
    let sign_404: u64 = r.timeline.iter().map(|p| p.counts.sign_404).sum();
    let cdiff_404: u64 = r.timeline.iter().map(|p| p.counts.cdiff_404).sum();
    assert_eq!((sign_404, cdiff_404), (2, 3));

    // Only D fell back; C's `.sign` 404 is no missing patch.
    assert_eq!((r.fallback.clients, r.fallback.chains), (1, 1));
    assert_eq!(r.fallback.patches.len(), 1);
    assert_eq!(r.fallback.patches[0].patch, "daily-27657.cdiff");

    let said = r
        .explanation
        .iter()
        .find(|p| p.contains(".sign"))
        .unwrap_or_else(|| panic!("{:#?}", r.explanation));
    assert_eq!(
        said,
        "2 clients asked for `.sign` files the mirror did not have (ClamAV 1.5 clients; those in FIPS mode cannot update without them): 2 requests, 1 of them for daily-27656.cdiff.sign."
    );
    let text = analyze::report::text::render(&r);
    assert!(
        text.contains("Signatures (.sign, ClamAV 1.5)\n  5 requests, 27 kB, 2 answered 404; 4 clients, 2 of them got a 404\n  1 after their CVD, 3 after their cdiff (within 600 s), 1 on their own; 3 clients followed the 1.5 chain\n"),
        "{text}"
    );
    assert!(
        text.contains("sign                    5 requests"),
        "{text}"
    );
    let html = analyze::report::html::render(&r);
    assert!(html.contains("<td>daily-27656.cvd.sign</td>"), "{html}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["sign"]["clients_not_found"], 2);
    assert_eq!(json["totals"]["classes"][3]["class"], "sign");
}

#[test]
fn clamav_15_clients_in_the_incident_change_nothing_about_the_herd() {
    let mut inc = generator::incident(8, CLIENTS);
    let mut extra = Vec::new();
    let (mut missing, mut signed_patches) = (0u64, 0u64);
    let mut missing_clients = std::collections::HashSet::new();
    for r in &inc.requests {
        // A third of the clients run ClamAV 1.5.
        if !r.ua.starts_with("ClamAV/") || !fnv(&r.host).is_multiple_of(3) || r.status != 200 {
            continue;
        }
        if r.path == "/daily.cvd" {
            let t = r.t + (r.dur_ms / 1000) as i64 + 1;
            extra.push(req(t, &r.host, &r.ua, "/daily-27653.cvd.sign", 404, 0, 1));
            missing += 1;
            missing_clients.insert(r.host.clone());
        } else if r.path.ends_with(".cdiff") {
            extra.push(req(
                r.t + 1,
                &r.host,
                &r.ua,
                &format!("{}.sign", r.path),
                200,
                8_870,
                3,
            ));
            inc.total_bytes += 8_870;
            signed_patches += 1;
        }
    }
    assert!(missing > 50 && signed_patches > 50);
    inc.requests.extend(extra);
    inc.requests.sort_by_key(|r| r.t);
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "access.log",
        &generator::log(&inc, Dialect::Cvdmirror, |_| true),
        false,
    );
    let r = analyze::analyze(&args(&[&log], dir.path())).unwrap();
    assert_explains(&r, &inc, "with ClamAV 1.5 clients");
    let s = &r.sign;
    assert_eq!((s.not_found, s.after_cvd), (missing, missing));
    assert_eq!((s.after_cdiff, s.standalone), (signed_patches, 0));
    assert_eq!(s.clients_not_found as usize, missing_clients.len());
    assert!(
        r.explanation.iter().any(|p| p.starts_with(&format!(
            "{} clients asked for `.sign` files the mirror did not have",
            missing_clients.len()
        ))),
        "{:#?}",
        r.explanation
    );
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
                    4 => (format!("/daily-{}.cvd.sign", r >> 40 & 0xffff), 404, 0),
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
        sign_clients: 5_000,
        sequence_clients: 5_000,
        missing_clients: 5_000,
        shared_transfers: 5_000,
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
            ("sign downloads", s.sign_recent),
            ("sign clients", s.sign_clients),
            ("sequence clients", s.sequence_clients),
            ("missing files", s.missing_files),
            ("shared transfers", s.shared_transfers),
        ] {
            assert!(len <= cap, "{name}: {len} > {cap}");
        }
        assert!(s.clients.0 > 0 && s.pending_streaks.0 > 0);
        assert!(s.sign_recent.0 > 0 && s.sign_clients.0 > 0);
    }
    assert_eq!(analyzer.parsed(), lines);
    let r = analyzer.finish();
    assert_eq!(r.totals.requests, lines);
    assert!(
        r.bounds.evicted["clients"] > 0,
        "the flood did overflow the tables"
    );
    assert!(r.timeline.len() <= 2000);
    assert!(
        r.sign.at_least,
        "the flood overflowed the .sign client sets"
    );
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
    fn mutated_json_lines_never_panic(cut in 0usize..400, byte in any::<u8>(), at in 0usize..400) {
        let mut line = br#"{"level":"info","ts":1795970467.52,"request":{"client_ip":"192.0.2.7","method":"GET","uri":"/daily.cvd","headers":{"User-Agent":["ClamAV/1.5.1"]}},"duration":2400.1,"size":61234567,"status":200,"resp_headers":{"Server":["Caddy"]}}"#.to_vec();
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
        prop_assert_eq!(e.request_time, Some(RequestTime::Millis(millis)));
    }
}

#[path = "analyze/incidents.rs"]
mod incidents;

/// The flood at the size of the benchmark's log (about half a minute in a
/// debug build, in parallel with the rest of the suite).
#[test]
fn two_million_lines_stay_inside_the_bounds() {
    flood_stays_inside_the_bounds(2_000_000);
}
