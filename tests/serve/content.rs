//! Response metadata per file type: freshclam and proxies in between must
//! see binary databases as opaque bytes, and a zero-byte cdiff is a
//! deliberate "fetch the whole CVD" signal that must reach the client as is.
//! ClamAV 1.5's detached signatures are ASCII text, revalidate like every
//! other file, and a missing one is an ordinary `404`.

use super::util::{http_date, set_mtime};
use crate::support::http::Conn;
use crate::support::wait::{check, wait_until};
use crate::support::{DEADLINE, Response, TestServer, fixture};

/// What a sigtool-written `.sign` looks like (the base64 cut short).
const SIGN: &[u8] = b"#clamsign-1.0\n230::pkcs7-pem:MIIaBgYJKoZIhvcNAQcCoIIZ9zCCGfMCAQExDzANBglghkgBZQMEAgEFADALBgkqhkiG9w0BBwE=\n";

/// Type of a ClamAV 1.5 `.sign` (see `pipeline::file::content_type`).
const SIGN_TYPE: &str = "text/plain; charset=us-ascii";

#[test]
fn content_types_follow_extensions() {
    let s = TestServer::builder()
        .file("bytecode.cvd", &fixture("bytecode-268.cvd"))
        .file("bytecode.cld", b"cld")
        .file("daily-27000.cdiff", b"ClamAV-Diff:27000:1:")
        .file("daily-27000.cdiff.sign", b"#clamsign-1.0\n")
        .file("bytecode-268.cvd.sign", b"#clamsign-1.0\n")
        .file("dns.txt", b"txt")
        .file("index.html", b"<p>hi</p>")
        .start();
    for (path, ct) in [
        ("/bytecode.cvd", "application/octet-stream"),
        ("/bytecode.cld", "application/octet-stream"),
        ("/daily-27000.cdiff", "application/octet-stream"),
        ("/daily-27000.cdiff.sign", SIGN_TYPE),
        ("/bytecode-268.cvd.sign", SIGN_TYPE),
        ("/dns.txt", "text/plain; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
    ] {
        let r = s.get(path, &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(
            s.request("HEAD", path, &[]).header("content-type"),
            Some(ct),
            "HEAD {path}"
        );
    }
}

#[test]
fn a_sign_is_text_with_validators_and_revalidates_to_304() {
    let s = TestServer::serving(&[
        ("daily-27780.cvd.sign", SIGN),
        ("daily-27781.cdiff.sign", SIGN),
    ]);
    for path in ["/daily-27780.cvd.sign", "/daily-27781.cdiff.sign"] {
        set_mtime(&s.root.join(&path[1..]), 1_000_000_000);
        let r = s.get(path, &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(SIGN_TYPE), "{path}");
        assert!(r.body == SIGN, "{path}: body differs from the file");
        let lm = http_date(1_000_000_000);
        assert_eq!(r.header("last-modified"), Some(lm.as_str()), "{path}");
        let etag = r
            .header("etag")
            .unwrap_or_else(|| panic!("{path}: no ETag in {:?}", r.headers))
            .to_owned();
        let not_modified = |r: Response, how: &str| {
            assert_eq!(r.status, 304, "{path} {how}: {:?}", r.headers);
            assert_eq!(r.header("etag"), Some(etag.as_str()), "{path} {how}");
            assert!(r.body.is_empty(), "{path} {how}: 304 with a body");
        };
        not_modified(s.get(path, &[("If-None-Match", &etag)]), "If-None-Match");
        not_modified(
            s.get(path, &[("If-Modified-Since", &lm)]),
            "If-Modified-Since",
        );
        // A new signature under the same name is a new representation.
        std::fs::write(s.root.join(&path[1..]), b"#clamsign-1.0\n\n").unwrap();
        let r = s.get(path, &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 200, "{path}: stale ETag revalidated");
        assert_eq!(r.body, b"#clamsign-1.0\n\n");
    }
}

/// freshclam 1.5 asks for `<db>-<version>.cvd.sign` after every CVD and
/// `<db>-N.cdiff.sign` after every patch. When the mirror has none, the
/// answer must be the plain `404` of any missing file: harmless to a normal
/// client, while a `403` or `429` would make freshclam back off from the
/// whole mirror. The same for a `.cld` or `.cld.sign`, which cvdmirror
/// never publishes.
#[test]
fn absent_signatures_and_clds_are_plain_404() {
    let s = TestServer::serving(&[
        ("daily.cvd", &fixture("bytecode-268.cvd")),
        ("daily-27780.cdiff", b"ClamAV-Diff:27780:1:"),
    ]);
    for path in [
        "/daily-268.cvd.sign",
        "/daily-27780.cdiff.sign",
        "/daily-268.cld.sign",
        "/daily.cld",
        "/daily.cvd.sign",
    ] {
        for method in ["GET", "HEAD"] {
            let r = s.request(method, path, &[]);
            assert_eq!(r.status, 404, "{method} {path}");
            for absent in ["etag", "last-modified", "retry-after", "location"] {
                assert_eq!(r.header(absent), None, "{method} {path}: {absent}");
            }
            assert_eq!(
                r.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{method} {path}"
            );
            if method == "GET" {
                assert_eq!(r.body, b"404 Not Found\n", "{path}");
            }
        }
    }
}

#[test]
fn zero_byte_cdiff_is_200_with_content_length_0() {
    let s = TestServer::serving(&[("daily-27001.cdiff", b""), ("dns.txt", b"record")]);
    let mut c = Conn::open(s.addr);
    let r = c.roundtrip("GET", "/daily-27001.cdiff", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
    let r = c.roundtrip("HEAD", "/daily-27001.cdiff", &[]);
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    // Framing stayed intact.
    assert_eq!(c.roundtrip("GET", "/dns.txt", &[]).body, b"record");
}

#[test]
fn file_body_is_exact_bytes() {
    let cvd = fixture("bytecode-339.cvd");
    let s = TestServer::serving(&[("bytecode.cvd", &cvd)]);
    let r = s.get("/bytecode.cvd", &[]);
    assert_eq!(r.header("content-length"), Some("281702"));
    assert!(r.body == cvd, "body differs from the file");
}

/// Reads one `Connection: close` response to EOF, reporting how it ended.
fn download(
    addr: std::net::SocketAddr,
    path: &str,
    slow: bool,
) -> (Vec<u8>, Option<std::io::Error>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; if slow { 4096 } else { 65536 }];
    let mut reads = 0u32;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
        reads += 1;
        if slow && reads.is_multiple_of(16) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[test]
fn concurrent_downloads_are_complete_and_exact() {
    let cvd = fixture("bytecode-339.cvd");
    let s = TestServer::serving(&[("bytecode.cvd", &cvd)]);
    let addr = s.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let cvd = cvd.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..6 {
                    let (raw, err) = download(addr, "/bytecode.cvd", (t + i) % 2 == 0);
                    let head_end = raw
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(raw.len(), |p| p + 4);
                    let body = &raw[head_end..];
                    if !raw.starts_with(b"HTTP/1.1 200") || body != cvd.as_slice() || err.is_some()
                    {
                        failures.push(format!(
                            "thread {t} download {i}: {:?}, {} of {} body bytes, ended by {err:?}",
                            String::from_utf8_lossy(&raw[..raw.len().min(15)]),
                            body.len(),
                            cvd.len()
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    if !failures.is_empty() {
        let alive = std::net::TcpStream::connect(addr).is_ok();
        panic!(
            "{} of 48 downloads incomplete:\n{}\nserver still accepting: {alive}\nserver stderr:\n{}",
            failures.len(),
            failures.join("\n"),
            s.stderr()
        );
    }
}

/// Downloads of the same version of a file share one open descriptor: a
/// herd of thousands of `daily.cvd` downloads must not run the process out
/// of file descriptors (each would otherwise hold its own).
#[test]
fn concurrent_downloads_of_one_version_share_a_descriptor() {
    use std::io::{Read, Write};
    let big = vec![0x5au8; 64 << 20];
    let s = TestServer::serving(&[("daily.cvd", &big)]);
    let target = s.root.join("daily.cvd");
    let open_on_target = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .filter(|link| *link == target)
                    .count()
            })
            .unwrap_or(0)
    };
    // Clients that read the head and a little, then stop reading: their
    // transfers stay open on the server.
    let clients: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(s.addr).unwrap();
            c.set_read_timeout(Some(DEADLINE)).unwrap();
            c.write_all(b"GET /daily.cvd HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            c.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            c
        })
        .collect();
    let open = open_on_target();
    assert_eq!(
        open, 1,
        "20 running downloads hold {open} descriptors of the file"
    );
    drop(clients);
    // A new version gets its own descriptor; the old one goes with its last download.
    wait_until(DEADLINE, || {
        check(
            open_on_target() == 0,
            || "descriptor kept after the downloads ended",
        )
    });
}
