//! Virtual hosts: one process serving several mirrors, chosen by `Host`.
//! A wrong pick silently serves another site's databases, so each case
//! asserts which root answered.

use crate::support::http::raw_response;
use crate::support::{Response, TestServer};

struct Sites {
    server: TestServer,
    _roots: tempfile::TempDir,
}

fn sites() -> Sites {
    let roots = tempfile::tempdir().unwrap();
    let a = roots.path().join("a");
    let b = roots.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("which.txt"), "site-a").unwrap();
    std::fs::write(b.join("which.txt"), "site-b").unwrap();
    std::fs::write(a.join("only-a.txt"), "a-only").unwrap();
    let config = format!(
        "[[site]]\nhosts = [\"a.example\", \"www.a.example\"]\nroot = {:?}\n\n[[site]]\nhosts = [\"b.example\"]\nroot = {:?}\n",
        a.to_str().unwrap(),
        b.to_str().unwrap()
    );
    let server = TestServer::builder()
        .config(&config)
        .file("which.txt", b"default")
        .start();
    Sites {
        server,
        _roots: roots,
    }
}

fn with_host(s: &TestServer, host: Option<&str>, version: &str, target: &str) -> Response {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let req = format!("GET {target} HTTP/{version}\r\n{host}Connection: close\r\n\r\n");
    raw_response(s.addr, req.as_bytes(), false)
}

fn which(s: &TestServer, host: &str) -> String {
    let r = with_host(s, Some(host), "1.1", "/which.txt");
    assert_eq!(r.status, 200, "Host: {host}");
    String::from_utf8(r.body).unwrap()
}

#[test]
fn host_header_picks_the_site() {
    let s = sites();
    assert_eq!(which(&s.server, "a.example"), "site-a");
    assert_eq!(which(&s.server, "www.a.example"), "site-a");
    assert_eq!(which(&s.server, "b.example"), "site-b");
}

#[test]
fn host_match_ignores_case_port_and_trailing_dot() {
    let s = sites();
    for h in [
        "A.EXAMPLE",
        "a.Example",
        "a.example:8080",
        "a.example.",
        "A.example.:80",
    ] {
        assert_eq!(which(&s.server, h), "site-a", "Host: {h}");
    }
    assert_eq!(which(&s.server, "B.example:1"), "site-b");
}

#[test]
fn unknown_host_gets_default_site() {
    let s = sites();
    for h in [
        "unknown.example",
        "localhost",
        "127.0.0.1",
        "a.example.evil",
        "example",
        "xa.example",
    ] {
        assert_eq!(which(&s.server, h), "default", "Host: {h}");
    }
}

#[test]
fn missing_host_on_http10_gets_default_site() {
    let s = sites();
    let r = with_host(&s.server, None, "1.0", "/which.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"default"[..]));
}

#[test]
fn sites_do_not_see_each_others_files() {
    let s = sites();
    assert_eq!(
        with_host(&s.server, Some("a.example"), "1.1", "/only-a.txt").status,
        200
    );
    assert_eq!(
        with_host(&s.server, Some("b.example"), "1.1", "/only-a.txt").status,
        404
    );
    assert_eq!(
        with_host(&s.server, Some("other"), "1.1", "/only-a.txt").status,
        404
    );
    let r = with_host(&s.server, Some("b.example"), "1.1", "/../a/only-a.txt");
    assert_ne!(r.body, b"a-only");
}

#[test]
fn absolute_form_authority_picks_the_site() {
    // RFC 9112 §3.2.2: with an absolute-form target the server MUST ignore
    // Host and use the target's authority.
    let s = sites();
    let r = with_host(
        &s.server,
        Some("a.example"),
        "1.1",
        "http://b.example/which.txt",
    );
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).as_ref()),
        (200, "site-b")
    );
}
