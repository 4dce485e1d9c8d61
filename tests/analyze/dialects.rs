//! The seed incident replayed as cvdmirror, Apache and nginx logs (one
//! gzipped, one split across files, three servers merged by time) must be
//! explained correctly and exactly: the trigger, its minute, its clients,
//! the fallback chains and the bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use cvdmirror::analyze::{self, AnalyzeArgs, LoggedAt, Report, stamps::Stamp};

use super::generator::{self, Dialect, FULL, Incident, ONSET, RESYNC};

pub(super) const CLIENTS: usize = 900;

pub(super) fn args(logs: &[&Path], dir: &Path) -> AnalyzeArgs {
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

pub(super) fn write(dir: &Path, name: &str, text: &str, gzip: bool) -> PathBuf {
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

/// Writes all of `inc` in `dialect` as `dir/name` (gzipped if `gzip`).
pub(super) fn write_log(
    dir: &Path,
    name: &str,
    inc: &Incident,
    dialect: Dialect,
    gzip: bool,
) -> PathBuf {
    write(dir, name, &generator::log(inc, dialect, |_| true), gzip)
}

/// What every dialect must conclude about the incident.
pub(super) fn assert_explains(r: &Report, inc: &Incident, what: &str) {
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
    let log = write_log(dir.path(), "access.log", &inc, Dialect::Cvdmirror, false);
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
    let log = write_log(dir.path(), "access.log.1", &inc, Dialect::Nginx, true);
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

pub(super) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
