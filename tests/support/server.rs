//! `cvdmirror serve` under test: the real binary on a free loopback port
//! with a temporary root, an access-log file and the flags and config a
//! test gives it, stopped (killed) when dropped.
//!
//! Readiness is the `ready` line the server prints once its listeners are
//! bound, after one `listening on http://ADDR/` line a listener (and
//! `listening on https://ADDR/`, `admin on http://ADDR/` where configured),
//! polled with a deadline; no test sleeps to wait for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;

use super::access_log::{LogLine, parse_all};
use super::http::{Response, raw_exchange, request, request_bytes};
use super::process::{Finished, Process, cvdmirror, run};
use super::wait::{DEADLINE, check, wait_until};

/// The admin token of a server started with [`ServerBuilder::admin`].
pub const ADMIN_TOKEN: &str = "observe-test-token";

/// A running `cvdmirror serve`, killed when dropped.
pub struct TestServer {
    process: Process,
    /// The first address it listens on.
    pub addr: SocketAddr,
    /// Every address it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Every line it printed on stdout up to `ready` (e.g. `admin on ...`).
    pub startup: Vec<String>,
    /// Its temporary working directory (holds `root/` and `access.log` by default).
    pub dir: tempfile::TempDir,
    /// The directory it serves (unless [`ServerBuilder::bare`]).
    pub root: PathBuf,
    /// Its access log (unless [`ServerBuilder::bare`] or
    /// [`ServerBuilder::no_access_log`]).
    pub access_log: PathBuf,
}

/// Builds a [`TestServer`]: extra flags, config file contents, files in the root.
pub struct ServerBuilder {
    args: Vec<String>,
    config: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    default_listen: bool,
    defaults: bool,
    access_log: bool,
    admin: bool,
}

/// The address a startup line announces after `prefix` (`ADDR/`).
fn announced(startup: &[String], prefix: &str) -> Option<SocketAddr> {
    startup
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|a| a.trim_end_matches('/').parse().unwrap())
}

impl TestServer {
    /// A builder with a temp root, `--listen 127.0.0.1:0` and an access log file.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            config: None,
            files: Vec::new(),
            default_listen: true,
            defaults: true,
            access_log: true,
            admin: false,
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
        let bytes = self.raw(&request_bytes(method, path, headers, true));
        Response::parse(&bytes, method == "HEAD")
    }

    /// The admin listener's address (a server started with an admin listener).
    pub fn admin_addr(&self) -> SocketAddr {
        announced(&self.startup, "admin on http://")
            .unwrap_or_else(|| panic!("no admin listener announced: {:?}", self.startup))
    }

    /// The first HTTPS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        announced(&self.startup, "listening on https://")
            .unwrap_or_else(|| panic!("no HTTPS listener announced: {:?}", self.startup))
    }

    /// One request to the admin listener.
    pub fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.admin_addr(), method, path, headers)
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
        wait_until(DEADLINE, || {
            let s = self.status();
            if done(&s) {
                Ok(s)
            } else {
                Err(format!("timed out waiting for {what}: {s:#}"))
            }
        })
    }

    /// The access log's lines, waiting until at least `n` exist.
    pub fn access_log_lines(&self, n: usize) -> Vec<String> {
        wait_until(DEADLINE, || {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                Ok(lines)
            } else {
                Err(format!(
                    "access log has {} lines, wanted {n}: {text}",
                    lines.len()
                ))
            }
        })
    }

    /// The access log once it contains `needle` (lines are written a few
    /// milliseconds after their response).
    pub fn access_log_containing(&self, needle: &str) -> String {
        wait_until(DEADLINE, || {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            if text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("access log never contained {needle:?}: {text}"))
            }
        })
    }

    /// Every line of the access log so far, parsed by the library's parser.
    pub fn access_log_entries(&self) -> Vec<LogLine> {
        parse_all(&std::fs::read_to_string(&self.access_log).unwrap_or_default())
    }

    /// The access log after its first `mark` lines, once a line `done`
    /// accepts is among them.
    pub fn access_log_until(&self, mark: usize, done: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        wait_until(DEADLINE, || {
            let log: Vec<LogLine> = self.access_log_entries().into_iter().skip(mark).collect();
            if log.iter().any(&done) {
                Ok(log)
            } else {
                Err(format!(
                    "the access log never showed the awaited request after line {mark}: {log:#?}"
                ))
            }
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Every line it printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.process.stdout()
    }

    /// Waits until its stdout lines satisfy `done`; returns them all.
    pub fn wait_stdout(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.process.wait_stdout(DEADLINE, what, done)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Its stderr once it contains `needle`.
    pub fn stderr_containing(&self, needle: &str) -> String {
        wait_until(DEADLINE, || {
            let stderr = self.stderr();
            if stderr.contains(needle) {
                Ok(stderr)
            } else {
                Err(format!("server never logged {needle:?}:\n{stderr}"))
            }
        })
    }

    /// Sends a signal by name ("TERM", "HUP") with `kill`.
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Sends SIGHUP and waits up to `within` until the server logs that it
    /// reloaded its configuration (once more than before).
    pub fn reload(&self, within: std::time::Duration) {
        const RELOADED: &str = "configuration reloaded";
        let before = self.stderr().matches(RELOADED).count();
        self.signal("HUP");
        wait_until(within, || {
            let stderr = self.stderr();
            check(stderr.matches(RELOADED).count() > before, || {
                format!("no reload logged: {stderr}")
            })
        });
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&self) -> ExitStatus {
        self.exit_within(DEADLINE).expect("server did not exit")
    }

    /// Waits up to `within` for the process to exit.
    pub fn exit_within(&self, within: std::time::Duration) -> Option<ExitStatus> {
        self.process.exit_within(within)
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

    /// None of the default flags (`--listen`, `--root`, `--access-log`):
    /// `serve` as an operator runs it, with the test's own flags only, in
    /// the working directory that holds `root/`.
    pub fn bare(mut self) -> Self {
        self.defaults = false;
        self
    }

    /// `--access-log off`.
    pub fn no_access_log(mut self) -> Self {
        self.access_log = false;
        self
    }

    /// An admin listener on `127.0.0.1:0` that accepts [`ADMIN_TOKEN`].
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// The working directory with the root and config file written, and
    /// the `serve` arguments: the root, access log and admin listener only
    /// for a server that is to start (`serving`).
    fn prepare(&self, serving: bool) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        for (path, bytes) in &self.files {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, bytes).unwrap();
        }
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut args = vec!["serve".to_owned()];
        if let Some(toml) = &self.config {
            let config = dir.path().join("cvdmirror.toml");
            std::fs::write(&config, toml).unwrap();
            args.extend(["--config".to_owned(), path(config)]);
        }
        if self.defaults && self.default_listen {
            args.extend(["--listen", "127.0.0.1:0"].map(String::from));
        }
        if serving && self.defaults {
            let log = if self.access_log {
                path(dir.path().join("access.log"))
            } else {
                "off".to_owned()
            };
            args.extend([
                "--root".to_owned(),
                path(root),
                "--access-log".to_owned(),
                log,
            ]);
        }
        if serving && self.admin {
            let token = dir.path().join("token");
            std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
            args.extend(["--admin-listen", "127.0.0.1:0", "--admin-token-file"].map(String::from));
            args.push(path(token));
        }
        args.extend(self.args.iter().cloned());
        (dir, args)
    }

    /// Starts the binary and waits until it listens.
    pub fn start(self) -> TestServer {
        let (dir, args) = self.prepare(true);
        let process = Process::spawn(cvdmirror(&args).current_dir(dir.path()));
        let stdout = process.wait_stdout(DEADLINE, "ready", |lines| {
            lines.iter().any(|l| l.starts_with("ready"))
        });
        let ready = stdout.iter().position(|l| l.starts_with("ready")).unwrap();
        let startup = stdout[..=ready].to_vec();
        let addrs: Vec<SocketAddr> = startup
            .iter()
            .filter_map(|l| l.strip_prefix("listening on http://"))
            .map(|a| a.trim_end_matches('/').parse().unwrap())
            .collect();
        assert!(
            !addrs.is_empty(),
            "cvdmirror did not report a listening address: {startup:?}"
        );
        TestServer {
            process,
            addr: addrs[0],
            addrs,
            startup,
            root: dir.path().join("root"),
            access_log: dir.path().join("access.log"),
            dir,
        }
    }

    /// Runs the binary expecting it to refuse to start; returns its stderr.
    pub fn start_err(self) -> String {
        let (dir, args) = self.prepare(false);
        let out: Finished = run(cvdmirror(&args).current_dir(dir.path()));
        assert!(!out.ok(), "expected cvdmirror to refuse to start");
        out.stderr
    }
}
