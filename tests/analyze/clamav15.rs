//! ClamAV 1.5 clients: their `.sign` requests are a class of their own
//! and chain like cdiffs, and their presence in the incident changes
//! nothing about the herd the report names.

use cvdmirror::analyze::{self, Analyzer, Options, Report, classify::Class};

use super::generator::{self, Dialect};

use super::dialects::{CLIENTS, args, assert_explains, fnv, write_log};

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
    let log = write_log(dir.path(), "access.log", &inc, Dialect::Cvdmirror, false);
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
