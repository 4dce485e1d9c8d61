//! Starts `cvdmirror serve` with an admin listener and learns both
//! addresses from its stdout (the shared harness keeps only the public one).

// Deadlines are real time: a paused tokio clock does not reach a child process.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{DEADLINE, Response, raw_exchange};

/// Admin token the observed servers accept.
pub const TOKEN: &str = "observe-test-token";

/// A running server with its admin API, killed on drop.
pub struct Observed {
    child: Child,
    /// Public listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Temp dir (root/ inside), removed on drop.
    _dir: tempfile::TempDir,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server serving `files`, with `config` as its config file.
pub fn start(files: &[(&str, &[u8])], config: &str) -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (name, bytes) in files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    let token: PathBuf = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let config_path = dir.path().join("cvdmirror.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cvdmirror"))
        .arg("serve")
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--root")
        .arg(&root)
        .args(["--access-log", "off"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cvdmirror");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (etx, erx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let start = Instant::now();
    let (mut addr, mut admin) = (None, None);
    while start.elapsed() < DEADLINE {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let parse = |rest: &str| rest.trim_end_matches('/').parse::<SocketAddr>().ok();
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    addr = addr.or(parse(rest));
                }
                if let Some(rest) = line.strip_prefix("admin on http://") {
                    admin = parse(rest);
                }
                if line == "ready" {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let err: Vec<String> = erx.try_iter().collect();
                    panic!("cvdmirror exited with {status}: {}", err.join("\n"));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Observed {
        child,
        addr: addr.expect("no listening address"),
        admin: admin.expect("no admin address"),
        _dir: dir,
        stderr: erx,
    }
}

impl Observed {
    /// One request to the public listener.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, method, path, headers)
    }

    /// One request to the admin listener.
    pub fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.admin, method, path, headers)
    }

    /// `/status.json` from the admin API, parsed.
    pub fn status(&self) -> serde_json::Value {
        let r = self.admin("GET", "/status.json", &[]);
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Polls `/status.json` until `done` holds (or fails at the deadline).
    pub fn status_when(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// `METHOD path` with `Connection: close` to `addr`.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    Response::parse(&raw_exchange(addr, req.as_bytes()), method == "HEAD")
}
