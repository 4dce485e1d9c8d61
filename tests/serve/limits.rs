//! Resource limits under hostile clients: a slow-header client must not hold
//! a connection forever, and the connection cap must answer a clear 503
//! instead of silently dropping. Timing here uses generous deadlines only.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::http::Conn;
use crate::support::wait::{check, wait_until};
use crate::support::{DEADLINE, Response, TestServer};

fn slow_server() -> TestServer {
    TestServer::builder()
        .config("header_read_timeout = \"2s\"\n")
        .file("dns.txt", b"record")
        .start()
}

#[test]
fn slow_header_client_is_disconnected_after_header_timeout() {
    let s = slow_server();
    let mut slow = Conn::open(s.addr);
    slow.send(b"GET /dns.txt HT");
    let start = Instant::now();
    // Meanwhile others are served.
    let r = s.get("/dns.txt", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
    // Well under the 10 s default, so the configured 2 s is what applied.
    let closed = slow.closed_within(Duration::from_secs(8));
    assert!(
        closed.is_some(),
        "slow-header connection still open after {:?}",
        start.elapsed()
    );
    if let Some(bytes) = closed.filter(|b| !b.is_empty()) {
        let r = Response::parse(&bytes, false);
        assert!(
            r.status == 408 || r.status == 400,
            "slow client got {}",
            r.status
        );
    }
}

#[test]
fn slow_header_timeout_is_total_not_per_byte() {
    let s = slow_server();
    let mut slow = Conn::open(s.addr);
    slow.stream.set_nonblocking(false).unwrap();
    let start = Instant::now();
    let mut closed = false;
    // Dribble a never-ending header, one byte every 200 ms, for up to 8 s.
    slow.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    while start.elapsed() < Duration::from_secs(8) {
        if slow.stream.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        if slow.closed_within(Duration::from_millis(200)).is_some() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a client dribbling header bytes kept its connection for {:?}",
        start.elapsed()
    );
}

#[test]
fn slow_idle_connection_does_not_block_others() {
    let s = slow_server();
    let mut idle: Vec<Conn> = (0..5).map(|_| Conn::open(s.addr)).collect();
    for c in &mut idle {
        c.send(b"G");
    }
    for _ in 0..5 {
        assert_eq!(s.get("/dns.txt", &[]).status, 200);
    }
}

fn limited() -> TestServer {
    TestServer::builder()
        .args(["--max-conns", "2"])
        .file("dns.txt", b"record")
        .start()
}

/// Two connections the server has certainly accepted: one idle after a
/// keep-alive response, one in the middle of its next request.
fn hold_two(s: &TestServer) -> (Conn, Conn) {
    let mut idle = Conn::open(s.addr);
    assert_eq!(idle.roundtrip("GET", "/dns.txt", &[]).status, 200);
    let mut mid = Conn::open(s.addr);
    assert_eq!(mid.roundtrip("GET", "/dns.txt", &[]).status, 200);
    mid.send(b"GET /dns.txt HTTP/1.1\r\nHo");
    (idle, mid)
}

#[test]
fn connection_over_limit_gets_503_with_retry_after() {
    let s = limited();
    let (_idle, _mid) = hold_two(&s);
    let mut third = Conn::open(s.addr);
    third.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let bytes = third
        .closed_within(DEADLINE)
        .expect("third connection neither answered nor closed");
    assert!(
        !bytes.is_empty(),
        "third connection dropped silently instead of a 503"
    );
    let r = Response::parse(&bytes, false);
    assert_eq!(r.status, 503, "third connection: {:?}", r.headers);
    let retry = r.header("retry-after").expect("503 without Retry-After");
    assert!(
        retry.parse::<u64>().is_ok() || httpdate::parse_http_date(retry).is_ok(),
        "Retry-After {retry:?} is neither seconds nor an HTTP date"
    );
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
}

#[test]
fn over_limit_client_that_pauses_before_its_request_still_gets_503() {
    // Real clients do not send the request in the same instant they connect.
    let s = limited();
    let (_idle, _mid) = hold_two(&s);
    let mut third = Conn::open(s.addr);
    let early = third.closed_within(Duration::from_millis(500));
    assert!(
        early.as_ref().is_none_or(|b| !b.is_empty()),
        "over-limit connection dropped silently within 500 ms"
    );
    if early.is_none() {
        third.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let bytes = early.unwrap_or_else(|| {
        third
            .closed_within(DEADLINE)
            .expect("over-limit connection neither answered nor closed")
    });
    assert!(
        !bytes.is_empty(),
        "over-limit connection dropped without a response"
    );
    assert_eq!(Response::parse(&bytes, false).status, 503);
}

#[test]
fn connections_are_served_again_after_others_close() {
    let s = limited();
    let (idle, mid) = hold_two(&s);
    drop(idle);
    drop(mid);
    wait_until(DEADLINE, || {
        let mut c = Conn::open(s.addr);
        c.send(b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let bytes = c.closed_within(DEADLINE).unwrap_or_default();
        if !bytes.is_empty() {
            let r = Response::parse(&bytes, false);
            if r.status == 200 {
                assert_eq!(r.body, b"record");
                return Ok(());
            }
            assert_eq!(r.status, 503, "unexpected status while slots free up");
        }
        Err("never served again after the held connections closed")
    });
    // And both slots are usable at once again (the probe connection above
    // may take a moment to release its own slot).
    wait_until(DEADLINE, || {
        let mut a = Conn::open(s.addr);
        let mut b = Conn::open(s.addr);
        let (ra, rb) = (
            a.roundtrip("GET", "/dns.txt", &[]).status,
            b.roundtrip("GET", "/dns.txt", &[]).status,
        );
        check((ra, rb) == (200, 200), || {
            format!("two slots never free again: {ra} {rb}")
        })
    });
}

#[test]
fn connections_within_limit_are_served_concurrently() {
    let s = limited();
    let mut a = Conn::open(s.addr);
    let mut b = Conn::open(s.addr);
    for _ in 0..3 {
        assert_eq!(a.roundtrip("GET", "/dns.txt", &[]).status, 200);
        assert_eq!(b.roundtrip("GET", "/dns.txt", &[]).status, 200);
    }
}
