//! A trusted proxy's forwarded address is the client: logged and limited
//! as that client; from anyone else the header is ignored.

use super::net::{client, fetch};
use crate::support::TestServer;
use crate::support::access_log::LogLine;

/// The logged client and status of the access-log line for `GET path`.
fn logged_client(lines: &[LogLine], path: &str) -> (String, u16) {
    let request = format!("GET {path} HTTP/1.1");
    let line = lines
        .iter()
        .find(|l| l.request == request)
        .unwrap_or_else(|| panic!("no access-log line for {path}: {lines:#?}"));
    (line.client.clone(), line.status)
}

/// From a trusted proxy, `X-Forwarded-For` names the client: it is logged
/// and limited as that client. From anyone else the header is ignored.
#[test]
fn trusted_proxy_forwarded_address_is_the_client() {
    let server = TestServer::builder()
        .config(
            "[limits.proxies]\ntrusted = [\"127.0.0.1/32\"]\nheader = \"x-forwarded-for\"\n\
             [limits.requests]\nrequests = 1\nper = \"1h\"\nburst = 1\n",
        )
        .start();
    let xff = [("X-Forwarded-For", "203.0.113.9")];
    let (proxy, other) = (client(1), client(2));
    let status = |src, path: &str, headers: &[(&str, &str)]| -> u16 {
        fetch(src, server.addr, "GET", path, headers).head.status
    };
    // One request per hour per client: the forwarded client's is used here.
    assert_eq!(status(proxy, "/a", &xff), 404);
    assert_eq!(status(proxy, "/b", &xff), 429, "not limited as 203.0.113.9");
    // The proxy itself (no header) and another forwarded client are others.
    assert_eq!(status(proxy, "/c", &[]), 404);
    assert_eq!(
        status(proxy, "/d", &[("X-Forwarded-For", "203.0.113.10")]),
        404
    );
    // An untrusted source's header is ignored: it is 127.0.0.2, whose
    // request is its own (203.0.113.9's is spent).
    assert_eq!(status(other, "/e", &xff), 404, "untrusted header believed");
    assert_eq!(status(other, "/f", &[]), 429);

    let lines: Vec<LogLine> = server
        .access_log_lines(6)
        .iter()
        .map(|l| LogLine::parse(l).unwrap())
        .collect();
    let expected = [
        ("/a", "203.0.113.9", 404),
        ("/b", "203.0.113.9", 429),
        ("/c", "127.0.0.1", 404),
        ("/d", "203.0.113.10", 404),
        ("/e", "127.0.0.2", 404),
        ("/f", "127.0.0.2", 429),
    ];
    for (path, who, code) in expected {
        assert_eq!(
            logged_client(&lines, path),
            (who.to_owned(), code),
            "{lines:#?}"
        );
    }
}
