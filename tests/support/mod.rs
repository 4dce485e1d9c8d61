//! Shared integration-test harness: starts the real `cvdmirror` binary on a
//! free loopback port with a temporary root, and stops it on drop.
//!
//! Tests talk to the server only through loopback. Readiness is the
//! `listening on http://ADDR/` line the server prints once its listeners are
//! bound, polled with a deadline; no test sleeps to wait for it.

// Test support panics on failure by design, and measures real elapsed time
// for its deadlines (a paused tokio clock does not apply to a child process).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Where the genuine signed ClamAV fixtures live (never copied into the repo).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CVDMIRROR_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/clamav"))
}

/// A genuine fixture's bytes, e.g. `fixture("bytecode-268.cvd")`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A running `cvdmirror serve`, killed when dropped.
pub struct TestServer {
    child: Child,
    /// The first address it listens on.
    pub addr: SocketAddr,
    /// Every address it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Every line it printed on stdout up to `ready` (e.g. `admin on ...`).
    pub startup: Vec<String>,
    /// Its temporary working directory (holds `root/` and `access.log` by default).
    pub dir: tempfile::TempDir,
    /// The directory it serves.
    pub root: PathBuf,
    /// Its access log.
    pub access_log: PathBuf,
    stderr: mpsc::Receiver<String>,
}

/// Builds a [`TestServer`]: extra flags, config file contents, files in the root.
pub struct ServerBuilder {
    args: Vec<String>,
    config: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    default_listen: bool,
}

impl TestServer {
    /// A builder with a temp root, `--listen 127.0.0.1:0` and an access log file.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            config: None,
            files: Vec::new(),
            default_listen: true,
        }
    }

    /// Starts a server serving `files` from its root with default options.
    pub fn serving(files: &[(&str, &[u8])]) -> TestServer {
        let mut b = Self::builder();
        for (name, bytes) in files {
            b = b.file(name, bytes);
        }
        b.start()
    }

    /// `http://ADDR` for this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends raw bytes on a new connection, half-closes nothing, and reads
    /// until the server closes or the deadline passes.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        raw_exchange(self.addr, request)
    }

    /// Sends one request and parses the single response.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    /// Sends `METHOD path` with `Connection: close` and parses the response.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        Response::parse(&self.raw(req.as_bytes()), method == "HEAD")
    }

    /// The access log's lines, waiting until at least `n` exist.
    pub fn access_log_lines(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "access log has {} lines, wanted {n}: {text}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The access log once it contains `needle` (lines are written a few
    /// milliseconds after their response).
    pub fn access_log_containing(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "access log never contained {needle:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Sends a signal (e.g. `libc`-free: "TERM", "HUP") with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerBuilder {
    /// Adds command-line arguments after `serve`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Writes a config file and passes `--config` to it.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Puts a file in the root (path relative to it; directories created).
    pub fn file(mut self, path: &str, bytes: &[u8]) -> Self {
        self.files.push((path.to_owned(), bytes.to_vec()));
        self
    }

    /// Do not add `--listen 127.0.0.1:0` (the test passes its own).
    pub fn no_default_listen(mut self) -> Self {
        self.default_listen = false;
        self
    }

    /// Starts the binary and waits until it listens.
    pub fn start(self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        for (path, bytes) in &self.files {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, bytes).unwrap();
        }
        let access_log = dir.path().join("access.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvdmirror"));
        cmd.arg("serve").current_dir(dir.path());
        if let Some(toml) = &self.config {
            let path = dir.path().join("cvdmirror.toml");
            std::fs::write(&path, toml).unwrap();
            cmd.arg("--config").arg(path);
        }
        if self.default_listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--root")
            .arg(&root)
            .arg("--access-log")
            .arg(&access_log);
        cmd.args(&self.args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("RUST_LOG", "info");
        let mut child = cmd.spawn().expect("spawn cvdmirror");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let start = Instant::now();
        let mut addrs = Vec::new();
        let mut startup = Vec::new();
        while start.elapsed() < DEADLINE {
            match line_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    startup.push(line.clone());
                    if let Some(rest) = line.strip_prefix("listening on http://") {
                        addrs.push(rest.trim_end_matches('/').parse().unwrap());
                    }
                    if line.starts_with("ready") {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        let err: Vec<String> = err_rx.try_iter().collect();
                        panic!("cvdmirror exited with {status}: {}", err.join("\n"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        assert!(
            !addrs.is_empty(),
            "cvdmirror did not report a listening address in time"
        );
        TestServer {
            child,
            addr: addrs[0],
            addrs,
            startup,
            dir,
            root,
            access_log,
            stderr: err_rx,
        }
    }

    /// Runs the binary expecting it to refuse to start; returns its stderr.
    pub fn start_err(self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvdmirror"));
        cmd.arg("serve").current_dir(dir.path());
        if let Some(toml) = &self.config {
            let path = dir.path().join("cvdmirror.toml");
            std::fs::write(&path, toml).unwrap();
            cmd.arg("--config").arg(path);
        }
        if self.default_listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(&self.args);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            !out.status.success(),
            "expected cvdmirror to refuse to start"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Writes `request` on a fresh connection and reads until EOF (or deadline).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (as framed by Content-Length, or to EOF).
    pub body: Vec<u8>,
    /// Bytes after this response (pipelined responses).
    pub rest: Vec<u8>,
}

impl Response {
    /// Parses the first response in `bytes`. `head_only`: a HEAD response has no body.
    pub fn parse(bytes: &[u8], head_only: bool) -> Response {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let after = &bytes[end + 4..];
        let len = if head_only || status == 304 || status == 204 || (100..200).contains(&status) {
            0
        } else {
            headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(after.len())
        };
        let len = len.min(after.len());
        Response {
            status,
            headers,
            body: after[..len].to_vec(),
            rest: after[len..].to_vec(),
        }
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
