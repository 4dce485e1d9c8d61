//! Certificates on `SIGHUP`: a rotated certificate is what new connections
//! get, while a download that started before finishes, whole, on the
//! connection (and certificate) it started with; a bad certificate is
//! rejected with an error naming the file, and the running one stays. At
//! start, a bad certificate refuses to start with the file, the reason and
//! the config file's line.

use super::util::{Pki, TlsClient, certificate_der, start, tls_args};
use crate::support::{self, Response, TestServer};

/// A file large enough that its download is still running (held by a
/// client that stops reading) when the certificate changes.
fn big_file() -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32;
    (0..8 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn a_certificate_rotated_with_sighup_reaches_new_connections_while_an_old_download_finishes() {
    let pki = Pki::new();
    let (cert, key) = pki.server("live", "before");
    let before = certificate_der(&cert);
    let big = big_file();
    let small = support::fixture("bytecode-268.cvd");
    let (server, addr) = start(
        TestServer::builder()
            .file("big.bin", &big)
            .file("bytecode.cvd", &small)
            .args(tls_args(&cert, &key)),
    );

    // A download starts on the old certificate, and its client stops
    // reading after the first 64 KiB.
    let mut old = TlsClient::connect(addr, "localhost", &pki.ca_pem());
    assert!(old.server_certificate() == before);
    old.send_get("/big.bin", true);
    let mut received = old.read_exactly(64 * 1024);
    assert!(received.starts_with(b"HTTP/1.1 200 "));

    // The operator installs a new certificate and key, then reloads.
    let (next_cert, next_key) = pki.server("next", "after");
    let after = certificate_der(&next_cert);
    std::fs::rename(&next_key, &key).unwrap();
    std::fs::rename(&next_cert, &cert).unwrap();
    server.reload(support::DEADLINE);

    // New connections get the new certificate and are served.
    let mut fresh = TlsClient::connect(addr, "localhost", &pki.ca_pem());
    assert!(
        fresh.server_certificate() == after,
        "a new connection still gets the old certificate"
    );
    fresh.send_get("/bytecode.cvd", true);
    let response = Response::parse(&fresh.read_to_end(), false);
    assert_eq!(response.status, 200);
    assert!(response.body == small);

    // A broken key on the next reload is rejected; the certificate stays.
    std::fs::write(&key, "not a key\n").unwrap();
    server.signal("HUP");
    let seen = server.stderr_containing("new configuration rejected");
    let line = seen
        .lines()
        .find(|l| l.contains("new configuration rejected"))
        .unwrap();
    assert!(
        line.contains("ERROR")
            && line.contains(&key.display().to_string())
            && line.contains("no private key"),
        "the rejection does not name the file and the reason: {line}"
    );
    let again = TlsClient::connect(addr, "localhost", &pki.ca_pem());
    assert!(again.server_certificate() == after);

    // The old download completes, whole, on the connection it began on.
    assert!(old.server_certificate() == before);
    received.extend(old.read_to_end());
    let response = Response::parse(&received, false);
    assert_eq!(response.status, 200);
    assert!(
        response.body == big,
        "old download: {} of {} bytes, or different bytes",
        response.body.len(),
        big.len()
    );
    server.access_log_containing(&format!("\"GET /big.bin HTTP/1.1\" 200 {} ", big.len()));
}

#[test]
fn a_bad_certificate_refuses_to_start_naming_the_file_the_reason_and_the_line() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "localhost");
    let (_, other_key) = pki.server("other", "localhost");
    let err = TestServer::builder()
        .config(&format!(
            "root = \"{}\"\n\n[tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.dir.path().display(),
            cert.display(),
            other_key.display()
        ))
        .start_err();
    assert!(
        err.contains("line 6")
            && err.contains(&other_key.display().to_string())
            && err.contains("does not belong to the certificate"),
        "{err}"
    );
    let missing = pki.dir.path().join("missing.pem");
    let err = TestServer::builder()
        .args(tls_args(&cert, &missing))
        .start_err();
    assert!(
        err.contains("--tls-key") && err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );
    let _ = key;
}
