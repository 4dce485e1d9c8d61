//! Child processes: the `cvdmirror` binary under test (one command, with a
//! clean environment), a spawned process whose output is collected line by
//! line and which is killed when dropped, and runs of any program to its
//! end with the output kept whole, bounded where the program might hang.
//!
//! Every start of `cvdmirror` in the tests goes through [`cvdmirror`], so
//! none of them inherits a `CVDMIRROR_*` setting or a proxy from the
//! environment the tests run in.

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::wait::{poll, wait_until};

/// The binary under test: the one Cargo built for these tests, or
/// `$CVDMIRROR_TEST_BIN` (a copy kept apart from a target directory that
/// other builds share and overwrite).
pub fn binary() -> PathBuf {
    std::env::var_os("CVDMIRROR_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_cvdmirror")),
        PathBuf::from,
    )
}

/// `cvdmirror ARGS`: the [`binary`] under test, without the `CVDMIRROR_*`
/// and proxy variables of the tests' own environment, logging at `info`
/// without colours, stdin null.
pub fn cvdmirror<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(binary());
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CVDMIRROR_") {
            cmd.env_remove(key);
        }
    }
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(key).env_remove(key.to_ascii_lowercase());
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lines a child writes on one pipe, collected by a thread as they
/// come (invalid UTF-8 replaced, so a stray byte never stops the reader
/// and leaves the child blocked on a full pipe).
#[derive(Clone, Default)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    closed: Arc<AtomicBool>,
}

impl Lines {
    fn collect(pipe: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                lock(&sink.lines).push(String::from_utf8_lossy(&line).into_owned());
                line.clear();
            }
            sink.closed.store(true, Ordering::SeqCst);
        });
        lines
    }

    fn all(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Whether the child closed the pipe and every line is in.
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A running child process, its stdout and stderr collected line by line;
/// killed when dropped.
pub struct Process {
    child: Mutex<Child>,
    stdout: Lines,
    stderr: Lines,
    /// The program, for messages.
    name: String,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr piped and stdin null.
    pub fn spawn(cmd: &mut Command) -> Process {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        Process {
            child: Mutex::new(child),
            stdout,
            stderr,
            name,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Every line it printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.all()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.all().join("\n")
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().unwrap()
    }

    /// Waits up to `within` for it to exit.
    pub fn exit_within(&self, within: Duration) -> Option<ExitStatus> {
        poll(within, || self.try_exit().ok_or(())).ok()
    }

    /// Waits until its stdout lines satisfy `done` and returns them; fails
    /// if it exits first or nothing comes `within`.
    pub fn wait_stdout(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        wait_until(within, || {
            let lines = self.stdout.all();
            if done(&lines) {
                return Ok(lines);
            }
            if let Some(status) = self.try_exit()
                && self.stdout.closed()
            {
                panic!(
                    "{} exited with {status} before its stdout showed {what}: {lines:?}\nstderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            Err(format!(
                "the stdout of {} never showed {what}: {lines:?}\nstderr:\n{}",
                self.name,
                self.stderr()
            ))
        })
    }

    /// Sends a signal by name ("TERM", "HUP") with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A program that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Finished {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// stdout and stderr together, for searching messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end (stdin null) and keeps its output.
pub fn run(cmd: &mut Command) -> Finished {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd` to its end with its output drained by threads (a chatty
/// `--debug` never stalls on a full pipe); kills it and fails the test
/// when it takes longer than `within`. `missing` says how to install the
/// program, for when it cannot be started.
pub fn run_bounded(cmd: &mut Command, within: Duration, missing: &str) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}; {missing}", cmd.get_program()));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = poll(within, || child.try_wait().unwrap().ok_or(()));
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    let Ok(status) = status else {
        panic!("{cmd:?} did not finish within {within:?} and was killed\n{stdout}\n{stderr}");
    };
    Finished {
        status,
        stdout,
        stderr,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// What a finished run of the binary is checked for. Every record of one
/// implements it, so its messages show all the record knows (a `sync`
/// pass also shows what upstream saw).
pub trait Outcome: fmt::Display + Sized {
    /// The run itself.
    fn finished(&self) -> &Finished;

    /// Asserts exit 0.
    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert!(self.finished().ok(), "should have succeeded\n{self}");
        self
    }

    /// Asserts a non-zero exit whose stderr says every one of `words`.
    #[track_caller]
    fn assert_failed(&self, words: &[&str]) -> &Self {
        assert!(!self.finished().ok(), "should have failed\n{self}");
        for word in words {
            assert!(
                self.finished().stderr.contains(word),
                "stderr does not say {word:?}\n{self}"
            );
        }
        self
    }

    /// Asserts stdout says every one of `words`.
    #[track_caller]
    fn says(&self, words: &[&str]) -> &Self {
        for word in words {
            assert!(
                self.finished().stdout.contains(word),
                "stdout does not say {word:?}\n{self}"
            );
        }
        self
    }
}

impl Outcome for Finished {
    fn finished(&self) -> &Finished {
        self
    }
}
