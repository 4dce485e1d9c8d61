//! The real client against a test mirror: Debian's `freshclam` (ClamAV
//! 1.4) or ClamAV 1.5.3's, in FIPS mode or not, over HTTP or HTTPS.
//!
//! Each [`Client`] is one freshclam installation in miniature: its own
//! database directory and config file in a temp dir, so tests run in
//! parallel and never inherit each other's `freshclam.dat` (UUID,
//! cool-down). Every run is bounded and killed on timeout, and its output
//! is kept whole so a failing assertion can show exactly what the client
//! saw: with `LogVerbose yes`, freshclam prints libcurl's trace of every
//! request and response header, which [`Run::exchanges`] reads back, and
//! [`log_for`] matches request by request with the mirror's access log.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use cvdmirror::cvd::Header;
use cvdmirror::cvd::build::sign::TestPki;

use super::access_log::LogLine;
use super::clamav::{INSTALL_14, RUN_TIMEOUT, clamav15_bin, freshclam_bin};
use super::http::header;
use super::process::run_bounded;
use super::server::TestServer;

/// How the client is pointed at the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `PrivateMirror URL` + `DNSDatabaseInfo no`: header checks over HTTP,
    /// `.cld` asked for first, scripted (cdiff) updates off (freshclam turns
    /// them off for private mirrors: `bPrivate ? 0 : ScriptedUpdates`).
    PrivateMirror,
    /// `DatabaseMirror URL` + `ScriptedUpdates yes`, run with `--no-dns`:
    /// what an ordinary client pointed at an internal mirror does without
    /// DNS: header check, then cdiffs, then the whole CVD as a fallback.
    DatabaseMirror,
}

/// One freshclam installation: `db/`, `certs/` (ClamAV 1.5) and a
/// `freshclam.conf` written before each run.
pub struct Client {
    bin: PathBuf,
    dir: tempfile::TempDir,
    mirror: String,
    mode: Mode,
    /// Config lines after the ones every client has.
    config: Vec<String>,
    env: Vec<(OsString, OsString)>,
    /// ClamAV 1.5: `CVDCertsDirectory`, `CVD_CERTS_DIR` and `--debug`.
    clamav15: bool,
    fips: bool,
    /// DNS mode: the version record's name and the nameserver to ask.
    dns: Option<(String, IpAddr)>,
}

impl Client {
    /// Debian's freshclam with an empty database directory pointed at
    /// `mirror` (`http://127.0.0.1:PORT`); `extra` config lines appended.
    pub fn new(mirror: &str, mode: Mode, extra: &[&str]) -> Client {
        let mut client = Self::with_bin(freshclam_bin(), mirror, mode);
        client.config = extra.iter().map(|l| (*l).to_owned()).collect();
        client
    }

    /// ClamAV 1.5.3 in FIPS mode (`FIPSCryptoHashLimits yes`), trusting the
    /// shared test PKI's root for `.sign` files. `MaxAttempts 1`: a refused
    /// update fails at once instead of retrying every 5 s.
    pub fn clamav15(mirror: &str, mode: Mode) -> Client {
        let mut client = Self::with_bin(clamav15_bin("freshclam"), mirror, mode);
        client.clamav15 = true;
        client.fips = true;
        client.config.push("MaxAttempts 1".to_owned());
        std::fs::create_dir(client.certs()).unwrap();
        std::fs::write(
            client.certs().join("test-root.crt"),
            TestPki::shared().unwrap().root_pem(),
        )
        .unwrap();
        client
    }

    fn with_bin(bin: PathBuf, mirror: &str, mode: Mode) -> Client {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        Client {
            bin,
            dir,
            mirror: mirror.to_owned(),
            mode,
            config: Vec::new(),
            env: Vec::new(),
            clamav15: false,
            fips: false,
            dns: None,
        }
    }

    /// DNS mode, as an ordinary client of a mirror with a beacon runs
    /// ([`Mode::DatabaseMirror`] only): `DNSDatabaseInfo name`, looked up
    /// through the system resolver, which for this client alone asks
    /// `nameserver` on port 53. freshclam has no option for its resolver:
    /// each run happens in a private mount namespace (`unshare --mount`,
    /// root only) where `/etc/resolv.conf` is this client's own file.
    pub fn dns(mut self, name: &str, nameserver: IpAddr) -> Client {
        assert_eq!(
            self.mode,
            Mode::DatabaseMirror,
            "DNS mode needs DatabaseMirror"
        );
        self.dns = Some((name.to_owned(), nameserver));
        self
    }

    /// `FIPSCryptoHashLimits no` instead of `yes` (ClamAV 1.5).
    pub fn without_fips(mut self) -> Client {
        self.fips = false;
        self
    }

    /// Another config line for every run.
    pub fn config(mut self, line: &str) -> Client {
        self.config.push(line.to_owned());
        self
    }

    /// An environment variable for every run.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Client {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Trusts `ca` (a PEM file) for HTTPS, as libcurl and OpenSSL find it.
    pub fn trusting(self, ca: &Path) -> Client {
        self.env("CURL_CA_BUNDLE", ca).env("SSL_CERT_FILE", ca)
    }

    /// The client's database directory.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// The client's certificate directory (ClamAV 1.5).
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Puts a database into the client's directory, as if an earlier update had.
    pub fn install(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.db().join(name), bytes).unwrap();
    }

    /// A file of the database directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        let path = self.db().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The files in the database directory (but `freshclam.dat`), sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.db())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "freshclam.dat")
            .collect();
        names.sort();
        names
    }

    /// Version in the header of the client's `bytecode.cvd`, if it has one.
    pub fn local_version(&self) -> Option<u32> {
        let bytes = std::fs::read(self.db().join("bytecode.cvd")).ok()?;
        Some(header_version(&bytes))
    }

    /// Version of the client's bytecode database (`.cvd` or `.cld`).
    pub fn version(&self) -> Option<u32> {
        ["bytecode.cvd", "bytecode.cld"]
            .iter()
            .filter_map(|n| std::fs::read(self.db().join(n)).ok())
            .filter_map(|b| Header::parse(&b).ok())
            .map(|h| h.version)
            .max()
    }

    /// Runs `freshclam --update-db=bytecode` once, bounded by [`RUN_TIMEOUT`].
    pub fn run(&self) -> Run {
        self.run_with(&[])
    }

    /// [`Client::run`] with `extra` config lines for this run only.
    pub fn run_with(&self, extra: &[&str]) -> Run {
        let mut conf = format!(
            "DatabaseDirectory {}\nDatabaseOwner {}\nLogVerbose yes\nForeground yes\nConnectTimeout 10\n",
            self.db().display(),
            current_user()
        );
        match self.mode {
            Mode::PrivateMirror => conf.push_str(&format!(
                "PrivateMirror {}\nDNSDatabaseInfo no\n",
                self.mirror
            )),
            Mode::DatabaseMirror => conf.push_str(&format!(
                "DatabaseMirror {}\nScriptedUpdates yes\n",
                self.mirror
            )),
        }
        if let Some((name, _)) = &self.dns {
            conf.push_str(&format!("DNSDatabaseInfo {name}\n"));
        }
        if self.clamav15 {
            conf.push_str(&format!(
                "CVDCertsDirectory {}\nFIPSCryptoHashLimits {}\n",
                self.certs().display(),
                if self.fips { "yes" } else { "no" }
            ));
        }
        for line in self
            .config
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = self.dir.path().join("freshclam.conf");
        std::fs::write(&conf_path, &conf).unwrap();

        let mut cmd = match &self.dns {
            Some((_, nameserver)) => self.in_own_resolver(*nameserver),
            None => Command::new(&self.bin),
        };
        cmd.arg(format!("--config-file={}", conf_path.display()))
            .arg("--update-db=bytecode")
            .env_remove("CVD_CERTS_DIR")
            .current_dir(self.dir.path());
        if self.mode == Mode::DatabaseMirror && self.dns.is_none() {
            // `DNSDatabaseInfo no` is NOT "off" outside PrivateMirror mode:
            // freshclam then looks up a host called "no". `--no-dns` is the
            // switch that really skips DNS.
            cmd.arg("--no-dns");
        }
        if self.clamav15 {
            // The post-download test load builds a new engine that reads
            // only the env or the compiled-in certs dir, not the config.
            cmd.env("CVD_CERTS_DIR", self.certs()).arg("--debug");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = run_bounded(&mut cmd, RUN_TIMEOUT, INSTALL_14);
        Run {
            bin: self.bin.clone(),
            conf,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl Client {
    /// A command that runs freshclam (its arguments follow) with a
    /// `/etc/resolv.conf` naming only `nameserver`, in a mount namespace of
    /// its own: nothing outside it sees the change.
    fn in_own_resolver(&self, nameserver: IpAddr) -> Command {
        let resolv = self.dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {nameserver}\noptions timeout:2 attempts:2\n"),
        )
        .unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(&resolv)
            .arg(&self.bin);
        cmd
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The version field of a CVD's 512-byte header.
pub fn header_version(cvd: &[u8]) -> u32 {
    Header::parse(cvd)
        .unwrap_or_else(|e| {
            panic!(
                "not a CVD header ({e}): {:?}",
                String::from_utf8_lossy(&cvd[..512.min(cvd.len())])
            )
        })
        .version
}

/// One finished freshclam run.
pub struct Run {
    bin: PathBuf,
    /// The config it ran with.
    pub conf: String,
    /// Exit status.
    pub status: ExitStatus,
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
        header(&self.headers, name)
    }
}

impl Run {
    /// stdout and stderr together, for searching messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Whether freshclam exited 0.
    pub fn succeeded(&self) -> bool {
        self.status.success()
    }

    /// Asserts a zero exit status, showing everything it printed otherwise.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.succeeded(), "freshclam should have succeeded\n{self}");
        self
    }

    /// Asserts a non-zero exit status.
    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(!self.succeeded(), "freshclam should have failed\n{self}");
        self
    }

    /// Asserts `needle` appears in its output.
    #[track_caller]
    pub fn assert_says(&self, needle: &str) -> &Self {
        assert!(
            self.output().contains(needle),
            "freshclam never said {needle:?}\n{self}"
        );
        self
    }

    /// Asserts `needle` appears nowhere in its output.
    #[track_caller]
    pub fn assert_never_says(&self, needle: &str) -> &Self {
        assert!(
            !self.output().contains(needle),
            "freshclam said {needle:?}\n{self}"
        );
        self
    }

    /// Asserts freshclam neither reports a CDN block/rate limit nor a cool-down.
    #[track_caller]
    pub fn assert_no_cool_down(&self) -> &Self {
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
        self
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

    /// The values of a response header `name` in libcurl's trace (`< Name: value`).
    pub fn response_headers(&self, name: &str) -> Vec<String> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter_map(|l| {
                l.trim_end_matches('\r')
                    .strip_prefix("< ")
                    .and_then(|h| h.split_once(':'))
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .collect()
    }
}

impl fmt::Display for Run {
    /// The client, its config and its output without the per-signature
    /// lines `--debug` prints while loading or unpacking a database.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never panic here: this runs while a failed assertion is formatted.
        let version = Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("version unknown: {e}"));
        writeln!(
            f,
            "--- {} ({version}) exit: {}\n--- freshclam.conf\n{}",
            self.bin.display(),
            self.status,
            self.conf
        )?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            writeln!(f, "--- {name}:")?;
            for line in text.lines().filter(|l| {
                !l.starts_with("LibClamAV debug: Bytecode") && !l.contains("debug: Unpacking \"")
            }) {
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}

/// The access-log lines `server` wrote for `run`, from line `from` on
/// (then moved past them), checked one by one against the requests
/// freshclam traced: same count, same paths, same statuses, and a ClamAV
/// User-Agent on each.
pub fn log_for(server: &TestServer, from: &mut usize, run: &Run) -> Vec<LogLine> {
    let exchanges = run.exchanges();
    assert!(!exchanges.is_empty(), "freshclam traced no request\n{run}");
    let lines = server.access_log_lines(*from + exchanges.len());
    let entries: Vec<LogLine> = lines[*from..]
        .iter()
        .map(|l| LogLine::parse(l).unwrap_or_else(|e| panic!("unparsable access-log line: {e}")))
        .collect();
    *from = lines.len();
    let show = || {
        format!(
            "client saw:\n{}\nserver logged:\n{}\n{run}",
            fmt_exchanges(&exchanges),
            fmt_entries(&entries)
        )
    };
    assert_eq!(
        entries.len(),
        exchanges.len(),
        "request count differs\n{}",
        show()
    );
    for (entry, ex) in entries.iter().zip(&exchanges) {
        assert_eq!(
            (entry.path.as_str(), Some(entry.status)),
            (ex.path.as_str(), ex.status),
            "\n{}",
            show()
        );
        assert!(
            entry.user_agent.starts_with("ClamAV/"),
            "User-Agent not logged as sent: {}\n{}",
            entry.line,
            show()
        );
    }
    entries
}

/// The exchanges, one a line, for messages.
pub fn fmt_exchanges(exchanges: &[Exchange]) -> String {
    exchanges
        .iter()
        .map(|e| format!("  GET {} -> {:?} {:?}\n", e.path, e.status, e.headers))
        .collect()
}

/// The access-log lines, one a line, for messages.
pub fn fmt_entries(entries: &[LogLine]) -> String {
    entries.iter().map(|e| format!("  {}\n", e.line)).collect()
}
