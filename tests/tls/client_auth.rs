//! Client certificates, per site, tested with curl: without one the TLS
//! handshake itself fails (and the refusal is logged with the client's
//! address), with one from the site's CA the site is served over TLS 1.2
//! and 1.3, and neither another `Host` on a connection set up for another
//! name nor plain HTTP gets around the requirement (`421`).

use super::util::{Pki, curl, tls_args};
use crate::support::{self, TestServer};

/// A mirror whose site `locked` (`localhost`) requires client certificates
/// from `pki`'s CA, beside the default site (no requirement) and `open`.
/// The second directory is the sites' root.
fn mirror(pki: &Pki) -> (TestServer, tempfile::TempDir) {
    let (cert, key) = pki.server("server", "localhost");
    let sites = tempfile::tempdir().unwrap();
    let locked = sites.path();
    std::fs::write(
        locked.join("bytecode.cvd"),
        support::fixture("bytecode-268.cvd"),
    )
    .unwrap();
    let server = TestServer::builder()
        .file("bytecode.cvd", &support::fixture("bytecode-268.cvd"))
        .config(&format!(
            "[[site]]\nname = \"locked\"\nhosts = [\"localhost\"]\nroot = \"{}\"\ntls_client_ca = \"{}\"\n\n\
             [[site]]\nname = \"open\"\nhosts = [\"open.test\"]\nroot = \"{}\"\n",
            locked.display(),
            pki.ca_file.display(),
            locked.display(),
        ))
        .args(tls_args(&cert, &key))
        .start();
    (server, sites)
}

#[test]
fn a_site_requiring_client_certificates_refuses_curl_without_one_at_the_tls_layer() {
    let pki = Pki::new();
    let (server, _sites) = mirror(&pki);
    let port = server.https_addr().port();
    let url = format!("https://localhost:{port}/bytecode.cvd");
    let ca = pki.ca_file.display().to_string();
    let fixture = support::fixture("bytecode-268.cvd");

    // No certificate: no HTTP answer at all, the handshake fails.
    let refused = curl(&["--cacert", &ca], &url);
    assert!(
        refused.exit != 0 && refused.status == 0,
        "served without a client certificate: {refused:?}"
    );
    assert!(
        refused.stderr.contains("alert") || refused.stderr.contains("certificate"),
        "curl does not say the TLS layer refused it: {}",
        refused.stderr
    );
    let seen = server.stderr_containing("client certificate refused");
    let line = seen
        .lines()
        .find(|l| l.contains("client certificate refused"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1") && line.contains("locked"),
        "refusal not logged with level, peer and site: {line}"
    );

    // With one, over TLS 1.3 and over TLS 1.2.
    let (client_cert, client_key) = pki.client("client", "freshclam.example");
    let (client_cert, client_key) = (
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    for version in [
        ["--tlsv1.3", "--tls-max", "1.3"],
        ["--tlsv1.2", "--tls-max", "1.2"],
    ] {
        let mut args = vec![
            "--cacert",
            &ca,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
        ];
        args.extend(version);
        let served = curl(&args, &url);
        assert_eq!(
            (served.exit, served.status),
            (0, 200),
            "{version:?}: {served:?}"
        );
        assert!(served.body == fixture, "{version:?}: wrong body");
    }

    // A certificate from another CA is refused like none.
    let other = Pki::new();
    let (other_cert, other_key) = other.client("client", "intruder");
    let refused = curl(
        &[
            "--cacert",
            &ca,
            "--cert",
            &other_cert.display().to_string(),
            "--key",
            &other_key.display().to_string(),
        ],
        &url,
    );
    assert!(refused.status == 0 && refused.exit != 0, "{refused:?}");

    // The access log has the two served requests and nothing of the refusals.
    let lines = server.access_log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("\" 200 78992 ")),
        "{lines:?}"
    );
}

#[test]
fn another_host_or_plain_http_cannot_sidestep_a_client_certificate_requirement() {
    let pki = Pki::new();
    let (server, _sites) = mirror(&pki);
    let port = server.https_addr().port();
    let ca = pki.ca_file.display().to_string();
    let resolve = format!("open.test:{port}:127.0.0.1");

    // The open site answers without a certificate...
    let open = curl(
        &["--cacert", &ca, "--resolve", &resolve],
        &format!("https://open.test:{port}/bytecode.cvd"),
    );
    assert_eq!(open.status, 200, "{open:?}");
    // ...but not for the locked site's Host on its connection,
    let sneaked = curl(
        &[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            "Host: localhost",
        ],
        &format!("https://open.test:{port}/bytecode.cvd"),
    );
    assert_eq!(sneaked.status, 421, "{sneaked:?}");
    // nor over plain HTTP,
    let plain = server.get("/bytecode.cvd", &[]);
    assert_eq!(
        plain.status, 421,
        "plain HTTP to the locked site: {plain:?}"
    );
    // while plain HTTP to the others is unaffected.
    let raw =
        server.raw(b"GET /bytecode.cvd HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\r\n");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );

    // Refusals are in the access log like every answer.
    let log = server.access_log_containing("\" 421 ");
    assert!(
        log.lines().filter(|l| l.contains("\" 421 ")).count() >= 1,
        "{log}"
    );
}
