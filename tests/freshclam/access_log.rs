//! The access-log reader the real-client tests match freshclam's trace
//! against (`support::access_log`, the library's own parser) reads the
//! lines cvdmirror writes for freshclam: path, status, bytes (`-` as 0)
//! and the User-Agent as the client sent it. Shared by the freshclam and
//! TLS suites, which both check freshclam's requests against it.

use crate::support::access_log::LogLine;

#[test]
fn parses_a_combined_line() {
    let e = LogLine::parse(
        r#"127.0.0.1 - - [27/Nov/2026:23:28:34 +0000] "GET /bytecode.cvd HTTP/1.1" 206 512 "-" "ClamAV/1.4.6 (OS: Linux, \"x\")" 0.001"#,
    )
    .unwrap();
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status, e.bytes),
        ("GET", "/bytecode.cvd", 206, 512)
    );
    assert_eq!(e.user_agent_unescaped(), r#"ClamAV/1.4.6 (OS: Linux, "x")"#);
    assert_eq!(
        LogLine::parse(
            r#"1.2.3.4 - - [27/Nov/2026:23:28:35 +0000] "GET /x HTTP/1.1" 404 - "-" "-" 0"#
        )
        .unwrap()
        .bytes,
        0
    );
}
