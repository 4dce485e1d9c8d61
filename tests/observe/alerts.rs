//! Alerts reach a webhook: once when the episode begins (retried after the
//! receiver's first `500`), once when it resolves, and not again.

// Deadlines are real time: the server is a child process.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use super::start;
use crate::support::DEADLINE;

/// A receiver on a free port: answers `500` to the first POST, `204` after;
/// every body it gets goes to the channel.
fn receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn a_saturated_link_fires_once_retries_and_resolves() {
    let (url, events) = receiver();
    let config = format!(
        "[alerts]\nlink_capacity = \"8kbit\"\nlink_threshold_percent = 50\nlink_for = \"0s\"\nclear_for = \"0s\"\nwebhook = \"{url}\"\nwebhook_retry = \"100ms\"\n"
    );
    let big = vec![7u8; 300_000];
    let server = start(&[("big.bin", &big)], &config);
    let r = server.request("GET", "/big.bin", &[]);
    assert_eq!(
        (r.status, r.body.len()),
        (200, big.len()),
        "{}",
        server.stderr()
    );

    let next = || {
        events
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no webhook call; server log:\n{}", server.stderr()))
    };
    let first = next();
    let retried = next();
    let resolved = next();
    for fired in [&first, &retried] {
        assert_eq!(fired["alert"], "link_saturated", "{fired:#}");
        assert_eq!(fired["state"], "firing");
        assert!(
            fired["summary"]
                .as_str()
                .unwrap()
                .contains("% of its capacity")
        );
        assert_eq!(fired["values"]["capacity_bps"], 8000);
    }
    assert_eq!(first, retried, "the retry carries the same event");
    assert_eq!(resolved["alert"], "link_saturated");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["started_at"], first["started_at"]);
    // One episode, one pair: nothing more while the link stays quiet.
    assert!(events.recv_timeout(Duration::from_secs(3)).is_err());
    let log = server.stderr();
    assert!(log.contains("ALERT"), "{log}");
    assert!(log.contains("retrying"), "{log}");
}
