//! Drives Debian's real `freshclam` against a test mirror.
//!
//! Each [`Client`] is one freshclam installation in miniature: its own
//! database directory and config file in a temp dir, so tests run in
//! parallel and never inherit each other's `freshclam.dat` (UUID, cool-down).
//! Every run is bounded and killed on timeout, and its output is kept whole so
//! a failing assertion can show exactly what the client saw: with
//! `LogVerbose yes`, freshclam prints libcurl's trace of every request and
//! response header, which [`Run::exchanges`] reads back.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Longest a single freshclam run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The freshclam binary: `$FRESHCLAM`, else `freshclam` on `PATH`.
pub fn freshclam_bin() -> String {
    std::env::var("FRESHCLAM").unwrap_or_else(|_| "freshclam".to_owned())
}

/// `freshclam --version`, failing the test (never skipping it) when freshclam
/// is not installed.
pub fn freshclam_version() -> String {
    let out = Command::new(freshclam_bin())
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install it with scripts/install-test-deps (as root)",
                freshclam_bin()
            )
        });
    assert!(out.status.success(), "freshclam --version failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How the client is pointed at the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `PrivateMirror URL` + `DNSDatabaseInfo no`: header checks over HTTP,
    /// `.cld` asked for first, scripted (cdiff) updates off.
    PrivateMirror,
    /// `DatabaseMirror URL` + `--no-dns`, `ScriptedUpdates yes`: what an
    /// ordinary client pointed at an internal mirror does without DNS:
    /// header check, then cdiffs, then the whole CVD as a fallback.
    DatabaseMirror,
}

/// One freshclam installation: a database directory and a config file.
pub struct Client {
    dir: tempfile::TempDir,
    mode: Mode,
}

impl Client {
    /// A client with an empty database directory pointed at `mirror`
    /// (`http://127.0.0.1:PORT`). `extra` lines are appended to the config.
    pub fn new(mirror: &str, mode: Mode, extra: &[&str]) -> Client {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let mut conf = format!(
            "DatabaseDirectory {}\nDatabaseOwner {}\nLogVerbose yes\nForeground yes\nConnectTimeout 10\n",
            db.display(),
            current_user()
        );
        match mode {
            Mode::PrivateMirror => {
                conf.push_str(&format!("PrivateMirror {mirror}\nDNSDatabaseInfo no\n"))
            }
            // `DNSDatabaseInfo no` is NOT "off" outside PrivateMirror mode:
            // freshclam 1.4.6 then looks up a host called "no". `--no-dns`
            // (added in `run`) is the switch that really skips DNS.
            Mode::DatabaseMirror => {
                conf.push_str(&format!("DatabaseMirror {mirror}\nScriptedUpdates yes\n"))
            }
        }
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(dir.path().join("freshclam.conf"), conf).unwrap();
        Client { dir, mode }
    }

    /// The client's database directory.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Puts a database into the client's directory, as if an earlier update had.
    pub fn install(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.db().join(name), bytes).unwrap();
    }

    /// Version in the header of the client's `bytecode.cvd`, if it has one.
    pub fn local_version(&self) -> Option<u32> {
        let bytes = std::fs::read(self.db().join("bytecode.cvd")).ok()?;
        Some(header_version(&bytes))
    }

    /// Runs `freshclam --update-db=bytecode` once, bounded by [`RUN_TIMEOUT`].
    pub fn run(&self) -> Run {
        let mut cmd = Command::new(freshclam_bin());
        cmd.arg(format!(
            "--config-file={}",
            self.dir.path().join("freshclam.conf").display()
        ))
        .arg("--update-db=bytecode");
        if self.mode == Mode::DatabaseMirror {
            cmd.arg("--no-dns");
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install it with scripts/install-test-deps (as root)",
                freshclam_bin()
            )
        });
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let start = Instant::now();
        // Polling the child is the only portable bounded wait without an
        // extra crate; the output threads keep the pipes from filling up.
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run = Run {
            status,
            stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
        };
        assert!(
            run.status.is_some(),
            "freshclam did not finish within {RUN_TIMEOUT:?} and was killed\n{run}"
        );
        run
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The version field of a CVD's 512-byte header.
pub fn header_version(cvd: &[u8]) -> u32 {
    let header = String::from_utf8_lossy(&cvd[..512.min(cvd.len())]).into_owned();
    let field = header
        .split(':')
        .nth(2)
        .unwrap_or_else(|| panic!("not a CVD header: {header:?}"));
    field
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad version in CVD header: {header:?}"))
}

/// `sigtool --info=PATH`: asserts the file verifies and returns its version.
pub fn sigtool_verified_version(path: &Path) -> u32 {
    let out = Command::new("sigtool")
        .arg(format!("--info={}", path.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sigtool: {e}; install it with scripts/install-test-deps (as root)")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("Verification OK."),
        "sigtool rejects {}:\n{text}",
        path.display()
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in sigtool output:\n{text}"))
}

/// One finished freshclam run.
pub struct Run {
    /// Exit status (`None` only transiently, before the timeout assertion).
    pub status: Option<ExitStatus>,
    /// Everything it printed on stdout (messages and libcurl's trace).
    pub stdout: String,
    /// Everything it printed on stderr (warnings and errors).
    pub stderr: String,
}

/// One HTTP request freshclam sent and the status it got back, as libcurl
/// traced it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Request target, e.g. `/bytecode.cvd`.
    pub path: String,
    /// Request headers as sent, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Response status; `None` if the trace shows no response.
    pub status: Option<u16>,
}

impl Exchange {
    /// The request header `name` (lower-case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Run {
    /// stdout and stderr together, for searching messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Whether freshclam exited 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Asserts a zero exit status, showing everything it printed otherwise.
    pub fn assert_success(&self) {
        assert!(self.succeeded(), "freshclam failed\n{self}");
    }

    /// Asserts `needle` appears in its output.
    pub fn assert_says(&self, needle: &str) {
        assert!(
            self.output().contains(needle),
            "freshclam never said {needle:?}\n{self}"
        );
    }

    /// Asserts freshclam neither reports a CDN block/rate limit nor a cool-down.
    pub fn assert_no_cool_down(&self) {
        let out = self.output();
        for bad in [
            "cool-down",
            "error code 403",
            "error code 429",
            "Blocked",
            "Forbidden",
            "Too many requests",
        ] {
            assert!(
                !out.contains(bad),
                "freshclam output mentions {bad:?}\n{self}"
            );
        }
    }

    /// Every request freshclam made, in order, with the status it got.
    ///
    /// libcurl's verbose trace (on stdout with freshclam 1.4.6) writes
    /// `> GET /path HTTP/1.1` then the request headers, and `< HTTP/1.1 NNN`
    /// for the response; freshclam opens one connection per request
    /// (`Connection: close`) and makes them one after another, so the trace
    /// pairs them in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        let mut out: Vec<Exchange> = Vec::new();
        for text in [&self.stdout, &self.stderr] {
            let mut in_request = false;
            for line in text.lines() {
                let line = line.trim_end_matches('\r');
                if let Some(rest) = line.strip_prefix("> ") {
                    let path = rest.split(' ').nth(1).unwrap_or_default().to_owned();
                    out.push(Exchange {
                        path,
                        headers: Vec::new(),
                        status: None,
                    });
                    in_request = true;
                } else if in_request {
                    match line.split_once(':') {
                        Some((k, v)) if !line.is_empty() => {
                            let ex = out.last_mut().unwrap();
                            ex.headers
                                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        }
                        _ => in_request = false,
                    }
                } else if let Some(rest) = line.strip_prefix("< HTTP/") {
                    let status = rest.split(' ').nth(1).and_then(|s| s.parse().ok());
                    if let Some(ex) = out.iter_mut().rev().find(|e| e.status.is_none()) {
                        ex.status = status;
                    }
                }
            }
        }
        out
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never panic here: this runs while a failed assertion is formatted.
        let version = Command::new(freshclam_bin())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("version unknown: {e}"));
        writeln!(f, "--- freshclam ({version}) exit: {:?}", self.status)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        write!(f, "--- stderr:\n{}", self.stderr)
    }
}
