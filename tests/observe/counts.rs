//! A scripted sequence of freshclam-like requests shows up in
//! `/status.json` and `/metrics` exactly: counts by class and status, and
//! bytes to the byte. The admin reset is a token-protected POST.

use super::start;
use crate::support::fixture;
use crate::support::server::ADMIN_TOKEN as TOKEN;

fn class<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == name)
        .unwrap()
}

/// The value of the metric line starting with `series ` (exact labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn status_and_metrics_count_a_scripted_sequence_exactly() {
    let cvd = fixture("bytecode-268.cvd");
    let server = start(&[("bytecode.cvd", &cvd)], "");
    let mut sent = 0u64;

    // Three header checks, as freshclam does them.
    let mut etag = String::new();
    for _ in 0..3 {
        let r = server.request("GET", "/bytecode.cvd", &[("Range", "bytes=0-511")]);
        assert_eq!((r.status, r.body.len()), (206, 512));
        etag = r.header("etag").unwrap().to_owned();
        sent += 512;
    }
    // Two conditional GETs of a current file.
    for _ in 0..2 {
        let r = server.request("GET", "/bytecode.cvd", &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 304);
    }
    // One whole download.
    let r = server.request("GET", "/bytecode.cvd", &[]);
    assert_eq!((r.status, r.body.len()), (200, cvd.len()));
    sent += cvd.len() as u64;
    // Two misses, one of them a cdiff past what we have.
    let mut not_found_bytes = 0;
    for path in ["/bytecode-999.cdiff", "/nothing.txt"] {
        let r = server.request("GET", path, &[]);
        assert_eq!(r.status, 404);
        not_found_bytes += r.body.len() as u64;
    }
    sent += not_found_bytes;
    // One wrong method.
    let r = server.request("POST", "/bytecode.cvd", &[]);
    assert_eq!(r.status, 405);
    let error_bytes = r.body.len() as u64;
    sent += error_bytes;

    let s = server.status_when("nine requests", |s| s["totals"]["requests"] == 9);
    assert_eq!(s["totals"]["bytes"], sent, "{s:#}");
    let check = class(&s, "check");
    assert_eq!(
        (check["requests"].as_u64(), check["bytes"].as_u64()),
        (Some(5), Some(1536))
    );
    let whole = class(&s, "cvd");
    assert_eq!(
        (whole["requests"].as_u64(), whole["bytes"].as_u64()),
        (Some(1), Some(cvd.len() as u64))
    );
    let missing = class(&s, "not_found");
    assert_eq!(
        (missing["requests"].as_u64(), missing["bytes"].as_u64()),
        (Some(2), Some(not_found_bytes))
    );
    let error = class(&s, "error");
    assert_eq!(
        (error["requests"].as_u64(), error["bytes"].as_u64()),
        (Some(1), Some(error_bytes))
    );
    for other in ["cdiff", "sign", "cld", "other", "refused"] {
        assert_eq!(class(&s, other)["requests"], 0, "{other}");
    }
    assert_eq!(
        s["status_codes"],
        serde_json::json!({"200": 1, "206": 3, "304": 2, "404": 2, "405": 1})
    );
    assert_eq!(s["cdiff_not_found"], 1);
    // The 405 is refused before a site is chosen: it counts under "-".
    let site = |name: &str| {
        s["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["site"] == name)
            .unwrap_or_else(|| panic!("no site {name}: {s:#}"))
            .clone()
    };
    assert_eq!(site("default")["bytes"], sent - error_bytes);
    assert_eq!(site("-")["bytes"], error_bytes);
    assert_eq!(s["files"][0]["file"], "/bytecode.cvd");
    assert_eq!(s["files"][0]["bytes"], 1536 + cvd.len() as u64);
    assert_eq!(s["clients"]["top"][0]["client"], "127.0.0.1/32");
    assert_eq!(s["clients"]["top"][0]["requests"], 9);
    assert_eq!(s["active_transfers"], 0);
    assert!(
        s["ready"].is_boolean(),
        "readiness is part of the admin status"
    );

    let m = server.admin("GET", "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(m.body).unwrap();
    let requests_at = |site: &str, class: &str, code: u16| {
        metric(
            &text,
            &format!(
                "cvdmirror_requests_total{{site=\"{site}\",class=\"{class}\",code=\"{code}\"}}"
            ),
        )
    };
    let requests = |class: &str, code: u16| requests_at("default", class, code);
    assert_eq!(requests("check", 206), Some(3.0), "{text}");
    assert_eq!(requests("check", 304), Some(2.0));
    assert_eq!(requests("cvd", 200), Some(1.0));
    assert_eq!(requests("not_found", 404), Some(2.0));
    assert_eq!(requests_at("-", "error", 405), Some(1.0));
    let bytes = |class: &str| {
        metric(
            &text,
            &format!("cvdmirror_sent_bytes_total{{site=\"default\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(bytes("check"), Some(1536.0));
    assert_eq!(bytes("cvd"), Some(cvd.len() as f64));
    assert_eq!(bytes("not_found"), Some(not_found_bytes as f64));
    assert_eq!(
        metric(
            &text,
            "cvdmirror_request_duration_seconds_count{class=\"check\"}"
        ),
        Some(5.0)
    );
    assert_eq!(metric(&text, "cvdmirror_active_transfers"), Some(0.0));
    assert!(metric(&text, "cvdmirror_connections").is_some(), "{text}");

    // Reset: only by POST with the token; Prometheus counters stay.
    assert_eq!(server.admin("GET", "/reset", &[]).status, 405);
    assert_eq!(server.admin("POST", "/reset", &[]).status, 401);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        server
            .admin("POST", "/reset", &[("Authorization", &auth)])
            .status,
        200
    );
    let s = server.status();
    assert_eq!(s["totals"]["requests"], 0);
    assert_eq!(s["totals"]["bytes"], 0);
    assert!(s["files"].as_array().unwrap().is_empty());
    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    assert_eq!(
        metric(
            &text,
            "cvdmirror_sent_bytes_total{site=\"default\",class=\"cvd\"}"
        ),
        Some(cvd.len() as f64)
    );
}

/// ClamAV 1.5 clients ask for `.sign` files: served ones count as the
/// `sign` class, missing ones as `404`s counted apart from missing patches
/// (a missing signature sends nobody to the whole CVD, so it is no herd
/// symptom), in `/status.json` and `/metrics`.
#[test]
fn signatures_and_their_404s_are_counted_apart_from_patches() {
    let sign = b"#clamsign-1.0\n230::pkcs7-pem:MIIB\n";
    let server = start(&[("bytecode-268.cvd.sign", sign)], "");
    let r = server.request("GET", "/bytecode-268.cvd.sign", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &sign[..]));
    for path in [
        "/bytecode-269.cvd.sign",
        "/bytecode-270.cdiff.sign",
        "/bytecode-270.cdiff",
    ] {
        assert_eq!(server.request("GET", path, &[]).status, 404, "{path}");
    }
    let s = server.status_when("four requests", |s| s["totals"]["requests"] == 4);
    let signs = class(&s, "sign");
    assert_eq!(
        (signs["requests"].as_u64(), signs["bytes"].as_u64()),
        (Some(1), Some(sign.len() as u64))
    );
    assert_eq!(class(&s, "not_found")["requests"], 3);
    assert_eq!(
        (&s["cdiff_not_found"], &s["sign_not_found"]),
        (&1.into(), &2.into())
    );

    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    assert_eq!(
        metric(&text, "cvdmirror_sign_not_found_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "cvdmirror_requests_total{site=\"default\",class=\"sign\",code=\"200\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn the_public_status_is_read_only_and_hides_clients() {
    let server = start(
        &[("a.txt", b"hello")],
        "[observe]\npublic_status = true\npublic_path = \"/_status\"\n",
    );
    assert_eq!(server.request("GET", "/a.txt", &[]).status, 200);
    let page = server.request("GET", "/_status", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let json = server.request("GET", "/_status/status.json", &[]);
    assert_eq!(json.status, 200);
    let s: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(s["public"], true);
    assert!(s["clients"].is_null(), "{s:#}");
    assert!(s["totals"]["requests"].as_u64().unwrap() >= 1);
    // No actions on the public side, and nothing else of the admin API.
    assert_eq!(server.request("POST", "/_status/reset", &[]).status, 405);
    assert_eq!(server.request("GET", "/_status/metrics", &[]).status, 404);
    assert_eq!(server.request("GET", "/reset", &[]).status, 404);
}

/// The herd gate's occupancy and waiting list are in `/metrics`: with room
/// for one whole-database download (16 Mbit/s link, 16 Mbit/s minimum) and
/// one held open, the gate is full and closed, and a second download is
/// refused and waits for its appointment.
#[test]
fn metrics_show_the_herd_gates_waiting_list() {
    use std::io::{Read, Write};
    let big = vec![7u8; 20_000_000];
    let server = start(
        &[("daily.cvd", &big)],
        "[shape]\nlink_rate = \"16Mbit\"\n[limits.herd]\nbulk_min_rate = \"16Mbit\"\n",
    );
    let herd = |text: &str| {
        (
            metric(text, "cvdmirror_traffic_control_herd_waiting_clients"),
            metric(text, "cvdmirror_traffic_control_herd_queue_seconds"),
        )
    };
    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    assert_eq!(herd(&text), (Some(0.0), Some(0.0)), "{text}");
    assert!(
        text.contains("# HELP cvdmirror_traffic_control_herd_waiting_clients ")
            && text.contains("# TYPE cvdmirror_traffic_control_herd_queue_seconds gauge"),
        "{text}"
    );

    // Hold one download: admitted once its head arrives, and it stays
    // running while nothing more is read.
    let mut held = std::net::TcpStream::connect(server.addr).unwrap();
    held.set_read_timeout(Some(crate::support::DEADLINE))
        .unwrap();
    held.write_all(b"GET /daily.cvd HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    held.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    let gauge = |name: &str| metric(&text, &format!("cvdmirror_traffic_control_herd_{name}"));
    assert_eq!(
        (
            gauge("active_transfers"),
            gauge("capacity_transfers"),
            gauge("open")
        ),
        (Some(1.0), Some(1.0), Some(0.0)),
        "one slot, taken: {text}"
    );

    let refused = server.request("GET", "/daily.cvd", &[]);
    assert_eq!(refused.status, 429);
    let retry: f64 = refused.header("retry-after").unwrap().parse().unwrap();
    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    let (waiting, queue) = herd(&text);
    assert_eq!(waiting, Some(1.0), "{text}");
    let queue = queue.unwrap();
    assert!(
        queue >= 1.0 && queue <= retry + 1.0,
        "queue reaches {queue} s ahead, the refused client was told {retry} s"
    );
    drop(held);
}

/// A `slow` quota that runs out under a running download is counted once,
/// as `slowed_running` with the quota that did it, beside the admission
/// decisions: an operator sees quotas biting mid-transfer, not only at the
/// door.
#[test]
fn a_quota_slowing_a_running_download_is_counted() {
    let file = vec![3u8; 3_000_000];
    let server = start(
        &[("daily.cvd", &file)],
        "[limits.client_quota]\nlimit = 1000000\nperiod = \"1h\"\nslices = 1\n\
         on_exceed = { action = \"slow\", rate = \"80Mbit\" }\n",
    );
    let download = server.request("GET", "/daily.cvd", &[]);
    assert_eq!(download.status, 200);
    assert_eq!(download.body.len(), file.len());
    let text = String::from_utf8(server.admin("GET", "/metrics", &[]).body).unwrap();
    let decisions = |decision: &str, limit: &str| {
        metric(
            &text,
            &format!(
                "cvdmirror_traffic_control_decisions_total{{decision=\"{decision}\",limit=\"{limit}\"}}"
            ),
        )
    };
    assert_eq!(decisions("admitted", "-"), Some(1.0), "{text}");
    assert_eq!(
        decisions("slowed_running", "client-quota"),
        Some(1.0),
        "{text}"
    );
}
