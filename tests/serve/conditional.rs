//! Validators and conditional requests (RFC 9110 §8.8, §13). freshclam
//! decides "up to date" from `If-Modified-Since` against the header's stime,
//! so `Last-Modified` must be the stime and the 304/206 choice exact.

use super::util::{LM_268, STIME_19, STIME_268, STIME_339, assert_body, http_date, set_mtime};
use crate::support::http::Conn;
use crate::support::{Response, TestServer, fixture};

fn cvd_server() -> TestServer {
    TestServer::serving(&[("bytecode.cvd", &fixture("bytecode-268.cvd"))])
}

fn etag(s: &TestServer) -> String {
    let r = s.get("/bytecode.cvd", &[]);
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag in {:?}", r.headers))
        .to_owned()
}

fn assert_304(r: &Response, etag: &str, lm: &str) {
    assert_eq!(r.status, 304, "headers {:?}", r.headers);
    assert_eq!(r.header("etag"), Some(etag));
    assert_eq!(r.header("last-modified"), Some(lm));
    assert!(
        r.body.is_empty() && r.rest.is_empty(),
        "304 carried a body: {:?}",
        r.rest
    );
}

#[test]
fn cvd_last_modified_is_header_stime_not_mtime() {
    let s = cvd_server();
    set_mtime(&s.root.join("bytecode.cvd"), 1_000_000_000);
    let r = s.get("/bytecode.cvd", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("last-modified"), Some(LM_268));
    assert_eq!(http_date(STIME_268), LM_268);
}

#[test]
fn cld_last_modified_is_header_stime() {
    let mut cld = b"ClamAV-VDB:20 Aug 2015 10-50 -0400:268:47:63:X:X:anvilleg:1440082241".to_vec();
    cld.resize(512, b' ');
    cld.extend_from_slice(b"uncompressed tar would follow");
    let s = TestServer::serving(&[("bytecode.cld", &cld)]);
    set_mtime(&s.root.join("bytecode.cld"), 1_000_000_000);
    assert_eq!(
        s.get("/bytecode.cld", &[]).header("last-modified"),
        Some(LM_268)
    );
}

#[test]
fn non_cvd_last_modified_is_file_mtime() {
    let s = TestServer::serving(&[("dns.txt", b"0.103.1:59:26104:1615408140:0:63:49191:333")]);
    set_mtime(&s.root.join("dns.txt"), 1_000_000_000);
    assert_eq!(
        s.get("/dns.txt", &[]).header("last-modified"),
        Some("Sun, 09 Sep 2001 01:46:40 GMT")
    );
}

#[test]
fn cvd_with_broken_header_uses_file_mtime() {
    let mut garbage = b"ClamAV-VDB:not:a:valid:header".to_vec();
    garbage.resize(600, b'Z');
    let s = TestServer::serving(&[
        ("broken.cvd", &garbage),
        ("short.cvd", b"ClamAV-VDB:too short"),
    ]);
    set_mtime(&s.root.join("broken.cvd"), 1_000_000_000);
    set_mtime(&s.root.join("short.cvd"), 1_000_000_000);
    for path in ["/broken.cvd", "/short.cvd"] {
        let r = s.get(path, &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("last-modified"),
            Some("Sun, 09 Sep 2001 01:46:40 GMT"),
            "{path}"
        );
    }
}

#[test]
fn etag_is_strong_quoted_and_stable() {
    let s = cvd_server();
    let a = etag(&s);
    assert!(
        a.starts_with('"') && a.ends_with('"') && a.len() >= 3,
        "ETag {a:?} is not a quoted strong tag"
    );
    assert!(!a[1..a.len() - 1].contains('"'));
    assert_eq!(etag(&s), a, "ETag changed between identical requests");
    assert_eq!(
        s.request("HEAD", "/bytecode.cvd", &[]).header("etag"),
        Some(a.as_str())
    );
    assert_eq!(
        s.get("/bytecode.cvd", &[("Range", "bytes=0-9")])
            .header("etag"),
        Some(a.as_str())
    );
}

#[test]
fn new_version_gets_new_etag_and_later_last_modified() {
    let s = cvd_server();
    let old = etag(&s);
    let tmp = s.root.join(".bytecode.cvd.tmp");
    std::fs::write(&tmp, fixture("bytecode-339.cvd")).unwrap();
    std::fs::rename(&tmp, s.root.join("bytecode.cvd")).unwrap();
    let r = s.get("/bytecode.cvd", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 281_702);
    assert_ne!(
        r.header("etag"),
        Some(old.as_str()),
        "ETag did not change with the content"
    );
    assert_eq!(
        r.header("last-modified"),
        Some(http_date(STIME_339).as_str())
    );
}

#[test]
fn if_none_match_exact_etag_is_304() {
    let s = cvd_server();
    let e = etag(&s);
    assert_304(
        &s.get("/bytecode.cvd", &[("If-None-Match", &e)]),
        &e,
        LM_268,
    );
}

#[test]
fn if_none_match_uses_weak_comparison_star_and_lists() {
    let s = cvd_server();
    let e = etag(&s);
    for inm in [
        format!("W/{e}"),
        "*".to_owned(),
        format!("\"nope\", {e}"),
        format!("\"a\",W/{e} , \"b\""),
    ] {
        let r = s.get("/bytecode.cvd", &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
    }
}

#[test]
fn if_none_match_on_head_is_304() {
    let s = cvd_server();
    let e = etag(&s);
    let r = s.request("HEAD", "/bytecode.cvd", &[("If-None-Match", &e)]);
    assert_eq!(r.status, 304);
}

#[test]
fn if_none_match_mismatch_is_200() {
    let s = cvd_server();
    let r = s.get(
        "/bytecode.cvd",
        &[("If-None-Match", "\"definitely-not-it\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 78_992);
}

#[test]
fn if_modified_since_ignored_when_if_none_match_present() {
    let s = cvd_server();
    let future = http_date(STIME_339);
    let r = s.get(
        "/bytecode.cvd",
        &[
            ("If-None-Match", "\"nope\""),
            ("If-Modified-Since", &future),
        ],
    );
    assert_eq!(
        r.status, 200,
        "IMS must be ignored when If-None-Match is present (RFC 9110 §13.1.3)"
    );
}

#[test]
fn if_modified_since_equal_or_later_is_304() {
    let s = cvd_server();
    let e = etag(&s);
    assert_304(
        &s.get("/bytecode.cvd", &[("If-Modified-Since", LM_268)]),
        &e,
        LM_268,
    );
    assert_304(
        &s.get(
            "/bytecode.cvd",
            &[("If-Modified-Since", &http_date(STIME_339))],
        ),
        &e,
        LM_268,
    );
    assert_eq!(
        s.request("HEAD", "/bytecode.cvd", &[("If-Modified-Since", LM_268)])
            .status,
        304
    );
}

#[test]
fn if_modified_since_earlier_is_200() {
    let s = cvd_server();
    let r = s.get(
        "/bytecode.cvd",
        &[("If-Modified-Since", &http_date(STIME_268 - 1))],
    );
    assert_eq!(r.status, 200);
    assert_body(&r.body, &fixture("bytecode-268.cvd"), "bytecode-268.cvd");
}

#[test]
fn if_modified_since_accepts_obsolete_date_formats() {
    // RFC 9110 §5.6.7: recipients MUST accept rfc850-date and asctime-date.
    let s = cvd_server();
    for ims in [
        "Thursday, 20-Aug-15 14:50:41 GMT",
        "Thu Aug 20 14:50:41 2015",
    ] {
        assert_eq!(
            s.get("/bytecode.cvd", &[("If-Modified-Since", ims)]).status,
            304,
            "{ims}"
        );
    }
}

#[test]
fn invalid_if_modified_since_is_ignored() {
    let s = cvd_server();
    for ims in [
        "garbage",
        "",
        "Thu, 32 Aug 2015 14:50:41 GMT",
        "1440082241",
        "Thu, 20 Aug 2015 14:50:41 GMT junk",
    ] {
        let r = s.get("/bytecode.cvd", &[("If-Modified-Since", ims)]);
        assert_eq!(r.status, 200, "If-Modified-Since: {ims:?}");
        assert_eq!(r.body.len(), 78_992);
    }
}

#[test]
fn if_match_mismatch_is_412() {
    let s = cvd_server();
    let e = etag(&s);
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Match", "\"nope\"")]).status,
        412
    );
    // Strong comparison: a weak tag never matches.
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Match", &format!("W/{e}"))])
            .status,
        412
    );
}

#[test]
fn if_match_exact_or_star_is_200() {
    let s = cvd_server();
    let e = etag(&s);
    for im in [e.clone(), "*".to_owned(), format!("\"nope\", {e}")] {
        assert_eq!(
            s.get("/bytecode.cvd", &[("If-Match", &im)]).status,
            200,
            "If-Match: {im}"
        );
    }
}

#[test]
fn if_match_failure_wins_over_if_none_match() {
    let s = cvd_server();
    let e = etag(&s);
    let r = s.get(
        "/bytecode.cvd",
        &[("If-Match", "\"nope\""), ("If-None-Match", &e)],
    );
    assert_eq!(r.status, 412);
}

#[test]
fn if_unmodified_since_earlier_than_last_modified_is_412() {
    let s = cvd_server();
    assert_eq!(
        s.get(
            "/bytecode.cvd",
            &[("If-Unmodified-Since", &http_date(STIME_19))]
        )
        .status,
        412
    );
}

#[test]
fn if_unmodified_since_equal_or_later_is_200() {
    let s = cvd_server();
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Unmodified-Since", LM_268)])
            .status,
        200
    );
    assert_eq!(
        s.get(
            "/bytecode.cvd",
            &[("If-Unmodified-Since", &http_date(STIME_339))]
        )
        .status,
        200
    );
}

#[test]
fn if_unmodified_since_ignored_when_if_match_present() {
    let s = cvd_server();
    let e = etag(&s);
    let r = s.get(
        "/bytecode.cvd",
        &[
            ("If-Match", &e),
            ("If-Unmodified-Since", &http_date(STIME_19)),
        ],
    );
    assert_eq!(
        r.status, 200,
        "RFC 9110 §13.2.2 step 2 only applies without If-Match"
    );
}

#[test]
fn invalid_if_unmodified_since_is_ignored() {
    let s = cvd_server();
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Unmodified-Since", "yesterday")])
            .status,
        200
    );
}

#[test]
fn if_unmodified_since_failure_wins_over_if_none_match() {
    let s = cvd_server();
    let e = etag(&s);
    let r = s.get(
        "/bytecode.cvd",
        &[
            ("If-Unmodified-Since", &http_date(STIME_19)),
            ("If-None-Match", &e),
        ],
    );
    assert_eq!(r.status, 412);
}

#[test]
fn conditionals_on_missing_file_are_404() {
    let s = cvd_server();
    for (k, v) in [
        ("If-Match", "*"),
        ("If-None-Match", "*"),
        ("If-Modified-Since", LM_268),
    ] {
        assert_eq!(s.get("/main.cvd", &[(k, v)]).status, 404, "{k}: {v}");
    }
}

#[test]
fn if_range_with_matching_etag_applies_range() {
    let s = cvd_server();
    let e = etag(&s);
    let r = s.get(
        "/bytecode.cvd",
        &[("Range", "bytes=0-511"), ("If-Range", &e)],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 512);
}

#[test]
fn if_range_with_exact_last_modified_applies_range() {
    let s = cvd_server();
    let r = s.get(
        "/bytecode.cvd",
        &[("Range", "bytes=0-511"), ("If-Range", LM_268)],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 512);
}

#[test]
fn if_range_mismatch_returns_full_200() {
    let s = cvd_server();
    let e = etag(&s);
    for ir in [
        "\"other\"".to_owned(),
        format!("W/{e}"),
        http_date(STIME_339),
        http_date(STIME_19),
        "garbage".to_owned(),
    ] {
        let r = s.get(
            "/bytecode.cvd",
            &[("Range", "bytes=0-511"), ("If-Range", &ir)],
        );
        assert_eq!(r.status, 200, "If-Range: {ir}");
        assert_eq!(r.body.len(), 78_992, "If-Range: {ir}");
    }
}

#[test]
fn freshclam_header_check_same_version_is_304() {
    let s = cvd_server();
    let mut c = Conn::open(s.addr);
    c.send(
        format!(
            "GET /bytecode.cvd HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: 0)\r\nAccept: */*\r\nRange: bytes=0-511\r\nIf-Modified-Since: {LM_268}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("last-modified"), Some(LM_268));
    assert!(
        c.closed_within(crate::support::DEADLINE)
            .is_some_and(|rest| rest.is_empty()),
        "304 had a body"
    );
}

#[test]
fn freshclam_header_check_newer_file_is_206_with_512_bytes() {
    let cvd = fixture("bytecode-339.cvd");
    let s = TestServer::serving(&[("bytecode.cvd", &cvd)]);
    for old in [STIME_268, STIME_19] {
        let r = s.get(
            "/bytecode.cvd",
            &[
                ("Range", "bytes=0-511"),
                ("If-Modified-Since", &http_date(old)),
            ],
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 0-511/281702"));
        assert!(r.body == cvd[..512]);
    }
}

#[test]
fn freshclam_full_download_respects_if_modified_since() {
    let s = cvd_server();
    let r = s.get(
        "/bytecode.cvd",
        &[("If-Modified-Since", &http_date(STIME_19))],
    );
    assert_eq!(r.status, 200);
    assert_body(&r.body, &fixture("bytecode-268.cvd"), "bytecode-268.cvd");
    assert_eq!(
        s.get("/bytecode.cvd", &[("If-Modified-Since", LM_268)])
            .status,
        304
    );
}

#[test]
fn cld_probe_is_404_when_absent() {
    let s = cvd_server();
    let r = s.get(
        "/bytecode.cld",
        &[("Range", "bytes=0-511"), ("If-Modified-Since", LM_268)],
    );
    assert_eq!(r.status, 404);
}

/// Header checks and `304`s are answered without opening the file when its
/// path still names the version opened before; a new version published the
/// way sync does (rename over it) must be seen by the very next request.
#[test]
fn header_check_and_304_follow_a_renamed_in_version_at_once() {
    let s = cvd_server();
    let ims = http_date(STIME_268);
    let range = [("Range", "bytes=0-511")];
    // Warm: the first answers open the file and remember it.
    for _ in 0..3 {
        assert_eq!(
            s.get("/bytecode.cvd", &[("If-Modified-Since", &ims)])
                .status,
            304
        );
        let r = s.get("/bytecode.cvd", &range);
        assert_eq!(r.status, 206);
        assert_body(&r.body, &fixture("bytecode-268.cvd")[..512], "268 header");
    }
    let tmp = s.root.join(".bytecode.cvd.tmp");
    std::fs::write(&tmp, fixture("bytecode-339.cvd")).unwrap();
    std::fs::rename(&tmp, s.root.join("bytecode.cvd")).unwrap();
    let r = s.get("/bytecode.cvd", &range);
    assert_eq!(r.status, 206);
    assert_body(&r.body, &fixture("bytecode-339.cvd")[..512], "339 header");
    let r = s.get("/bytecode.cvd", &[("If-Modified-Since", &ims)]);
    assert_eq!(r.status, 200, "the newer version must not be answered 304");
}

/// An in-place rewrite that keeps the size and puts the mtime back (a
/// careless `cp --preserve`, a restore) still changes the ctime: the cached
/// header and validators must not outlive it.
#[test]
fn in_place_rewrite_with_restored_mtime_is_served_fresh() {
    let old = vec![b'A'; 1024];
    let s = TestServer::serving(&[("t.cvd", &old)]);
    let path = s.root.join("t.cvd");
    set_mtime(&path, 1_700_000_000);
    let range = [("Range", "bytes=0-511")];
    for _ in 0..3 {
        let r = s.get("/t.cvd", &range);
        assert_eq!((r.status, r.body.as_slice()), (206, &old[..512]));
    }
    // ctime has a clock tick's resolution: make sure it moves.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, vec![b'B'; 1024]).unwrap();
    set_mtime(&path, 1_700_000_000);
    let r = s.get("/t.cvd", &range);
    assert_eq!(r.status, 206);
    assert!(
        r.body.iter().all(|&b| b == b'B'),
        "stale header served: {:?}",
        &r.body[..8]
    );
}
