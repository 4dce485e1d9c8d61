//! Byte ranges (RFC 9110 §14): freshclam's header check is a `Range:
//! bytes=0-511` request, and resumable downloads of 60 MB files depend on
//! exact slices, so every 206 must carry exactly the bytes it claims.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::util::pattern;
use crate::support::http::Conn;
use crate::support::{Response, TestServer, fixture};

const LEN: usize = 78_992;

fn cvd_server() -> (TestServer, Vec<u8>) {
    let cvd = fixture("bytecode-268.cvd");
    assert_eq!(cvd.len(), LEN);
    (TestServer::serving(&[("bytecode.cvd", &cvd)]), cvd)
}

fn assert_206(r: &Response, full: &[u8], first: usize, last: usize) {
    assert_eq!(r.status, 206, "headers {:?}", r.headers);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {first}-{last}/{}", full.len()).as_str())
    );
    assert_eq!(
        r.header("content-length"),
        Some((last - first + 1).to_string().as_str())
    );
    assert!(
        r.body == full[first..=last],
        "206 body is not bytes {first}-{last}"
    );
}

fn assert_full_200(r: &Response, full: &[u8], why: &str) {
    assert_eq!(r.status, 200, "{why}: headers {:?}", r.headers);
    assert_eq!(r.header("content-range"), None, "{why}");
    assert_eq!(
        r.header("content-length"),
        Some(full.len().to_string().as_str()),
        "{why}"
    );
    assert!(r.body == full, "{why}: 200 body is not the whole file");
}

fn assert_416(r: &Response, len: usize) {
    assert_eq!(r.status, 416, "headers {:?}", r.headers);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
}

#[test]
fn header_check_range_returns_first_512_bytes() {
    let (s, cvd) = cvd_server();
    let r = s.get("/bytecode.cvd", &[("Range", "bytes=0-511")]);
    assert_206(&r, &cvd, 0, 511);
    assert!(r.body.starts_with(b"ClamAV-VDB:"));
}

#[test]
fn range_open_ended_returns_rest_of_file() {
    let (s, cvd) = cvd_server();
    let r = s.get("/bytecode.cvd", &[("Range", "bytes=70000-")]);
    assert_206(&r, &cvd, 70_000, LEN - 1);
}

#[test]
fn range_suffix_returns_last_n_bytes() {
    let (s, cvd) = cvd_server();
    let r = s.get("/bytecode.cvd", &[("Range", "bytes=-100")]);
    assert_206(&r, &cvd, LEN - 100, LEN - 1);
}

#[test]
fn range_suffix_longer_than_file_returns_whole_file_as_206() {
    let (s, cvd) = cvd_server();
    let r = s.get("/bytecode.cvd", &[("Range", "bytes=-1000000")]);
    assert_206(&r, &cvd, 0, LEN - 1);
}

#[test]
fn range_single_byte() {
    let (s, cvd) = cvd_server();
    assert_206(
        &s.get("/bytecode.cvd", &[("Range", "bytes=5-5")]),
        &cvd,
        5,
        5,
    );
    assert_206(
        &s.get("/bytecode.cvd", &[("Range", "bytes=78991-78991")]),
        &cvd,
        LEN - 1,
        LEN - 1,
    );
}

#[test]
fn range_end_beyond_file_is_clamped() {
    let (s, cvd) = cvd_server();
    let r = s.get("/bytecode.cvd", &[("Range", "bytes=78000-99999999")]);
    assert_206(&r, &cvd, 78_000, LEN - 1);
}

#[test]
fn range_start_at_or_past_end_is_416() {
    let (s, _) = cvd_server();
    assert_416(&s.get("/bytecode.cvd", &[("Range", "bytes=78992-")]), LEN);
    assert_416(
        &s.get("/bytecode.cvd", &[("Range", "bytes=100000-200000")]),
        LEN,
    );
}

#[test]
fn range_suffix_zero_is_416() {
    let (s, _) = cvd_server();
    assert_416(&s.get("/bytecode.cvd", &[("Range", "bytes=-0")]), LEN);
}

#[test]
fn malformed_range_is_ignored_and_full_file_served() {
    let (s, cvd) = cvd_server();
    for range in [
        "items=0-5",
        "bytes=abc",
        "bytes=5-2",
        "bytes=",
        "bytes=-",
        "bytes 0-5",
        "bytes=0-5-7",
        "bytes=--5",
        "bytes=0x10-0x20",
        "=0-5",
        "garbage",
    ] {
        assert_full_200(&s.get("/bytecode.cvd", &[("Range", range)]), &cvd, range);
    }
}

#[test]
fn multi_range_returns_full_200_never_a_wrong_206() {
    let (s, cvd) = cvd_server();
    for range in [
        "bytes=0-1,5-9",
        "bytes=0-1, 5-9",
        "bytes=-5,0-3",
        "bytes=0-1,999999-",
    ] {
        assert_full_200(&s.get("/bytecode.cvd", &[("Range", range)]), &cvd, range);
    }
}

#[test]
fn range_with_overflowing_numbers_never_errors() {
    let (s, cvd) = cvd_server();
    for range in [
        "bytes=0-99999999999999999999999999",
        "bytes=99999999999999999999999999-",
        "bytes=-99999999999999999999999",
    ] {
        let r = s.get("/bytecode.cvd", &[("Range", range)]);
        assert!(r.status < 500, "{range}: {}", r.status);
        match r.status {
            200 => assert!(r.body == cvd, "{range}: 200 body is not the whole file"),
            206 => {
                let cr = r.header("content-range").unwrap_or_default().to_owned();
                let (first, last) = parse_content_range(&cr, LEN);
                assert!(
                    r.body == cvd[first..=last],
                    "{range}: 206 body disagrees with {cr}"
                );
            }
            416 => assert_416(&r, LEN),
            other => panic!("{range}: unexpected status {other}"),
        }
    }
}

fn parse_content_range(cr: &str, len: usize) -> (usize, usize) {
    let spec = cr
        .strip_prefix("bytes ")
        .unwrap_or_else(|| panic!("content-range {cr:?}"));
    let (range, total) = spec.split_once('/').unwrap();
    assert_eq!(total, len.to_string());
    let (a, b) = range.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn file_responses_advertise_accept_ranges_bytes() {
    let (s, _) = cvd_server();
    assert_eq!(
        s.get("/bytecode.cvd", &[]).header("accept-ranges"),
        Some("bytes")
    );
    assert_eq!(
        s.get("/bytecode.cvd", &[("Range", "bytes=0-9")])
            .header("accept-ranges"),
        Some("bytes")
    );
}

#[test]
fn range_on_missing_file_is_404() {
    let (s, _) = cvd_server();
    assert_eq!(s.get("/daily.cvd", &[("Range", "bytes=0-511")]).status, 404);
}

#[test]
fn any_range_on_zero_byte_file_is_416() {
    let s = TestServer::serving(&[("daily-2.cdiff", b"")]);
    assert_416(&s.get("/daily-2.cdiff", &[("Range", "bytes=0-0")]), 0);
    assert_416(&s.get("/daily-2.cdiff", &[("Range", "bytes=0-")]), 0);
}

#[test]
fn ranges_on_one_keepalive_connection_stay_in_sync() {
    let (s, cvd) = cvd_server();
    let mut c = Conn::open(s.addr);
    for (first, last) in [(0, 511), (512, 1023), (78_000, LEN - 1), (1, 1)] {
        let r = c.roundtrip(
            "GET",
            "/bytecode.cvd",
            &[("Range", &format!("bytes={first}-{last}"))],
        );
        assert_206(&r, &cvd, first, last);
    }
}

#[derive(Debug, Clone)]
enum Spec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

/// For random files and random single ranges, the 206 body is exactly the
/// slice the spec says, 416 exactly when unsatisfiable, 200 for `a > b`.
#[test]
fn random_single_ranges_match_the_slice() {
    let lens = [1usize, 2, 511, 512, 513, 4096, 70_001];
    let mut b = TestServer::builder().file("empty.cdiff", b"");
    let files: Vec<Vec<u8>> = lens.iter().map(|&l| pattern(l)).collect();
    for (l, f) in lens.iter().zip(&files) {
        b = b.file(&format!("f{l}.bin"), f);
    }
    let s = b.start();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let n = 0u64..80_000;
    let spec = prop_oneof![
        (n.clone(), n.clone()).prop_map(|(a, b)| Spec::FromTo(a, b)),
        (0u64..600, 0u64..600).prop_map(|(a, b)| Spec::FromTo(a, b)),
        n.clone().prop_map(Spec::From),
        n.prop_map(Spec::Suffix),
        (0u64..600).prop_map(Spec::Suffix),
    ];
    runner
        .run(&(0..=lens.len(), spec), |(which, spec)| {
            let (name, body): (String, &[u8]) = if which == lens.len() {
                ("empty.cdiff".into(), b"")
            } else {
                (format!("f{}.bin", lens[which]), &files[which])
            };
            let len = body.len() as u64;
            if len == 0 && matches!(spec, Spec::Suffix(_)) {
                // RFC 9110 §14.1.1 calls a non-zero suffix on an empty
                // representation satisfiable but no 206 can express it.
                return Ok(());
            }
            let header = match spec {
                Spec::FromTo(a, b) => format!("bytes={a}-{b}"),
                Spec::From(a) => format!("bytes={a}-"),
                Spec::Suffix(n) => format!("bytes=-{n}"),
            };
            // Expected: None = 200 full, Some(None) = 416, Some(Some((a, b))) = 206.
            let expected = match spec {
                Spec::FromTo(a, b) if a > b => None,
                Spec::FromTo(a, _) | Spec::From(a) if a >= len => Some(None),
                Spec::FromTo(a, b) => Some(Some((a, b.min(len - 1)))),
                Spec::From(a) => Some(Some((a, len - 1))),
                Spec::Suffix(0) => Some(None),
                Spec::Suffix(n) => Some(Some((len.saturating_sub(n), len - 1))),
            };
            let r = s.get(&format!("/{name}"), &[("Range", &header)]);
            match expected {
                None => {
                    prop_assert_eq!(r.status, 200, "{} on {}", header, name);
                    prop_assert!(r.body == body);
                }
                Some(None) => {
                    prop_assert_eq!(r.status, 416, "{} on {}", header, name);
                    prop_assert_eq!(
                        r.header("content-range").map(str::to_owned),
                        Some(format!("bytes */{len}"))
                    );
                }
                Some(Some((a, b))) => {
                    prop_assert_eq!(r.status, 206, "{} on {}", header, name);
                    prop_assert_eq!(
                        r.header("content-range").map(str::to_owned),
                        Some(format!("bytes {a}-{b}/{len}"))
                    );
                    prop_assert!(
                        r.body == body[a as usize..=b as usize],
                        "{} on {}: wrong bytes",
                        header,
                        name
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}
