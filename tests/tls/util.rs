//! The HTTPS harness: a fresh test CA per test with its files on disk, a
//! `cvdmirror serve` listening for HTTP and HTTPS side by side, and clients
//! that trust the CA: curl (a process, as an operator would run it) and
//! rustls (in the test, where it must see the server's certificate).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cvdmirror::tls::testpki::TestPki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{DEADLINE, ServerBuilder, TestServer};

/// Names every server certificate here is valid for.
pub const SERVER_NAMES: &[&str] = &["localhost", "open.test", "127.0.0.1", "::1"];

/// A test CA and the files made from it, in a temp dir.
pub struct Pki {
    pub ca: TestPki,
    pub dir: tempfile::TempDir,
    /// The CA certificate, PEM: what clients trust.
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = TestPki::generate("cvdmirror TLS test CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.ca_pem()).unwrap();
        Pki { ca, dir, ca_file }
    }

    /// A server certificate (common name `cn`, valid for [`SERVER_NAMES`])
    /// and key, written under `sub/`.
    pub fn server(&self, sub: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.ca
            .server_named(SERVER_NAMES, cn)
            .unwrap()
            .write(&self.dir.path().join(sub))
            .unwrap()
    }

    /// A client certificate and key, written under `sub/`.
    pub fn client(&self, sub: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.ca
            .client(cn)
            .unwrap()
            .write(&self.dir.path().join(sub))
            .unwrap()
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.ca_pem()
    }
}

/// `--tls-listen 127.0.0.1:0 --tls-cert CERT --tls-key KEY`.
pub fn tls_args(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

/// Starts `builder` and returns it with its HTTPS address.
pub fn start(builder: ServerBuilder) -> (TestServer, SocketAddr) {
    let server = builder.start();
    let addr = server.https_addr();
    (server, addr)
}

/// What curl did.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0: a response was received).
    pub exit: i32,
    /// The response status (`0`: none).
    pub status: u16,
    pub body: Vec<u8>,
    pub stderr: String,
}

/// Runs `curl -sS ARGS... URL` and returns its exit code, the status,
/// body and diagnostics.
pub fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}; install it (apt-get install curl)"));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        body: std::fs::read(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TLS connection made with rustls, trusting `ca_pem` only.
pub struct TlsClient {
    pub stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects to `addr` as `name` and completes the handshake.
    pub fn connect(addr: SocketAddr, name: &str, ca_pem: &[u8]) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        TlsClient { stream }
    }

    /// The DER of the certificate the server presented.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends `GET path` for `Host: localhost`.
    pub fn send_get(&mut self, path: &str, close: bool) {
        let connection = if close { "close" } else { "keep-alive" };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\nUser-Agent: tls-test\r\n\r\n"
        );
        self.stream.write_all(req.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads exactly `n` bytes.
    pub fn read_exactly(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Reads until the server closes (with `close_notify`).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.stream.read_to_end(&mut out).unwrap();
        out
    }
}

/// The DER of the first certificate in a PEM file.
pub fn certificate_der(pem_file: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}
