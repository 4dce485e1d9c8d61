//! The access log in combined format: operators feed it to standard tools
//! and count bytes from it, so the line shape is fixed, BYTES is what was
//! really sent, and nothing a client sends may break a line apart. Every
//! line is read with the library's own parser (the one `cvdmirror analyze`
//! uses), so what the server writes is what its analyzer reads.

use std::io::Read;

use cvdmirror::analyze::parse::RequestTime;

use super::util::{LM_268, now_epoch, pattern};
use crate::support::access_log::{LogLine, parse_all};
use crate::support::http::{Conn, raw_response};
use crate::support::{DEADLINE, TestServer, fixture};

fn server() -> TestServer {
    TestServer::serving(&[
        ("bytecode.cvd", &fixture("bytecode-268.cvd")),
        ("dns.txt", b"record"),
    ])
}

fn lines(s: &TestServer, n: usize) -> Vec<LogLine> {
    parse_all(&s.access_log_lines(n).join("\n"))
}

/// The line ends with SECONDS at millisecond resolution, which the parser
/// reads as the request time.
fn assert_seconds(l: &LogLine) {
    let seconds = l.seconds();
    let (whole, frac) = seconds
        .split_once('.')
        .unwrap_or_else(|| panic!("SECONDS {seconds:?} has no fraction"));
    assert!(
        !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()),
        "SECONDS {seconds:?}"
    );
    assert!(
        frac.len() == 3 && frac.bytes().all(|b| b.is_ascii_digit()),
        "SECONDS {seconds:?} is not millisecond resolution"
    );
    assert!(
        matches!(l.request_time, Some(RequestTime::Millis(_))),
        "{l:?}"
    );
}

#[test]
fn full_get_is_logged_in_combined_format() {
    let s = server();
    let before = now_epoch();
    assert_eq!(s.get("/bytecode.cvd", &[]).status, 200);
    let after = now_epoch();
    let raw = s.access_log_lines(1);
    assert_eq!(raw.len(), 1, "{raw:?}");
    let l = LogLine::parse(&raw[0]).unwrap();
    assert_eq!(l.client, "127.0.0.1");
    // Ident and user are `-`; the time is UTC.
    assert!(l.line.starts_with("127.0.0.1 - - ["), "{}", l.line);
    assert_eq!(l.offset, 0, "{}", l.line);
    let t = u64::try_from(l.time).unwrap();
    assert!(
        t + 1 >= before && t <= after + 1,
        "log time {t} not within the request ({before}..{after}): {}",
        l.line
    );
    assert_eq!(l.request, "GET /bytecode.cvd HTTP/1.1");
    assert_eq!((l.status, l.bytes), (200, 78_992));
    // Referer and User-Agent are `-`.
    assert!(l.line.contains("\" 200 78992 \"-\" \"-\" "), "{}", l.line);
    assert_seconds(&l);
}

#[test]
fn referer_and_user_agent_are_logged() {
    let s = server();
    let ua = "ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 1b2c)";
    s.get(
        "/dns.txt",
        &[("User-Agent", ua), ("Referer", "http://example.com/x?y=1")],
    );
    let l = &lines(&s, 1)[0];
    assert_eq!(l.user_agent, ua);
    // The referer is the quoted field before the User-Agent.
    assert!(
        l.line
            .contains(&format!(" \"http://example.com/x?y=1\" \"{ua}\" ")),
        "{}",
        l.line
    );
}

#[test]
fn quotes_and_control_chars_in_headers_are_escaped() {
    let s = server();
    let mut c = Conn::open(s.addr);
    c.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: evil\" 200 0 \"x\tend\r\nReferer: a\"b\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response(false).status, 200);
    let raw = s.access_log_lines(1);
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(!raw[0].contains('\t'), "raw tab in log line: {:?}", raw[0]);
    let l = LogLine::parse(&raw[0]).unwrap();
    assert_eq!(l.status, 200, "{:?}", raw[0]);
    assert!(
        l.user_agent == r#"evil\" 200 0 \"x\x09end"# || l.user_agent == r#"evil\" 200 0 \"x\tend"#,
        "user agent logged as {:?}",
        l.user_agent
    );
    // The referer is the quoted field before the User-Agent.
    assert!(
        l.line
            .contains(&format!(" \"{}\" \"{}\" ", r#"a\"b"#, l.user_agent)),
        "{}",
        l.line
    );
    assert_seconds(&l);
}

#[test]
fn quote_in_request_target_cannot_forge_fields() {
    let s = server();
    let mut c = Conn::open(s.addr);
    c.send(b"GET /x\"\x20200\x20999 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = c.closed_within(DEADLINE);
    s.get("/dns.txt", &[]);
    // The bad request may be answered 400 by the parser and left unlogged;
    // if it is logged, its line must parse with the real status.
    let text = s.access_log_containing("GET /dns.txt");
    let parsed = parse_all(&text);
    assert_eq!(
        parsed.last().unwrap().request,
        "GET /dns.txt HTTP/1.1",
        "{text}"
    );
    for l in &parsed[..parsed.len() - 1] {
        assert!(l.status == 400 || l.status == 404, "forged line {l:?}");
        assert!(l.request.contains(r#"\""#), "quote not escaped: {l:?}");
    }
}

#[test]
fn one_line_per_request_on_keepalive() {
    let s = server();
    let mut c = Conn::open(s.addr);
    c.roundtrip("GET", "/dns.txt", &[]);
    c.roundtrip("HEAD", "/dns.txt", &[]);
    c.roundtrip("GET", "/missing.cvd", &[]);
    let ls = lines(&s, 3);
    assert_eq!(ls.len(), 3);
    assert_eq!(
        (ls[0].request.as_str(), ls[0].status, ls[0].bytes),
        ("GET /dns.txt HTTP/1.1", 200, 6)
    );
    assert_eq!(
        (ls[1].request.as_str(), ls[1].status, ls[1].bytes),
        ("HEAD /dns.txt HTTP/1.1", 200, 0)
    );
    assert_eq!(
        (ls[2].request.as_str(), ls[2].status),
        ("GET /missing.cvd HTTP/1.1", 404)
    );
}

#[test]
fn not_modified_logs_zero_bytes() {
    let s = server();
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Modified-Since", LM_268)])
            .status,
        304
    );
    let l = &lines(&s, 1)[0];
    assert_eq!((l.status, l.bytes), (304, 0));
}

#[test]
fn head_logs_zero_bytes() {
    let s = server();
    s.request("HEAD", "/bytecode.cvd", &[]);
    let l = &lines(&s, 1)[0];
    assert_eq!(
        (l.request.as_str(), l.status, l.bytes),
        ("HEAD /bytecode.cvd HTTP/1.1", 200, 0)
    );
}

#[test]
fn header_check_logs_512_bytes() {
    let s = server();
    let r = s.get(
        "/bytecode.cvd",
        &[
            ("Range", "bytes=0-511"),
            ("If-Modified-Since", "Fri, 14 May 2010 13:57:10 GMT"),
        ],
    );
    assert_eq!(r.status, 206);
    let l = &lines(&s, 1)[0];
    assert_eq!((l.status, l.bytes), (206, 512));
}

#[test]
fn error_bytes_match_body_sent() {
    let s = server();
    let r404 = s.get("/missing.cvd", &[]);
    let r405 = s.request("POST", "/dns.txt", &[("Content-Length", "0")]);
    let ls = lines(&s, 2);
    assert_eq!((ls[0].status, ls[0].bytes), (404, r404.body.len() as u64));
    assert_eq!((ls[1].status, ls[1].bytes), (405, r405.body.len() as u64));
}

#[test]
fn query_string_is_logged_as_sent() {
    let s = server();
    s.get("/dns.txt?x=1&y=%20", &[]);
    assert_eq!(lines(&s, 1)[0].request, "GET /dns.txt?x=1&y=%20 HTTP/1.1");
}

#[test]
fn http10_request_is_logged_with_its_version() {
    let s = server();
    crate::support::raw_exchange(s.addr, b"GET /dns.txt HTTP/1.0\r\n\r\n");
    assert_eq!(lines(&s, 1)[0].request, "GET /dns.txt HTTP/1.0");
}

#[test]
fn aborted_download_logs_bytes_actually_sent() {
    const LEN: usize = 20 * 1024 * 1024;
    let s = TestServer::serving(&[("big.cvd", &pattern(LEN))]);
    let mut c = Conn::open(s.addr);
    c.send_request("GET", "/big.cvd", &[("Connection", "close")]);
    let mut got = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < got.len() {
        let k = c.stream.read(&mut got[n..]).unwrap();
        assert!(k > 0);
        n += k;
    }
    drop(c);
    let l = &lines(&s, 1)[0];
    assert_eq!(l.status, 200);
    assert!(
        l.bytes < LEN as u64,
        "logged {} bytes for an aborted {LEN}-byte download",
        l.bytes
    );
    // What we received minus the head is a lower bound.
    assert!(
        l.bytes + 1024 >= n as u64,
        "logged {} bytes but the client received {n}",
        l.bytes
    );
}

#[test]
fn access_log_dash_writes_to_stdout() {
    let p = TestServer::builder()
        .bare()
        .file("dns.txt", b"record")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--root",
            "root",
            "--access-log",
            "-",
        ])
        .start();
    let r = raw_response(
        p.addr,
        b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 200);
    let out = p.wait_stdout("an access-log line", |ls| {
        ls.iter().any(|l| l.contains("\"GET /dns.txt HTTP/1.1\""))
    });
    let line = out
        .iter()
        .find(|l| l.contains("\"GET /dns.txt HTTP/1.1\""))
        .unwrap();
    let l = LogLine::parse(line).unwrap();
    assert_eq!((l.status, l.bytes), (200, 6));
}
