//! A TLS connection is a connection: it counts against `max_connections`
//! (and beyond it is answered `503` over TLS), its downloads are paced by
//! the shaper at the client's cap, and its requests are in the access log
//! and the metrics with the bytes actually sent.

use tokio::time::Instant;

use super::util::{Pki, TlsClient, start, tls_args};
use crate::support::wait::wait_until;
use crate::support::{self, Response, TestServer};

#[test]
fn tls_connections_are_limited_shaped_logged_and_counted_like_plain_ones() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "localhost");
    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut args = tls_args(&cert, &key);
    args.extend(
        [
            "--max-conns",
            "1",
            "--client-rate",
            "8Mbit",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let (server, addr) = start(
        TestServer::builder()
            .file("mid.bin", &body)
            .file("bytecode.cvd", &support::fixture("bytecode-268.cvd"))
            .args(args),
    );

    // One connection holds the only slot: the next is answered 503, over TLS.
    let mut holder = TlsClient::connect(addr, "localhost", &pki.ca_pem());
    holder.send_get("/bytecode.cvd", false);
    let mut refused = TlsClient::connect(addr, "localhost", &pki.ca_pem());
    refused.send_get("/bytecode.cvd", true);
    let answer = Response::parse(&refused.read_to_end(), false);
    assert_eq!(answer.status, 503);
    assert!(answer.header("retry-after").is_some());
    drop(holder);

    // The shaper paces a TLS download at the client's cap (1 MB/s). The
    // holder's slot is released once the server sees it close: until
    // then the download is refused too.
    let (response, took) = wait_until(support::DEADLINE, || {
        let started = Instant::now();
        let mut download = TlsClient::connect(addr, "localhost", &pki.ca_pem());
        download.send_get("/mid.bin", true);
        let response = Response::parse(&download.read_to_end(), false);
        if response.status != 503 {
            Ok((response, started.elapsed()))
        } else {
            Err("the held slot was never released")
        }
    });
    assert_eq!(response.status, 200);
    assert!(response.body == body);
    assert!(
        took.as_secs_f64() > 0.8,
        "1 MiB at 8 Mbit/s took only {took:?}: TLS bypassed the shaper"
    );

    // Logged and counted with the bytes sent.
    server.access_log_containing("\"GET /mid.bin HTTP/1.1\" 200 1048576 ");
    server.access_log_containing("\"GET /bytecode.cvd HTTP/1.1\" 503 ");
    let metrics = String::from_utf8_lossy(&support::raw_exchange(
        server.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    ))
    .into_owned();
    for code in ["200", "503"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cvdmirror_requests")
                    && l.contains(&format!("code=\"{code}\""))),
            "no {code} in the metrics:\n{metrics}"
        );
    }
}
