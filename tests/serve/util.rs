//! Helpers the serving-layer tests need beyond the shared harness: a
//! keep-alive connection that reads one framed response at a time, a check
//! that the server closed a connection, an access-log line parser, and a
//! spawner for runs the harness cannot express (no `--root`, `--access-log -`,
//! stdout read to the end).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::support::{DEADLINE, Response};

/// `bytecode-268.cvd`'s header `stime`.
pub const STIME_268: u64 = 1_440_082_241;
/// `bytecode-19.cvd`'s header `stime`.
pub const STIME_19: u64 = 1_273_845_430;
/// `bytecode-339.cvd`'s header `stime`.
pub const STIME_339: u64 = 1_757_593_759;
/// `bytecode-268.cvd`'s `stime` as an HTTP date.
pub const LM_268: &str = "Thu, 20 Aug 2015 14:50:41 GMT";

/// Marker written into files outside the served root; it must never come back.
pub const SECRET: &str = "TOPSECRET-OUTSIDE-THE-ROOT";

/// Formats epoch seconds as an IMF-fixdate.
pub fn http_date(epoch: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(epoch))
}

/// Sets a file's modification time to `epoch` seconds.
pub fn set_mtime(path: &Path, epoch: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(epoch))
        .unwrap();
}

/// A deterministic, non-repeating-looking byte pattern of length `len`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 251) as u8).collect()
}

/// One client connection that can carry several requests (keep-alive).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `METHOD path HTTP/1.1` with `Host: localhost` and `headers` (no `Connection` header).
    pub fn send_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send(req.as_bytes());
    }

    /// Sends a request and reads its response, keeping the connection open.
    pub fn roundtrip(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send_request(method, path, headers);
        self.read_response(method == "HEAD")
    }

    /// Reads more bytes into the buffer; false on EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "reading response: {e} (have {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads exactly one response, framed by Content-Length or chunked
    /// encoding (or EOF when neither is present).
    pub fn read_response(&mut self, head_only: bool) -> Response {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = Response::parse(&self.buf[..head_end], true);
        let no_body = head_only
            || head.status == 304
            || head.status == 204
            || (100..200).contains(&head.status);
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut resp = head;
        if no_body {
            self.buf.drain(..head_end);
        } else if chunked {
            let mut pos = head_end;
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                        break pos + p;
                    }
                    assert!(self.fill(), "EOF inside chunked body");
                };
                let size_text = std::str::from_utf8(&self.buf[pos..line_end]).unwrap();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                pos = line_end + 2;
                if size == 0 {
                    // Trailer section ends with an empty line.
                    loop {
                        if let Some(p) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                            let empty = p == 0;
                            pos += p + 2;
                            if empty {
                                break;
                            }
                        } else {
                            assert!(self.fill(), "EOF inside chunked trailer");
                        }
                    }
                    break;
                }
                while self.buf.len() < pos + size + 2 {
                    assert!(self.fill(), "EOF inside chunk");
                }
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
            self.buf.drain(..pos);
            resp.body = body;
        } else if let Some(len) = resp
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap())
        {
            while self.buf.len() < head_end + len {
                assert!(
                    self.fill(),
                    "EOF after {} of {len} body bytes",
                    self.buf.len() - head_end
                );
            }
            resp.body = self.buf[head_end..head_end + len].to_vec();
            self.buf.drain(..head_end + len);
        } else {
            while self.fill() {}
            resp.body = self.buf[head_end..].to_vec();
            self.buf.clear();
        }
        resp.rest = Vec::new();
        resp
    }

    /// Waits up to `within` for the server to close the connection. Returns
    /// whatever bytes arrived first (e.g. a 408), or `None` if still open.
    pub fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut got = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 65536];
        while start.elapsed() < within {
            let left = within
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => return Some(got),
            }
        }
        self.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        self.buf = got;
        None
    }

    /// True if nothing is readable and the peer has not closed within `wait`.
    pub fn still_open(&mut self, wait: Duration) -> bool {
        self.closed_within(wait).is_none()
    }
}

/// Sends `request` raw and parses the single response (connection read to EOF).
pub fn raw_response(addr: SocketAddr, request: &[u8], head_only: bool) -> Response {
    let bytes = crate::support::raw_exchange(addr, request);
    assert!(
        !bytes.is_empty(),
        "no response at all to {:?}",
        String::from_utf8_lossy(request)
    );
    Response::parse(&bytes, head_only)
}

/// One parsed combined-format access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub client: String,
    pub ident: String,
    pub user: String,
    pub time: String,
    pub request: String,
    pub status: u16,
    pub bytes: u64,
    pub referer: String,
    pub user_agent: String,
    pub seconds: String,
}

/// Parses `CLIENT - - [TIME] "REQUEST" STATUS BYTES "REFERER" "UA" SECONDS`.
/// Quoted fields are returned as they appear in the log (escapes kept).
pub fn parse_log_line(line: &str) -> Result<LogLine, String> {
    let mut rest = line;
    let word = |rest: &mut &str| -> Result<String, String> {
        let end = rest
            .find(' ')
            .ok_or_else(|| format!("missing field in {line:?}"))?;
        let w = rest[..end].to_owned();
        *rest = &rest[end + 1..];
        Ok(w)
    };
    let client = word(&mut rest)?;
    let ident = word(&mut rest)?;
    let user = word(&mut rest)?;
    let time = rest
        .strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .ok_or_else(|| format!("bad time in {line:?}"))?;
    let (time, after) = (time.0.to_owned(), time.1);
    rest = after;
    let request = quoted(&mut rest, line)?;
    let status = word(&mut rest)?
        .parse()
        .map_err(|e| format!("status: {e} in {line:?}"))?;
    let bytes = word(&mut rest)?
        .parse()
        .map_err(|e| format!("bytes: {e} in {line:?}"))?;
    let referer = quoted(&mut rest, line)?;
    let user_agent = quoted(&mut rest, line)?;
    let seconds = rest.to_owned();
    Ok(LogLine {
        client,
        ident,
        user,
        time,
        request,
        status,
        bytes,
        referer,
        user_agent,
        seconds,
    })
}

/// Reads `"..."` (backslash escapes allowed) followed by a space or the end.
fn quoted(rest: &mut &str, line: &str) -> Result<String, String> {
    let body = rest
        .strip_prefix('"')
        .ok_or_else(|| format!("expected a quote at {rest:?} in {line:?}"))?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let value = body[..i].to_owned();
            let after = &body[i + 1..];
            *rest = after.strip_prefix(' ').unwrap_or(after);
            return Ok(value);
        }
    }
    Err(format!("unterminated quoted field in {line:?}"))
}

/// Checks `[dd/Mon/yyyy:HH:MM:SS +0000]` and returns epoch seconds.
pub fn parse_log_time(t: &str) -> Result<u64, String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = t.as_bytes();
    let ok_shape = b.len() == 26
        && b[2] == b'/'
        && b[6] == b'/'
        && b[11] == b':'
        && b[14] == b':'
        && b[17] == b':'
        && &t[20..] == " +0000";
    if !ok_shape {
        return Err(format!("time {t:?} is not dd/Mon/yyyy:HH:MM:SS +0000"));
    }
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let day = num(&t[0..2])?;
    let month = MONTHS
        .iter()
        .position(|m| *m == &t[3..6])
        .ok_or_else(|| format!("month in {t:?}"))?
        + 1;
    let year = num(&t[7..11])?;
    let (h, m, s) = (num(&t[12..14])?, num(&t[15..17])?, num(&t[18..20])?);
    let dim = [
        31,
        if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day == 0 || day > dim[month - 1] || h > 23 || m > 59 || s > 60 {
        return Err(format!("invalid date {t:?}"));
    }
    Ok(
        days_from_civil(year as i64, month as i64, day as i64) as u64 * 86400
            + h * 3600
            + m * 60
            + s,
    )
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, in epoch seconds.
pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `cvdmirror` process started outside the harness, stdout and stderr
/// drained to the end (so late writes never hit a closed pipe).
pub struct Proc {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Runs `cvdmirror serve ARGS` in a fresh empty working directory
    /// (`setup` may populate it first; returns extra args) and waits for `ready`.
    pub fn spawn(setup: impl FnOnce(&Path) -> Vec<String>) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let args = setup(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvdmirror"));
        cmd.arg("serve").args(&args).current_dir(dir.path());
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("RUST_LOG", "info");
        let mut child = cmd.spawn().expect("spawn cvdmirror");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut p = Proc {
            child,
            dir,
            stdout,
            stderr,
        };
        let start = Instant::now();
        loop {
            if p.stdout
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("ready"))
            {
                break;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "cvdmirror exited with {status} before ready: {}",
                    p.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "cvdmirror did not print ready; stdout {:?} stderr {:?}",
                p.stdout.lock().unwrap(),
                p.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    /// Addresses from `listening on http://ADDR/` lines.
    pub fn addrs(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("listening on http://"))
            .map(|a| a.trim_end_matches('/').to_owned())
            .collect()
    }

    /// Waits until some stdout line satisfies `pred`; returns all lines.
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if pred(&lines) {
                return lines;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "stdout never showed {what}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The working directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails with a clear message if IPv6 loopback cannot be bound here.
pub fn require_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!("IPv6 loopback [::1] is not usable on this machine ({e}); this test needs it");
    }
}

impl Proc {
    /// Sends a signal by name with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stderr so far, for failure messages.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

/// Starts `cvdmirror serve` on 127.0.0.1:0 with `root/` holding `files`,
/// an access log file, and an optional config file.
pub fn spawn_with(files: &[(&str, &[u8])], config: Option<&str>) -> Proc {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
        .collect();
    let config = config.map(str::to_owned);
    Proc::spawn(move |dir| {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        for (name, bytes) in &files {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--root",
            "root",
            "--access-log",
            "access.log",
        ]
        .map(String::from)
        .to_vec();
        if let Some(toml) = config {
            std::fs::write(dir.join("cvdmirror.toml"), toml).unwrap();
            args.extend(["--config".to_owned(), "cvdmirror.toml".to_owned()]);
        }
        args
    })
}

/// Asserts two bodies are equal without dumping megabytes on failure.
#[track_caller]
pub fn assert_body(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: body differs: {} bytes, expected {}; first difference at byte {first}; got {:?}...",
            actual.len(),
            expected.len(),
            String::from_utf8_lossy(&actual[first..actual.len().min(first + 80)])
        );
    }
}
