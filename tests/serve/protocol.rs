//! HTTP/1.x message handling (RFC 9112): persistence, HEAD, methods, and
//! what happens to malformed or oversized requests. A mirror on the open
//! internet sees every kind of garbage; each must get a clear 4xx and leave
//! the server serving everyone else.

use std::time::Duration;

use crate::support::http::{Conn, raw_response};
use crate::support::{DEADLINE, Response, TestServer, fixture};

fn cvd_server() -> TestServer {
    TestServer::serving(&[
        ("bytecode.cvd", &fixture("bytecode-268.cvd")),
        ("dns.txt", b"record"),
    ])
}

/// After a bad request, an ordinary request on a new connection still works.
fn assert_still_serving(s: &TestServer) {
    let r = s.get("/dns.txt", &[]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"record"[..]),
        "server stopped serving"
    );
}

fn send_raw(s: &TestServer, bytes: &[u8]) -> Response {
    raw_response(s.addr, bytes, false)
}

/// Sends `request` (the server may answer and close before reading it
/// all) and returns the status of the answer the server closes the
/// connection after.
fn answer_then_close(s: &TestServer, request: &[u8], what: &str) -> u16 {
    let mut c = Conn::open(s.addr);
    let _ = std::io::Write::write_all(&mut c.stream, request);
    let bytes = c
        .closed_within(DEADLINE)
        .unwrap_or_else(|| panic!("server did not close the connection after {what}"));
    assert!(!bytes.is_empty(), "server closed without a response");
    Response::parse(&bytes, false).status
}

/// Each of `requests`, sent on its own connection, is answered 400.
fn assert_each_is_400(s: &TestServer, requests: &[&[u8]]) {
    for req in requests {
        let r = send_raw(s, req);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn http11_keeps_connection_alive_by_default() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    for _ in 0..3 {
        let r = c.roundtrip("GET", "/dns.txt", &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
        assert_ne!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close")
        );
    }
    assert!(
        c.still_open(Duration::from_millis(300)),
        "server closed an idle HTTP/1.1 connection at once"
    );
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    c.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /bytecode.cvd HTTP/1.1\r\nHost: x\r\n\r\nGET /bytecode.cvd HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let a = c.read_response(false);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"record"[..]));
    let b = c.read_response(true);
    assert_eq!(b.status, 200);
    let d = c.read_response(false);
    assert_eq!((d.status, d.body.as_slice()), (206, &b"ClamAV-VDB"[..]));
    let e = c.read_response(false);
    assert_eq!(e.status, 404);
    assert!(
        c.closed_within(DEADLINE)
            .is_some_and(|rest| rest.is_empty())
    );
}

#[test]
fn connection_close_is_honoured() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    c.send_request("GET", "/dns.txt", &[("Connection", "close")]);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    let rest = c.closed_within(DEADLINE);
    assert!(
        rest.is_some(),
        "server kept the connection open after Connection: close"
    );
    assert!(rest.unwrap().is_empty(), "bytes after the response");
}

#[test]
fn http10_closes_after_response_by_default() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    c.send(b"GET /dns.txt HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
    assert!(
        c.closed_within(DEADLINE).is_some(),
        "HTTP/1.0 connection left open"
    );
}

#[test]
fn http10_keep_alive_when_requested() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    c.send(b"GET /dns.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("6"));
    c.send(b"GET /dns.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
}

#[test]
fn head_has_get_headers_and_no_body() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    let get = c.roundtrip("GET", "/bytecode.cvd", &[]);
    let head = c.roundtrip("HEAD", "/bytecode.cvd", &[]);
    // If HEAD had leaked a body, this response would not parse.
    let after = c.roundtrip("GET", "/dns.txt", &[]);
    assert_eq!(
        (after.status, after.body.as_slice()),
        (200, &b"record"[..]),
        "HEAD response carried a body"
    );
    assert_eq!(head.status, 200);
    for h in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "accept-ranges",
        "server",
    ] {
        assert!(get.header(h).is_some(), "GET lacks {h}");
        assert_eq!(
            head.header(h),
            get.header(h),
            "{h} differs between HEAD and GET"
        );
    }
    assert_eq!(head.header("content-length"), Some("78992"));
}

#[test]
fn head_on_missing_file_is_404_without_body() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    assert_eq!(c.roundtrip("HEAD", "/missing.cvd", &[]).status, 404);
    assert_eq!(
        c.roundtrip("GET", "/dns.txt", &[]).body,
        b"record",
        "HEAD 404 carried a body"
    );
}

#[test]
fn other_methods_are_405_with_allow() {
    let s = cvd_server();
    for m in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"] {
        let r = s.request(m, "/bytecode.cvd", &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{m}");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{m}: no Allow header"));
        let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        methods.sort_unstable();
        assert_eq!(methods, ["GET", "HEAD"], "{m}: Allow: {allow}");
    }
}

#[test]
fn extension_method_is_405_or_501() {
    // RFC 9110 §9.1 allows 501 for a method the server does not recognise.
    let s = cvd_server();
    let r = s.request("BREW", "/bytecode.cvd", &[]);
    assert!(r.status == 405 || r.status == 501, "BREW: {}", r.status);
}

/// Sends `METHOD /dns.txt` with a body that looks like a request and
/// returns the server's answer; then, on the same connection, a real
/// request: either the server closed after its answer or it answers the
/// real one, never the smuggled one.
fn smuggle(s: &TestServer, method: &str, check_first: impl FnOnce(&Response)) {
    let mut c = Conn::open(s.addr);
    // The body looks like a request: if the server left it unread, it would
    // answer it as one.
    let smuggled = "GET /bytecode.cvd HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(
        format!(
            "{method} /dns.txt HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        )
        .as_bytes(),
    );
    check_first(&c.read_response(false));
    c.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let rest = c.closed_within(DEADLINE).unwrap_or_default();
    if !rest.is_empty() {
        let r = Response::parse(&rest, false);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"record"[..]),
            "answered the smuggled request"
        );
        assert!(
            r.rest.is_empty(),
            "extra response after the second request: {:?}",
            String::from_utf8_lossy(&r.rest)
        );
    }
}

#[test]
fn post_body_does_not_corrupt_keepalive_stream() {
    let s = cvd_server();
    smuggle(&s, "POST", |first| assert_eq!(first.status, 405));
}

#[test]
fn garbage_request_line_is_400() {
    let s = cvd_server();
    assert_each_is_400(
        &s,
        &[
            b"HELLO\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /dns.txt\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ],
    );
    assert_still_serving(&s);
}

#[test]
fn missing_http_version_is_400() {
    let s = cvd_server();
    assert_each_is_400(&s, &[b"GET /dns.txt\r\n\r\n"]);
}

#[test]
fn bad_header_syntax_is_400() {
    let s = cvd_server();
    assert_each_is_400(
        &s,
        &[
            b"GET /dns.txt HTTP/1.1\r\nHost localhost\r\n\r\n",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nX-A : y\r\n\r\n",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\n: novalue-name\r\n\r\n",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nX-\x01A: b\r\n\r\n",
        ],
    );
    assert_still_serving(&s);
}

#[test]
fn invalid_characters_in_target_are_400() {
    let s = cvd_server();
    assert_each_is_400(
        &s,
        &[
            b"GET /dns\x01.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /dns\x7f.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        ],
    );
}

#[test]
fn target_without_leading_slash_is_400() {
    // Neither origin-form nor absolute-form (RFC 9112 §3.2).
    let s = cvd_server();
    assert_each_is_400(
        &s,
        &[b"GET dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    );
}

#[test]
fn unsupported_http_version_is_rejected() {
    // RFC 9110 §15.6.6 (505) or a plain 400; never served as if 1.1.
    let s = cvd_server();
    for req in [
        &b"GET /dns.txt HTTP/9.9\r\nHost: x\r\n\r\n"[..],
        b"GET /dns.txt HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /dns.txt HTTX/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = send_raw(&s, req);
        assert!(
            r.status == 400 || r.status == 505,
            "{:?}: {}",
            String::from_utf8_lossy(req),
            r.status
        );
    }
}

#[test]
fn http11_without_host_is_400() {
    let s = cvd_server();
    assert_each_is_400(&s, &[b"GET /dns.txt HTTP/1.1\r\nConnection: close\r\n\r\n"]);
}

#[test]
fn http10_without_host_is_served() {
    let s = cvd_server();
    let r = send_raw(&s, b"GET /dns.txt HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
}

#[test]
fn duplicate_host_is_400() {
    // RFC 9112 §3.2: MUST respond 400 to more than one Host field line.
    let s = cvd_server();
    assert_each_is_400(&s, &[b"GET /dns.txt HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"]);
}

#[test]
fn conflicting_content_lengths_are_400() {
    // RFC 9112 §6.3 item 5: invalid Content-Length is an unrecoverable error.
    let s = cvd_server();
    assert_each_is_400(
        &s,
        &[
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ],
    );
}

#[test]
fn oversized_header_is_431_and_connection_closed() {
    let s = cvd_server();
    let big = "a".repeat(100 * 1024);
    let status = answer_then_close(
        &s,
        format!("GET /dns.txt HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        "an oversized header",
    );
    assert!(status == 431 || status == 400, "oversized header: {status}");
    assert_still_serving(&s);
}

#[test]
fn too_many_headers_is_431_or_400() {
    let s = cvd_server();
    let mut req = String::from("GET /dns.txt HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let status = answer_then_close(&s, req.as_bytes(), "2000 headers");
    assert!(status == 431 || status == 400, "2000 headers: {status}");
    assert_still_serving(&s);
}

#[test]
fn oversized_request_line_is_rejected() {
    let s = cvd_server();
    let long = "a".repeat(100 * 1024);
    let status = answer_then_close(
        &s,
        format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        "a 100 KB target",
    );
    assert!(matches!(status, 400 | 414 | 431), "100 KB target: {status}");
    assert_still_serving(&s);
}

#[test]
fn responses_carry_server_and_date_headers() {
    let s = cvd_server();
    for p in ["/bytecode.cvd", "/missing"] {
        let r = s.get(p, &[]);
        assert_eq!(
            r.header("server"),
            Some(format!("cvdmirror/{}", env!("CARGO_PKG_VERSION")).as_str()),
            "{p}"
        );
        // RFC 9110 §6.6.1: an origin server with a clock MUST send Date.
        let date = r.header("date").unwrap_or_else(|| panic!("{p}: no Date"));
        assert!(
            httpdate::parse_http_date(date).is_ok(),
            "{p}: Date {date:?}"
        );
    }
}

#[test]
fn error_responses_have_a_framed_body() {
    // Error responses must be delimited so a keep-alive client can carry on.
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    let r = c.roundtrip("GET", "/missing", &[]);
    assert_eq!(r.status, 404);
    let r = c.roundtrip("PUT", "/dns.txt", &[("Content-Length", "0")]);
    assert_eq!(r.status, 405);
    let r = c.roundtrip("GET", "/dns.txt", &[]);
    assert_eq!(r.body, b"record");
}

#[test]
fn get_with_body_does_not_smuggle_a_request() {
    let s = cvd_server();
    smuggle(&s, "GET", |first| {
        assert_eq!((first.status, first.body.as_slice()), (200, &b"record"[..]));
    });
}

#[test]
fn method_names_are_case_sensitive() {
    // RFC 9110 §9.1: `get` is not GET.
    let s = cvd_server();
    let r = send_raw(
        &s,
        b"get /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.status == 405 || r.status == 501 || r.status == 400,
        "get: {}",
        r.status
    );
    assert_ne!(r.body, b"record");
}
