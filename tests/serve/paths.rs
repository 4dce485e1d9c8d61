//! Mapping request targets to files: the server is exposed to the internet,
//! so no spelling of a path may reach a file outside the root, dotfiles stay
//! private, and a missing file is a 404 (a 403 makes freshclam back off for
//! 24 hours).

use std::os::unix::fs::symlink;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::util::{SECRET, assert_body};
use crate::support::http::{Conn, raw_response};
use crate::support::{Response, TestServer, fixture};

const LITERAL: &[u8] = b"LITERAL-PERCENT-NAME";

/// A server whose temp dir holds secrets next to the root:
/// `DIR/secret.txt`, `DIR/etc/passwd`, `DIR/other/secret.txt`.
fn server() -> TestServer {
    let s = TestServer::builder()
        .file("bytecode.cvd", &fixture("bytecode-268.cvd"))
        .file("dns.txt", b"dns record")
        .file("sub/file.txt", b"in a subdirectory")
        .file("sub/.hidden2", SECRET.as_bytes())
        .file(".hidden", SECRET.as_bytes())
        .file(".git/config", SECRET.as_bytes())
        .file("%2e%2e", LITERAL)
        .file("with space.txt", b"spaced")
        .start();
    let dir = s.dir.path();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/passwd"), SECRET).unwrap();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::fs::write(dir.join("other/secret.txt"), SECRET).unwrap();
    s
}

fn get_raw_target(s: &TestServer, target: &str) -> Response {
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_response(s.addr, req.as_bytes(), false)
}

fn assert_no_leak(target: &str, r: &Response) {
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains(SECRET),
        "{target}: served a file outside the root (status {})",
        r.status
    );
    assert!(
        !body.contains("root:x:0:0"),
        "{target}: served the system /etc/passwd"
    );
    assert!(r.status < 500, "{target}: server error {}", r.status);
}

fn assert_rejected(s: &TestServer, target: &str) {
    let r = get_raw_target(s, target);
    assert_no_leak(target, &r);
    assert!(
        r.status == 400 || r.status == 404,
        "{target}: expected 400 or 404, got {}",
        r.status
    );
}

#[test]
fn plain_file_is_served() {
    let s = server();
    let r = s.get("/bytecode.cvd", &[]);
    assert_eq!(r.status, 200);
    assert_body(&r.body, &fixture("bytecode-268.cvd"), "bytecode-268.cvd");
    assert_eq!(s.get("/sub/file.txt", &[]).body, b"in a subdirectory");
}

#[test]
fn missing_file_is_404_never_403() {
    let s = server();
    for p in [
        "/daily.cvd",
        "/daily-27000.cdiff",
        "/sub/nothing",
        "/nothing/deeper/x.cvd",
    ] {
        assert_eq!(s.get(p, &[]).status, 404, "{p}");
    }
}

#[test]
fn directories_are_404_without_listing() {
    let s = server();
    for p in ["/", "/sub", "/sub/"] {
        let r = s.get(p, &[]);
        assert_eq!(r.status, 404, "{p}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("file.txt"),
            "{p} leaked a listing"
        );
    }
}

#[test]
fn dotfiles_and_dot_directories_are_404() {
    let s = server();
    for p in [
        "/.hidden",
        "/.git/config",
        "/.git/",
        "/.git",
        "/sub/.hidden2",
        "/%2ehidden",
        "/%2Egit/config",
        "/sub/%2ehidden2",
    ] {
        let r = get_raw_target(&s, p);
        assert_eq!(r.status, 404, "{p}");
        assert_no_leak(p, &r);
    }
}

#[test]
fn raw_dotdot_never_escapes_root() {
    let s = server();
    for p in [
        "/../secret.txt",
        "/../etc/passwd",
        "/a/../../secret.txt",
        "/sub/../../secret.txt",
        "/sub/../../other/secret.txt",
        "/../../../../../../etc/passwd",
        "/..",
        "/../",
        "/sub/..",
    ] {
        assert_rejected(&s, p);
    }
}

#[test]
fn encoded_dotdot_never_escapes_root() {
    let s = server();
    for p in [
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/%2E%2E%2Fetc%2Fpasswd",
        "/..%2fsecret.txt",
        "/..%2Fetc%2Fpasswd",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/%2e%2e%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
    ] {
        assert_rejected(&s, p);
    }
}

#[test]
fn absolute_paths_inside_target_never_escape_root() {
    let s = server();
    let abs = s.dir.path().join("secret.txt");
    let abs = abs.to_str().unwrap();
    let encoded = abs.replace('/', "%2F");
    for p in [
        "//etc/passwd".to_owned(),
        "/%2Fetc%2Fpasswd".to_owned(),
        "/%2fetc/passwd".to_owned(),
        format!("/{abs}"),
        format!("/{encoded}"),
        format!("/sub/{encoded}"),
    ] {
        assert_rejected(&s, &p);
    }
}

#[test]
fn dotdot_in_absolute_form_target_never_escapes_root() {
    let s = server();
    for p in [
        "http://localhost/../secret.txt",
        "http://localhost/%2e%2e/secret.txt",
        "http://localhost/..%2fsecret.txt",
    ] {
        assert_rejected(&s, p);
    }
}

#[test]
fn encoded_slash_is_not_a_separator() {
    let s = server();
    let r = get_raw_target(&s, "/sub%2Ffile.txt");
    assert!(
        r.status == 404 || r.status == 400,
        "/sub%2Ffile.txt: {}",
        r.status
    );
    assert_ne!(r.body, b"in a subdirectory");
}

#[test]
fn percent_encoded_names_are_decoded_once() {
    let s = server();
    let r = get_raw_target(&s, "/bytecode%2Ecvd");
    assert_eq!(r.status, 200, "/bytecode%2Ecvd");
    assert_body(&r.body, &fixture("bytecode-268.cvd"), "bytecode-268.cvd");
    let r = get_raw_target(&s, "/with%20space.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"spaced"[..]));
    let r = get_raw_target(&s, "/%73ub/file%2etxt");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"in a subdirectory"[..])
    );
}

#[test]
fn double_encoded_dotdot_is_a_literal_file_name() {
    let s = server();
    let r = get_raw_target(&s, "/%252e%252e");
    assert_eq!(r.status, 200, "the file named %2e%2e must be served");
    assert_eq!(r.body, LITERAL);
}

#[test]
fn invalid_percent_encoding_is_400() {
    let s = server();
    for p in ["/%zz", "/%", "/%4", "/bytecode.cvd%", "/%g0.cvd", "/a%2"] {
        let r = get_raw_target(&s, p);
        assert_eq!(r.status, 400, "{p}");
    }
}

#[test]
fn encoded_nul_is_400() {
    let s = server();
    for p in [
        "/%00",
        "/bytecode.cvd%00",
        "/bytecode.cvd%00.txt",
        "/sub/%00/file.txt",
    ] {
        let r = get_raw_target(&s, p);
        assert_eq!(r.status, 400, "{p}");
    }
}

#[test]
fn symlink_pointing_outside_root_is_404() {
    let s = server();
    let dir = s.dir.path();
    symlink(dir.join("secret.txt"), s.root.join("abs-escape.txt")).unwrap();
    symlink("../secret.txt", s.root.join("rel-escape.txt")).unwrap();
    symlink(dir.join("other"), s.root.join("linkdir")).unwrap();
    symlink("/etc/passwd", s.root.join("passwd")).unwrap();
    for p in [
        "/abs-escape.txt",
        "/rel-escape.txt",
        "/linkdir/secret.txt",
        "/passwd",
    ] {
        let r = s.get(p, &[]);
        assert_no_leak(p, &r);
        assert_eq!(r.status, 404, "{p}");
    }
}

#[test]
fn relative_symlink_within_root_is_served() {
    let s = server();
    symlink("bytecode.cvd", s.root.join("alias.cvd")).unwrap();
    symlink("../bytecode.cvd", s.root.join("sub/up-alias.cvd")).unwrap();
    symlink("sub/file.txt", s.root.join("down-alias.txt")).unwrap();
    for p in ["/alias.cvd", "/sub/up-alias.cvd"] {
        let r = s.get(p, &[]);
        assert_eq!(r.status, 200, "{p}");
        assert_body(&r.body, &fixture("bytecode-268.cvd"), p);
    }
    let r = s.get("/down-alias.txt", &[]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"in a subdirectory"[..])
    );
}

#[test]
fn absolute_symlink_to_file_within_root_is_served() {
    // Operators point `daily.cvd` at a versioned file with `ln -s /srv/...`.
    let s = server();
    symlink(s.root.join("sub/file.txt"), s.root.join("abs-alias.txt")).unwrap();
    let r = s.get("/abs-alias.txt", &[]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"in a subdirectory"[..])
    );
}

#[test]
fn query_string_is_ignored() {
    let s = server();
    for p in [
        "/bytecode.cvd?x=1",
        "/bytecode.cvd?",
        "/bytecode.cvd?../../secret.txt",
        "/bytecode.cvd?%zz",
    ] {
        let r = get_raw_target(&s, p);
        assert_eq!(r.status, 200, "{p}");
        assert_body(&r.body, &fixture("bytecode-268.cvd"), p);
    }
}

#[test]
fn absolute_form_target_is_served() {
    let s = server();
    let r = get_raw_target(&s, "http://localhost/bytecode.cvd");
    assert_eq!(r.status, 200);
    assert_body(&r.body, &fixture("bytecode-268.cvd"), "bytecode-268.cvd");
}

#[test]
fn directory_listing_shows_visible_names_escaped() {
    let s = TestServer::builder()
        .args(["--directory-listing"])
        .file("bytecode.cvd", b"x")
        .file("sub/file.txt", b"y")
        .file(".hidden", b"z")
        .file(".git/config", b"z")
        .file("<b>&'\"evil.txt", b"w")
        .start();
    let r = s.get("/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(r.body).unwrap();
    assert!(
        html.contains("bytecode.cvd") && html.contains("sub"),
        "{html}"
    );
    assert!(
        !html.contains(".hidden") && !html.contains(".git"),
        "dotfiles listed: {html}"
    );
    assert!(!html.contains("<b>"), "file name not escaped: {html}");
    assert!(html.contains("&lt;b&gt;"), "escaped name missing: {html}");
    let r = s.get("/sub/", &[]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("file.txt"));
    assert_eq!(s.get("/.git/", &[]).status, 404);
    assert_eq!(s.get("/nothing/", &[]).status, 404);
    // Files are still files.
    assert_eq!(s.get("/sub/file.txt", &[]).body, b"y");
}

#[test]
fn directory_listing_never_lists_outside_root() {
    let s = TestServer::builder()
        .args(["--directory-listing"])
        .file("a.cvd", b"x")
        .start();
    std::fs::write(s.dir.path().join("secret-name-outside.txt"), SECRET).unwrap();
    for p in ["/../", "/%2e%2e/", "/..%2f", "//"] {
        let r = get_raw_target(&s, p);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("secret-name-outside"),
            "{p} listed the parent"
        );
        assert!(r.status < 500, "{p}: {}", r.status);
    }
}

/// Random paths built from traversal-prone pieces never reach outside the
/// root and never make the server fail.
#[test]
fn random_paths_never_escape_root_or_5xx() {
    let s = server();
    let files: Vec<Vec<u8>> = vec![
        fixture("bytecode-268.cvd"),
        b"dns record".to_vec(),
        b"in a subdirectory".to_vec(),
        LITERAL.to_vec(),
        b"spaced".to_vec(),
    ];
    let piece = prop_oneof![
        Just("/"),
        Just(".."),
        Just("."),
        Just("%2e"),
        Just("%2E"),
        Just("%2f"),
        Just("%2F"),
        Just("%5c"),
        Just("\\"),
        Just("%25"),
        Just("%"),
        Just("%00"),
        Just("secret.txt"),
        Just("etc"),
        Just("passwd"),
        Just("other"),
        Just("sub"),
        Just("file.txt"),
        Just("bytecode.cvd"),
        Just(".hidden"),
        Just("%2e%2e"),
        Just("?"),
        Just("#"),
        Just(";"),
        Just("~"),
        Just("a"),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(piece, 0..12), |pieces| {
            let target = format!("/{}", pieces.concat());
            let r = get_raw_target(&s, &target);
            let body = String::from_utf8_lossy(&r.body);
            prop_assert!(!body.contains(SECRET), "{} leaked a secret", target);
            prop_assert!(
                !body.contains("root:x:0:0"),
                "{} leaked /etc/passwd",
                target
            );
            prop_assert!(r.status < 500, "{} -> {}", target, r.status);
            if r.status == 200 {
                prop_assert!(files.contains(&r.body), "{} served unknown content", target);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn trailing_slash_on_a_file_is_404() {
    let s = server();
    for p in ["/bytecode.cvd/", "/sub/file.txt/", "/bytecode.cvd/x"] {
        let r = s.get(p, &[]);
        assert_eq!(r.status, 404, "{p}");
    }
}

#[test]
fn overlong_names_are_not_server_errors() {
    let s = server();
    let component = "a".repeat(300);
    let deep = format!("/{}", vec!["b"; 3000].join("/"));
    for p in [
        format!("/{component}"),
        format!("/sub/{component}.cvd"),
        deep,
        format!("/{}", "%41".repeat(1000)),
    ] {
        let r = get_raw_target(&s, &p);
        assert!(
            matches!(r.status, 400 | 404 | 414),
            "{}...: {}",
            &p[..40],
            r.status
        );
    }
    assert_eq!(s.get("/dns.txt", &[]).status, 200);
}

#[test]
fn fifo_in_root_is_404_and_does_not_hang_the_server() {
    let s = server();
    let status = std::process::Command::new("mkfifo")
        .arg(s.root.join("pipe.cvd"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
    let mut c = Conn::open(s.addr);
    c.send(b"GET /pipe.cvd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // Others are served while (or after) the FIFO request is handled.
    for _ in 0..4 {
        assert_eq!(s.get("/dns.txt", &[]).status, 200, "server stuck on a FIFO");
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 404, "FIFO");
}

/// A path answered before (and remembered, so later header checks and
/// `304`s skip the open) is swapped for a symlink that leaves the root:
/// the very next request must be refused, whatever it asks for. The
/// outside file is an exact copy, so only identity can tell them apart.
#[test]
fn served_path_swapped_for_an_escaping_symlink_is_404() {
    let s = server();
    let outside = s.dir.path().join("copy.cvd");
    std::fs::write(&outside, fixture("bytecode-268.cvd")).unwrap();
    let lm = s
        .get("/bytecode.cvd", &[])
        .header("last-modified")
        .unwrap()
        .to_owned();
    let checks: [&[(&str, &str)]; 3] = [
        &[("Range", "bytes=0-511")],
        &[("If-Modified-Since", &lm)],
        &[],
    ];
    for _ in 0..3 {
        for headers in checks {
            assert!(matches!(
                s.get("/bytecode.cvd", headers).status,
                200 | 206 | 304
            ));
        }
    }
    std::fs::remove_file(s.root.join("bytecode.cvd")).unwrap();
    symlink(&outside, s.root.join("bytecode.cvd")).unwrap();
    for headers in checks {
        let r = s.get("/bytecode.cvd", headers);
        assert_eq!(r.status, 404, "{headers:?}");
        let r = s.request("HEAD", "/bytecode.cvd", headers);
        assert_eq!(r.status, 404, "HEAD {headers:?}");
    }
}
