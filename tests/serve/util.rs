//! What the serving-layer tests share beyond the harness: the genuine
//! fixtures' dates, byte patterns and file times to serve, and checks that
//! say what differs without dumping megabytes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `bytecode-268.cvd`'s header `stime`.
pub const STIME_268: u64 = 1_440_082_241;
/// `bytecode-19.cvd`'s header `stime`.
pub const STIME_19: u64 = 1_273_845_430;
/// `bytecode-339.cvd`'s header `stime`.
pub const STIME_339: u64 = 1_757_593_759;
/// `bytecode-268.cvd`'s `stime` as an HTTP date.
pub const LM_268: &str = "Thu, 20 Aug 2015 14:50:41 GMT";

/// Marker written into files outside the served root; it must never come back.
pub const SECRET: &str = "TOPSECRET-OUTSIDE-THE-ROOT";

/// Formats epoch seconds as an IMF-fixdate.
pub fn http_date(epoch: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(epoch))
}

/// Sets a file's modification time to `epoch` seconds.
pub fn set_mtime(path: &Path, epoch: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(epoch))
        .unwrap();
}

/// A deterministic, non-repeating-looking byte pattern of length `len`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 251) as u8).collect()
}

/// Now, in epoch seconds.
pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Fails with a clear message if IPv6 loopback cannot be bound here.
pub fn require_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!("IPv6 loopback [::1] is not usable on this machine ({e}); this test needs it");
    }
}

/// Asserts two bodies are equal without dumping megabytes on failure.
#[track_caller]
pub fn assert_body(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: body differs: {} bytes, expected {}; first difference at byte {first}; got {:?}...",
            actual.len(),
            expected.len(),
            String::from_utf8_lossy(&actual[first..actual.len().min(first + 80)])
        );
    }
}
