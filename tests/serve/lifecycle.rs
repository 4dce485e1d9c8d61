//! Process lifecycle: startup output, listeners (IPv4, IPv6, several), the
//! default run, and graceful shutdown. A restart during a 60 MB daily.cvd
//! download must not cut clients off, yet a stalled client must not keep
//! the old process alive forever.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::time::Instant;

use super::util::{pattern, require_ipv6_loopback};
use crate::support::http::{Conn, raw_response};
use crate::support::wait::{check, wait_until};
use crate::support::{DEADLINE, TestServer};

const BIG: usize = 20 * 1024 * 1024;

/// Asserts `GET /dns.txt` on a new connection to `addr` gets the `record`
/// every server here serves.
fn assert_serves_record(addr: SocketAddr) {
    let r = raw_response(
        addr,
        b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"record"[..]),
        "{addr}"
    );
}

/// Asserts the server exits 0 within the deadline (`why` it should).
fn assert_exits_zero(p: &TestServer, why: &str) {
    let status = p.exit_within(DEADLINE).expect(why);
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        p.stderr()
    );
}

/// True once a new connection to `addr` is refused or closed unanswered.
fn not_accepting(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return true;
    };
    let _ = std::io::Write::write_all(
        &mut s,
        b"GET /dns.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// Starts a GET for `/big.cvd` and reads the head plus at least `min` body bytes.
fn start_big_download(addr: SocketAddr, min: usize) -> (Conn, Vec<u8>) {
    let mut c = Conn::open(addr);
    c.send_request("GET", "/big.cvd", &[]);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let body_start = loop {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before the response head");
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..body_start]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {BIG}")),
        "{head}"
    );
    let mut body = got.split_off(body_start);
    while body.len() < min {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "EOF early");
        body.extend_from_slice(&buf[..n]);
    }
    (c, body)
}

#[test]
fn graceful_shutdown_completes_inflight_download_then_exits_0() {
    let data = pattern(BIG);
    let p = TestServer::serving(&[("big.cvd", &data), ("dns.txt", b"record")]);
    let addr = p.addr;
    let (mut c, mut body) = start_big_download(addr, 1024 * 1024);
    p.signal("TERM");
    let start = Instant::now();
    wait_until(DEADLINE, || {
        check(not_accepting(addr), || {
            format!(
                "still accepting new connections {:?} after SIGTERM",
                start.elapsed()
            )
        })
    });
    // Now drain the rest, a little at a time at first.
    let mut buf = vec![0u8; 64 * 1024];
    while body.len() < BIG {
        match c.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => panic!("download cut off after {} of {BIG} bytes: {e}", body.len()),
        }
    }
    assert_eq!(body.len(), BIG, "download cut off by shutdown");
    assert!(body == data, "download corrupted");
    let status = p
        .exit_within(DEADLINE)
        .unwrap_or_else(|| panic!("no exit after the transfer: {}", p.stderr()));
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        p.stderr()
    );
}

#[test]
fn shutdown_grace_bounds_a_stalled_transfer() {
    let data = pattern(BIG);
    let p = TestServer::builder()
        .file("big.cvd", &data)
        .config("shutdown_grace = \"1s\"\n")
        .start();
    let (mut c, body) = start_big_download(p.addr, 64 * 1024);
    let start = Instant::now();
    p.signal("TERM");
    let status = p.exit_within(DEADLINE);
    let took = start.elapsed();
    assert!(
        status.is_some(),
        "process still running {took:?} after SIGTERM with a 1 s grace"
    );
    assert!(
        took >= Duration::from_millis(500),
        "exited after {took:?}, before the 1 s grace"
    );
    let mut rest = Vec::new();
    c.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(
        body.len() + rest.len() < BIG,
        "transfer finished although the client stalled"
    );
}

#[test]
fn sigterm_when_idle_exits_zero() {
    let p = TestServer::serving(&[("dns.txt", b"record")]);
    assert_serves_record(p.addr);
    p.signal("TERM");
    assert_exits_zero(&p, "idle server did not exit on SIGTERM");
}

#[test]
fn idle_keepalive_connection_does_not_delay_shutdown() {
    // Default grace is 30 s, longer than the deadline: an idle keep-alive
    // connection must be closed at once, not waited for.
    let p = TestServer::serving(&[("dns.txt", b"record")]);
    let mut c = Conn::open(p.addr);
    assert_eq!(c.roundtrip("GET", "/dns.txt", &[]).status, 200);
    p.signal("TERM");
    assert_exits_zero(&p, "an idle keep-alive connection kept the server alive");
    assert!(c.closed_within(DEADLINE).is_some());
}

#[test]
fn startup_prints_listening_lines_then_ready() {
    let p = TestServer::serving(&[]);
    let out = p.stdout();
    let ready = out.iter().position(|l| l.starts_with("ready")).unwrap();
    let listening: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("listening on http://"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(listening.len(), 1, "{out:?}");
    assert!(listening[0] < ready, "ready before listening: {out:?}");
    let addr = p.addr;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert!(out[listening[0]].ends_with('/'), "{out:?}");
}

#[test]
fn ipv6_loopback_listener_serves() {
    require_ipv6_loopback();
    let s = TestServer::builder()
        .no_default_listen()
        .args(["--listen", "[::1]:0"])
        .file("dns.txt", b"record")
        .start();
    assert!(s.addr.is_ipv6(), "{}", s.addr);
    let r = raw_response(
        s.addr,
        b"GET /dns.txt HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"record"[..]));
    let log = s.access_log_lines(1);
    assert!(
        log[0].starts_with("::1 "),
        "client address in log: {:?}",
        log[0]
    );
}

#[test]
fn two_listen_flags_give_two_listeners_both_serving() {
    require_ipv6_loopback();
    let s = TestServer::builder()
        .no_default_listen()
        .args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
        .file("dns.txt", b"record")
        .start();
    assert_eq!(s.addrs.len(), 2, "{:?}", s.addrs);
    assert!(
        s.addrs.iter().any(|a| a.is_ipv4()) && s.addrs.iter().any(|a| a.is_ipv6()),
        "{:?}",
        s.addrs
    );
    for addr in &s.addrs {
        assert_serves_record(*addr);
    }
}

#[test]
fn default_serve_creates_mirror_and_listens_on_8080() {
    let p = TestServer::builder().bare().start();
    assert!(
        p.dir.path().join("mirror").is_dir(),
        "./mirror was not created"
    );
    let mut addrs: Vec<String> = p.addrs.iter().map(SocketAddr::to_string).collect();
    addrs.sort();
    assert_eq!(
        addrs,
        ["0.0.0.0:8080", "[::]:8080"],
        "stdout: {:?}",
        p.stdout()
    );
    std::fs::write(p.dir.path().join("mirror/dns.txt"), "record").unwrap();
    for addr in ["127.0.0.1:8080", "[::1]:8080"] {
        assert_serves_record(addr.parse().unwrap());
    }
}
