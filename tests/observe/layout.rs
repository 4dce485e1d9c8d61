//! The status page during a herd, in a real browser at a desktop's and at a
//! phone's width: nothing may stick out of its card.
//!
//! The herd is real: `cvdmirror serve` with a 40 Mbit/s link cap and a herd
//! gate that keeps 5 Mbit/s per whole-database download, so eight
//! downloads fill it and the rest are refused; every client comes through a
//! trusted proxy with a full IPv6 address (one client per /128) or an IPv4
//! one, so the tables hold long names and many rows. Its `/status.json`,
//! taken while the eight downloads run, gets the sync section of
//! [`signed_sync_status`], the fleet section of [`fleet_status`] (long
//! node URLs, a lagging node with a long sync failure, a lost node, Redis
//! lost), a firing alert and a source the page has no card of its own
//! for, and is served with the page (the bytes `cvdmirror`
//! serves, plus a checking script) from a loopback stub, so every browser
//! run sees the same document. Headless Chromium's windows are at least
//! 500 px wide, so the page is shown in a frame of the width under test.
//!
//! The checking script waits for the page's first render, then lists every
//! element whose box reaches outside its card's box, every element whose
//! content is wider than itself (scrolled or cut off), every card outside
//! the viewport and a page wider than the viewport, and writes the list
//! into the DOM that `--dump-dom` prints. Screenshots of both widths are
//! left in `target/test-artifacts/` for a person to look at.

// Deadlines are real time: a paused tokio clock does not reach a child process.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::start;
use crate::observe::fleet::fleet_status;
use crate::observe::page::{browse_at, console_errors, serve, signed_sync_status, text_of};
use crate::support::DEADLINE;
use crate::support::TestServer;

/// Downloads the herd gate admits: 40 Mbit/s at 5 Mbit/s each.
const RUNNING: usize = 8;
/// Clients the gate refuses.
const REFUSED: usize = 12;
/// Up-to-date clients doing header checks.
const CHECKING: usize = 14;
/// The whole CVD: at 5 Mbit/s a download takes over a minute, so all
/// eight still run when the status is taken.
const CVD_LEN: usize = 40_000_000;

const CONFIG: &str = r#"
[shape]
link_rate = "40Mbit"
[limits.herd]
bulk_min_rate = "5Mbit"
retry_after_min = "30s"
retry_after_max = "5m"
[limits.clients]
ipv6 = 128
[limits.proxies]
trusted = ["127.0.0.1/32"]
header = "x-forwarded-for"
[limits.client_quota]
limit = 10000000000
period = "1d"
on_exceed = { action = "slow", rate = "1Mbit" }
"#;

/// A long, full IPv6 address (documentation prefix) for client `n`.
fn ipv6(n: usize) -> String {
    format!(
        "2001:db8:4a1f:93c2:7b3d:e5f0:{:x}:{:x}",
        0xc000 + n,
        0xa000 + n
    )
}

/// Starts a download of `daily.cvd` for `client` and keeps reading it on
/// a thread of its own until the server goes away.
fn download(addr: SocketAddr, client: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /daily.cvd HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "download for {client} admitted");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
}

/// A herd in full swing: eight downloads running, the gate closed, a
/// dozen clients refused (each first asked for the missing cdiff),
/// header checks from IPv4 and IPv6 clients. Returns the server.
fn herd() -> TestServer {
    let cvd = vec![0x5au8; CVD_LEN];
    let server = start(&[("daily.cvd", &cvd)], CONFIG);
    for n in 0..RUNNING {
        download(server.addr, &ipv6(n));
    }
    for n in RUNNING..RUNNING + REFUSED {
        let client = ipv6(n);
        let xff = [("X-Forwarded-For", client.as_str())];
        assert_eq!(server.request("GET", "/daily-2.cdiff", &xff).status, 404);
        assert_eq!(server.request("GET", "/daily.cvd", &xff).status, 429);
    }
    for n in 0..CHECKING {
        let client = if n % 2 == 0 {
            format!("198.51.100.{}", 10 + n)
        } else {
            ipv6(100 + n)
        };
        let r = server.request(
            "GET",
            "/daily.cvd",
            &[("X-Forwarded-For", &client), ("Range", "bytes=0-511")],
        );
        assert_eq!(r.status, 206);
    }
    server
}

/// `/status.json` of the herd once every download shows a live rate.
fn herd_status(server: &TestServer) -> serde_json::Value {
    server.status_when("eight downloads with live rates", |s| {
        let busy = s["sources"]["traffic_control"]["busiest_clients"]
            .as_array()
            .map_or(0, |c| {
                c.iter()
                    .filter(|c| c["now_bytes_per_s"].as_f64() > Some(0.0))
                    .count()
            });
        let live = s["clients"]["live"].as_array().map_or(0, |c| {
            c.iter()
                .filter(|c| c["bytes_per_s"].as_f64() > Some(0.0))
                .count()
        });
        busy >= RUNNING && live >= RUNNING && s["active_transfers"] == RUNNING
    })
}

/// Runs after the page's first render: one line per element that does not
/// fit, in `<pre id="layout-report">` with the viewport's width and the
/// page's height in `data-width` and `data-height`, and a copy of what the
/// page drew (its `<main>`); both in the document `--dump-dom` prints.
const CHECK: &str = r##"<script>
"use strict";
(function () {
  function describe(e) {
    let s = e.tagName.toLowerCase();
    if (e.id) s += "#" + e.id;
    if (typeof e.className === "string" && e.className) s += "." + e.className.trim().split(/\s+/).join(".");
    const text = (e.textContent || "").replace(/\s+/g, " ").trim();
    return s + (text ? " \"" + text.slice(0, 60) + "\"" : "");
  }
  function card(e) {
    const c = e.closest(".card");
    const h = c && c.querySelector("h2");
    return h ? h.textContent : "(no card)";
  }
  function px(n) { return Math.round(n); }
  function check() {
    if (!(Number(document.body.dataset.renders) >= 1)) { setTimeout(check, 50); return; }
    const out = [];
    const vw = document.documentElement.clientWidth;
    const page = document.documentElement.scrollWidth;
    if (page > vw) out.push("page: " + page + " px wide in a " + vw + " px viewport");
    for (const c of document.querySelectorAll(".card")) {
      const box = c.getBoundingClientRect();
      if (!box.width && !box.height) continue;
      if (box.left < -0.5 || box.right > vw + 0.5) {
        out.push(card(c) + ": the card spans " + px(box.left) + "–" + px(box.right) + " px of a " + vw + " px viewport");
      }
      const flagged = new Set();
      for (const e of c.querySelectorAll("*")) {
        if (flagged.has(e.parentElement)) { flagged.add(e); continue; }
        const r = e.getBoundingClientRect();
        if (!r.width && !r.height) continue;
        if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
          out.push(card(e) + ": " + describe(e) + " spans " + px(r.left) + "–" + px(r.right) + " px, its card " + px(box.left) + "–" + px(box.right) + " px");
          flagged.add(e);
        } else if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
          out.push(card(e) + ": " + describe(e) + " holds " + e.scrollWidth + " px of content in " + e.clientWidth + " px");
          flagged.add(e);
        }
      }
    }
    // In the test's frame, the report goes to the frame's parent (the
    // document --dump-dom prints), and the frame grows to the page's height
    // for the screenshot.
    const top = window.parent.document;
    const pre = top.createElement("pre");
    pre.id = "layout-report";
    pre.dataset.width = String(vw);
    pre.dataset.height = String(document.documentElement.scrollHeight);
    pre.textContent = out.length ? out.join("\n") : "fits";
    pre.hidden = true;
    top.body.appendChild(pre);
    // What the page drew, for the test to read in the dump.
    const drawn = top.importNode(document.querySelector("main"), true);
    drawn.hidden = true;
    top.body.appendChild(drawn);
    if (window.frameElement) window.frameElement.style.height = document.documentElement.scrollHeight + "px";
  }
  check();
})();
</script>
</body>"##;

/// Widths the page is checked at: a desktop's and a phone's.
const WIDTHS: [u32; 2] = [1400, 400];

/// Headless Chromium's windows are at least 500 px wide, so the page is
/// shown in a frame of the width under test, at `/frame-WIDTH`: media
/// queries and layout inside the frame see exactly that width.
fn window(width: u32) -> u32 {
    width.max(500)
}

/// The page with the checking script at `/`, `status` beside it, and a
/// frame page for each of [`WIDTHS`].
fn checked_page(status: &serde_json::Value) -> String {
    let html = cvdmirror::observe::page::HTML.replacen("</body>", CHECK, 1);
    assert_ne!(html, cvdmirror::observe::page::HTML, "script injected");
    let mut routes = vec![
        ("/".to_owned(), "text/html; charset=utf-8", html),
        (
            "/status.json".to_owned(),
            "application/json",
            status.to_string(),
        ),
    ];
    for width in WIDTHS {
        routes.push((
            format!("/frame-{width}"),
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html><html><body style=\"margin:0\">\
                 <iframe src=\"/\" style=\"border:0;display:block;width:{width}px;height:1200px\"></iframe>\
                 </body></html>"
            ),
        ));
    }
    serve(routes)
}

/// What the page's checking script found at `width` px, the page's height,
/// and the DOM of the frame page.
fn misfits(url: &str, width: u32) -> (Vec<String>, u32, String) {
    let out = browse_at(
        &format!("{url}frame-{width}"),
        (window(width), 1200),
        &["--dump-dom"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        console_errors(&stderr).is_empty(),
        "console errors at {width} px: {stderr}"
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    let at = dom
        .find("id=\"layout-report\"")
        .unwrap_or_else(|| panic!("the check did not run at {width} px: {dom}"));
    assert!(
        dom[at..].starts_with(&format!("id=\"layout-report\" data-width=\"{width}\"")),
        "the viewport is {width} px wide: {}",
        &dom[at..at + 60]
    );
    let height: u32 = dom[at..]
        .split("data-height=\"")
        .nth(1)
        .and_then(|h| h.split('"').next())
        .and_then(|h| h.parse().ok())
        .expect("the page's height");
    let report = text_of(&dom, "layout-report")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let misfits = if report == "fits" {
        Vec::new()
    } else {
        report.lines().map(str::to_owned).collect()
    };
    (misfits, height, dom)
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A full-length screenshot of the page at `width` px, `height` px tall.
fn screenshot(url: &str, width: u32, height: u32) -> PathBuf {
    let shot = artifacts().join(format!("status-herd-{width}.png"));
    let _ = std::fs::remove_file(&shot);
    browse_at(
        &format!("{url}frame-{width}"),
        (window(width), height),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", shot.display());
    shot
}

/// During a herd, at 1400 px and at 400 px, every element of the page stays
/// inside its card, the traffic-control card reads in words and units, and
/// the top-clients table counts the running downloads as requests.
#[test]
fn the_status_page_fits_its_cards_during_a_herd() {
    let started = Instant::now();
    let server = herd();
    let mut status = herd_status(&server);
    drop(server);

    // A top client with bytes has requests: running downloads count.
    let top = status["clients"]["top"].as_array().unwrap().clone();
    assert!(top.len() >= 20, "many rows: {top:#?}");
    for row in &top {
        assert!(
            row["bytes"].as_u64() == Some(0) || row["requests"].as_u64() >= Some(1),
            "bytes sent but no request: {row}"
        );
    }
    let downloading: Vec<_> = top.iter().filter(|r| r["running"] == 1).collect();
    assert_eq!(downloading.len(), RUNNING, "running downloads: {top:#?}");

    // The sync card with signatures and refused files, and an alert with a
    // long summary.
    let sync: serde_json::Value = serde_json::from_str(&signed_sync_status()).unwrap();
    status["sync"] = sync["sync"].clone();
    status["fleet"] = fleet_status()["fleet"].clone();
    status["alerts"] = serde_json::json!([{
        "alert": "upstream_rejected",
        "summary": "upstream files refused in the last pass: daily-27781.cdiff.sign (invalid signature: line 1: certificate has expired), daily.cvd (bad header)",
        "since": status["generated"],
    }]);

    // A source the page has no card of its own for is drawn field by
    // field, in words too.
    status["sources"]["replication"] = serde_json::json!({
        "enabled": true,
        "last_error": null,
        "pushing_now_bytes_per_s": 1_500_000.0,
        "peers": [{
            "peer": "mirror2.eu-west.clamav-mirrors.example.org",
            "lag_bytes": 123_456_789,
            "now_bytes_per_s": 10_000.0,
        }],
    });

    let url = checked_page(&status);
    let mut failures = Vec::new();
    let mut shots = Vec::new();
    for width in WIDTHS {
        let (misfits, height, dom) = misfits(&url, width);
        if !misfits.is_empty() {
            failures.push(format!(
                "at {width} px, {} elements do not fit:\n  {}",
                misfits.len(),
                misfits.join("\n  ")
            ));
        }
        // Words, not field names (in what is drawn, not in the script).
        let main = &dom[dom.find("<main").unwrap()..dom.find("</main>").unwrap()];
        for words in [
            "Link cap",
            "Herd gate",
            "Busiest clients",
            "Refused by limit",
            "Replication",
            "Pushing now",
            "12.0 Mbit/s",
            "Fleet",
            "Lease holder",
            "Consistent versions",
            "mirror-amsterdam-3",
            "capacity unknown",
        ] {
            if !main.contains(words) {
                failures.push(format!("no {words:?} at {width} px"));
            }
        }
        for raw in [
            "link_cap_bytes_per_s",
            "busiest_clients",
            "now_bytes_per_s",
            "waiting_flows",
            "lag_bytes",
        ] {
            if main.contains(raw) {
                failures.push(format!("{raw} on the page at {width} px"));
            }
        }
        shots.push(screenshot(&url, width, height + 40));
    }
    assert!(
        failures.is_empty(),
        "{}\n(screenshots: {shots:?})",
        failures.join("\n"),
    );
    assert!(started.elapsed() < 3 * DEADLINE);
}
