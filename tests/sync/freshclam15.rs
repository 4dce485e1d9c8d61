//! ClamAV 1.5.3's own freshclam and sigtool against what cvdmirror
//! publishes: FIPS-mode clients (`FIPSCryptoHashLimits yes`) accept a CVD
//! only on a valid ClamAV 1.5 `.sign` (detached PKCS#7, `#clamsign-1.0`), so
//! these tests prove that the `.sign` files `cvdmirror sync` verifies and
//! publishes are the ones a real 1.5 client can use, whole CVD and cdiff,
//! and that a client refuses the update when they are damaged or missing.
//! Debian's freshclam 1.4 must still update from the same root.
//!
//! The `.sign` files are made with the shared test PKI, whose root the
//! mirror trusts (`--sign-root`) and the client finds in its certificate
//! directory (`CVDCertsDirectory` and `CVD_CERTS_DIR`). freshclam trusts
//! only ClamAV's official *legacy* keys, but with a valid `.sign` it skips
//! the legacy header signature. It cannot skip the `DSIG:` line of the
//! `<db>.info` inside the database, which libclamav checks with the
//! official info key whenever it loads one (`cli_loadinfo`). Hence:
//! - whole CVDs are the genuine fixtures (`bytecode-339.cvd`), published
//!   with a `.sign` made by the test PKI (a `.sign` can sign any bytes);
//! - the cdiff (no genuine one exists) is built here: it rewrites the first
//!   line of the genuine 339's `bytecode.info` to the 340 header line, from
//!   which freshclam builds the new `.cld`. That `.info` can no longer carry
//!   an official DSIG, so that one update runs with `TestDatabases no`
//!   (checked: with `yes` it fails exactly there).
//!
//! Needs ClamAV 1.5.3 built by `scripts/build-clamav15` in
//! `$CVDMIRROR_CLAMAV15` (default `/var/cache/cvdmirror-test/clamav-1.5.3`)
//! and Debian's freshclam (`scripts/install-test-deps`); fails, never
//! skips, without them. See docs/testing-freshclam.md.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cvdmirror::cvd::build::{self, DbSpec};
use cvdmirror::cvd::{HEADER_LEN, Header};

use super::world::*;
use crate::support::{self, DEADLINE, TestServer};

/// Longest a single freshclam or sigtool run may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The genuine fixture every test starts from.
const GENUINE: &str = "bytecode-339.cvd";

/// Where `scripts/build-clamav15` installs ClamAV 1.5.3.
fn clamav15_prefix() -> PathBuf {
    std::env::var_os("CVDMIRROR_CLAMAV15")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/cvdmirror-test/clamav-1.5.3"))
}

/// `bin/NAME` of the ClamAV 1.5.3 build; fails the test when it is missing.
fn clamav15_bin(name: &str) -> PathBuf {
    let path = clamav15_prefix().join("bin").join(name);
    assert!(
        path.is_file(),
        "ClamAV 1.5.3 {name} not found at {}: build it with scripts/build-clamav15 \
         (or point CVDMIRROR_CLAMAV15 at its install prefix)",
        path.display()
    );
    path
}

/// Debian's freshclam (ClamAV 1.4), as tests/sync/freshclam.rs runs it.
const DEBIAN_FRESHCLAM: &str = "/usr/bin/freshclam";

/// How a client is pointed at the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `PrivateMirror URL` + `DNSDatabaseInfo no`: header checks over HTTP,
    /// whole CVDs only (freshclam turns scripted updates off for private
    /// mirrors: `bPrivate ? 0 : ScriptedUpdates` in freshclam.c).
    PrivateMirror,
    /// `DatabaseMirror URL` + `ScriptedUpdates yes`, run with `--no-dns`:
    /// header check, then cdiffs, then the whole CVD as a fallback.
    DatabaseMirror,
}

/// One freshclam installation in a temp dir: `db/`, `certs/` (the test
/// PKI's root) and a `freshclam.conf` written before each run.
struct Client {
    bin: PathBuf,
    dir: tempfile::TempDir,
    mirror: String,
    mode: Mode,
    /// ClamAV 1.5: `CVDCertsDirectory`, `CVD_CERTS_DIR` and `--debug`.
    clamav15: bool,
    fips: bool,
}

impl Client {
    /// ClamAV 1.5.3 in FIPS mode, trusting the test PKI's root.
    fn clamav15(mirror: &str, mode: Mode) -> Client {
        let client = Self::new(clamav15_bin("freshclam"), mirror, mode, true);
        std::fs::create_dir(client.certs()).unwrap();
        std::fs::write(client.certs().join("test-root.crt"), pki().root_pem()).unwrap();
        client
    }

    /// Debian's freshclam 1.4.
    fn debian(mirror: &str, mode: Mode) -> Client {
        assert!(
            Path::new(DEBIAN_FRESHCLAM).is_file(),
            "{DEBIAN_FRESHCLAM} not found: install it with scripts/install-test-deps"
        );
        Self::new(PathBuf::from(DEBIAN_FRESHCLAM), mirror, mode, false)
    }

    fn new(bin: PathBuf, mirror: &str, mode: Mode, clamav15: bool) -> Client {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        Client {
            bin,
            dir,
            mirror: mirror.to_owned(),
            mode,
            clamav15,
            fips: clamav15,
        }
    }

    /// `FIPSCryptoHashLimits no` instead of `yes`.
    fn without_fips(mut self) -> Client {
        self.fips = false;
        self
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The files in the database directory (but `freshclam.dat`), sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.db())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "freshclam.dat")
            .collect();
        names.sort();
        names
    }

    fn read(&self, name: &str) -> Vec<u8> {
        let path = self.db().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Runs `freshclam --update-db=bytecode` once with `extra` config lines,
    /// bounded by [`RUN_TIMEOUT`]. `MaxAttempts 1`: a refused update fails
    /// at once instead of retrying every 5 s.
    fn run(&self, extra: &[&str]) -> FcRun {
        let mut conf = format!(
            "DatabaseDirectory {}\nDatabaseOwner {}\nLogVerbose yes\nForeground yes\n\
             ConnectTimeout 10\nMaxAttempts 1\n",
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
        if self.clamav15 {
            conf.push_str(&format!(
                "CVDCertsDirectory {}\nFIPSCryptoHashLimits {}\n",
                self.certs().display(),
                if self.fips { "yes" } else { "no" }
            ));
        }
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = self.dir.path().join("freshclam.conf");
        std::fs::write(&conf_path, &conf).unwrap();

        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--config-file={}", conf_path.display()))
            .arg("--update-db=bytecode")
            .env_remove("CVD_CERTS_DIR");
        if self.mode == Mode::DatabaseMirror {
            // `DNSDatabaseInfo no` means a host called "no" outside
            // PrivateMirror mode; `--no-dns` really skips DNS.
            cmd.arg("--no-dns");
        }
        if self.clamav15 {
            // The post-download test load builds a new engine that reads
            // only the env or the compiled-in certs dir, not the config.
            cmd.env("CVD_CERTS_DIR", self.certs()).arg("--debug");
        }
        let out = bounded(cmd.current_dir(self.dir.path()));
        FcRun {
            conf,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A finished child process.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with piped output (drained by threads, so a chatty `--debug`
/// cannot fill a pipe and stall), killed after [`RUN_TIMEOUT`].
fn bounded(cmd: &mut Command) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let start = Instant::now();
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
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    let Some(status) = status else {
        panic!("{cmd:?} did not finish within {RUN_TIMEOUT:?} and was killed\n{stdout}{stderr}");
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

/// One freshclam run.
struct FcRun {
    conf: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl FcRun {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "freshclam should have succeeded\n{self}"
        );
        self
    }

    fn assert_failed(&self) -> &Self {
        assert!(
            !self.status.success(),
            "freshclam should have failed\n{self}"
        );
        self
    }

    fn assert_says(&self, needle: &str) -> &Self {
        assert!(
            self.output().contains(needle),
            "freshclam never said {needle:?}\n{self}"
        );
        self
    }

    fn assert_never_says(&self, needle: &str) -> &Self {
        assert!(
            !self.output().contains(needle),
            "freshclam said {needle:?}\n{self}"
        );
        self
    }
}

impl fmt::Display for FcRun {
    /// The config and the output without the per-signature lines `--debug`
    /// prints while loading or unpacking a database.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "--- freshclam.conf\n{}--- exit: {}",
            self.conf, self.status
        )?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            writeln!(f, "--- {name}")?;
            for line in text.lines().filter(|l| {
                !l.starts_with("LibClamAV debug: Bytecode") && !l.contains("debug: Unpacking \"")
            }) {
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}

/// One line of `cvdmirror serve`'s access log (combined format):
/// `IP - - [time] "GET /path HTTP/1.1" STATUS BYTES "REFERER" "UA" SECONDS`.
#[derive(Debug)]
struct Access {
    path: String,
    status: u16,
    bytes: u64,
    user_agent: String,
}

fn access_log(server: &TestServer) -> Vec<Access> {
    let text = std::fs::read_to_string(&server.access_log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('"').collect();
            let request: Vec<&str> = parts.get(1).unwrap_or(&"").split(' ').collect();
            let numbers: Vec<&str> = parts.get(2).unwrap_or(&"").split_whitespace().collect();
            let parsed = (|| {
                Some(Access {
                    path: request.get(1)?.to_string(),
                    status: numbers.first()?.parse().ok()?,
                    bytes: match *numbers.get(1)? {
                        "-" => 0,
                        n => n.parse().ok()?,
                    },
                    user_agent: parts.get(5)?.to_string(),
                })
            })();
            parsed.unwrap_or_else(|| panic!("unexpected access log line {line:?}"))
        })
        .collect()
}

/// The access log after `mark` lines, once a line `done` accepts (the
/// run's final request) is logged: lines land a few ms after a response.
fn log_until(server: &TestServer, mark: usize, done: impl Fn(&Access) -> bool) -> Vec<Access> {
    let start = Instant::now();
    loop {
        let log: Vec<Access> = access_log(server).into_iter().skip(mark).collect();
        if log.iter().any(&done) {
            return log;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the access log never showed the awaited request after line {mark}: {log:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`log_until`] a request for `path`.
fn log_until_path(server: &TestServer, mark: usize, path: &str) -> Vec<Access> {
    log_until(server, mark, |a| a.path == path)
}

/// Asserts that `log` shows `path` downloaded exactly once, a 200 of
/// `size` bytes (header checks aside: a 206 of 512 bytes or a 304), and
/// asked for only by clients whose User-Agent starts with `agent`.
fn assert_one_download(log: &[Access], path: &str, size: usize, agent: &str) {
    let hits: Vec<&Access> = log.iter().filter(|a| a.path == path).collect();
    let downloads: Vec<&&Access> = hits.iter().filter(|a| !is_header_check(a)).collect();
    assert!(
        downloads.len() == 1
            && downloads[0].status == 200
            && downloads[0].bytes == size as u64
            && hits.iter().all(|a| a.user_agent.starts_with(agent)),
        "wanted one 200 of {size} bytes for {path} to {agent}: {log:#?}"
    );
}

fn is_header_check(a: &Access) -> bool {
    (a.status == 206 && a.bytes == HEADER_LEN as u64) || a.status == 304
}

/// The whole bytecode.cvd body was not sent: every request for it was a
/// header check (a 206 of 512 bytes or a 304).
fn assert_no_whole_cvd(log: &[Access]) {
    for a in log.iter().filter(|a| a.path == "/bytecode.cvd") {
        assert!(
            is_header_check(a),
            "bytecode.cvd was downloaded, not only header-checked: {log:#?}"
        );
    }
}

/// `sigtool --verify FILE --cvdcertsdir DIR` (ClamAV 1.5.3).
fn sigtool_verify(file: &Path, certs: &Path) -> Finished {
    let mut cmd = Command::new(clamav15_bin("sigtool"));
    cmd.arg("--verify")
        .arg(file)
        .arg("--cvdcertsdir")
        .arg(certs)
        .env_remove("CVD_CERTS_DIR");
    bounded(&mut cmd)
}

/// A world whose upstream has the genuine 339 with a test-PKI `.sign`, a
/// mirror (`--signatures both`: pre-1.5 and FIPS clients from one root)
/// synced from it, and `cvdmirror serve` serving the mirror's root.
struct Setup {
    world: World,
    server: TestServer,
    mirror: Mirror,
}

fn mirror_at_339() -> Setup {
    let world = World::new();
    let genuine = support::fixture(GENUINE);
    // As `World::put_cvd`, keeping the .sign (signing time varies).
    let upstream_sign = sign(&genuine);
    world.up.put("bytecode-339.cvd.sign", &upstream_sign);
    world.up.put("bytecode.cvd", &genuine);
    world.advertise(DB, 339);
    let server = TestServer::builder().start();
    let mirror = Mirror::at(
        tempfile::tempdir().unwrap(),
        server.root.clone(),
        FAST_CONFIG,
    )
    .arg("--signatures")
    .arg("both");
    let run = mirror.sync(&world);
    run.assert_ok();
    assert_eq!(mirror.version(), Some(339), "{run}");
    assert!(
        std::fs::read(server.root.join("bytecode.cvd")).unwrap() == genuine,
        "the mirror does not serve the genuine 339\n{run}"
    );
    assert!(
        std::fs::read(server.root.join("bytecode-339.cvd.sign")).unwrap() == upstream_sign,
        "the mirror does not serve upstream's .sign\n{run}"
    );
    check_served(&mirror.root, None).unwrap();
    Setup {
        world,
        server,
        mirror,
    }
}

/// The first line of `<db>.info` in a CVD (a gzip'd tar after the header).
fn info_first_line(cvd: &[u8]) -> String {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&cvd[HEADER_LEN..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let block = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&block[..100])
            .trim_end_matches('\0')
            .to_owned();
        let size_field = String::from_utf8_lossy(&block[124..136]).into_owned();
        let size = usize::from_str_radix(size_field.trim_matches(['\0', ' ']), 8).unwrap();
        if name == format!("{DB}.info") {
            let body = &tar[at + 512..at + 512 + size];
            let text = String::from_utf8_lossy(body);
            return text.lines().next().unwrap().to_owned();
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    panic!("no {DB}.info in the CVD");
}

/// Release 340 upstream, as Talos would: a cdiff turning the genuine 339
/// into 340 and a whole CVD 340, each with its `.sign`. Returns the spec
/// of 340 (whose header line the cdiff writes into `bytecode.info`).
fn release_340(world: &World) -> DbSpec {
    let genuine = support::fixture(GENUINE);
    let h339 = Header::parse(&genuine).unwrap();
    // Later than 339, or the header check (If-Modified-Since: the local
    // stime) would be answered 304 and the client would stay at 339.
    let spec = DbSpec::new(DB, 340)
        .stime(h339.stime + 3_600)
        .signatures(h339.signatures)
        .flevel(h339.flevel);
    // The 339 `.info` starts with the 339 header line, md5 and dsig `X`.
    let old = info_first_line(&genuine);
    assert_eq!(
        old,
        format!(
            "ClamAV-VDB:{}:339:{}:{}:X:X:{}:{}",
            h339.built, h339.signatures, h339.flevel, h339.builder, h339.stime
        )
    );
    // `XCHG <line> <orig> <new>`: <orig> is one word, matched as a prefix
    // of the line; <new> is the rest of the command line. freshclam then
    // builds `bytecode.cld` with `bytecode.info`'s first line as its header.
    let orig = old.split(' ').next().unwrap();
    let script = format!(
        "OPEN {DB}.info\nXCHG 1 {orig} {}\nCLOSE\n",
        spec.header_line()
    );
    let cdiff = build::cdiff_from_script(340, script.as_bytes(), &keys().cdiff).unwrap();
    world.put_signed(&cdiff_name(340), &cdiff);
    world.put_cvd(&build::cvd(&spec, keys()).unwrap());
    world.advertise(DB, 340);
    spec
}

#[test]
fn fips_client_updates_by_whole_cvd_on_the_mirrors_sign() {
    let Setup { server, mirror, .. } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    let served_sign = std::fs::read(server.root.join("bytecode-339.cvd.sign")).unwrap();
    let client = Client::clamav15(&server.url(""), Mode::PrivateMirror);

    let run = client.run(&[]);
    run.assert_ok()
        .assert_says("CVD verified successfully with detached signature file")
        .assert_says(&format!("bytecode.cvd\" signed by {}", pki().signer_name()))
        .assert_says("bytecode.cvd updated (version: 339");
    assert!(
        client.read("bytecode.cvd") == genuine,
        "the client's bytecode.cvd differs\n{run}"
    );
    assert!(
        client.read("bytecode-339.cvd.sign") == served_sign,
        "the client's bytecode-339.cvd.sign differs\n{run}"
    );
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{run}"
    );
    let log = log_until_path(&server, 0, "/bytecode-339.cvd.sign");
    assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
    assert_one_download(
        &log,
        "/bytecode-339.cvd.sign",
        served_sign.len(),
        "ClamAV/1.5.3",
    );

    // sigtool 1.5.3 accepts what the mirror publishes, and only with the
    // root that signed it.
    let verify = sigtool_verify(&mirror.root.join("bytecode.cvd"), &client.certs());
    assert!(
        verify.status.success()
            && verify.stdout.contains(&format!(
                "Successfully verified file '{}' with signature '{}', signed by '{}'",
                mirror.root.join("bytecode.cvd").display(),
                mirror.root.join("bytecode-339.cvd.sign").display(),
                pki().signer_name()
            )),
        "sigtool --verify: {}\n{}{}",
        verify.status,
        verify.stdout,
        verify.stderr
    );
    // The build's compiled-in certs dir: ClamAV's production root only.
    let official = clamav15_prefix().join("etc/certs");
    let untrusted = sigtool_verify(&mirror.root.join("bytecode.cvd"), &official);
    assert!(
        !untrusted.status.success()
            && !untrusted.stdout.contains("Successfully verified")
            && format!("{}{}", untrusted.stdout, untrusted.stderr)
                .contains("unable to get local issuer certificate"),
        "sigtool verified a test-PKI .sign with only the official root: {}{}",
        untrusted.stdout,
        untrusted.stderr
    );
}

#[test]
fn fips_client_updates_by_cdiff_on_the_mirrors_sign() {
    let Setup {
        world,
        server,
        mirror,
    } = mirror_at_339();
    // DatabaseMirror: a PrivateMirror client never asks for cdiffs.
    let client = Client::clamav15(&server.url(""), Mode::DatabaseMirror);
    let run = client.run(&[]);
    run.assert_ok()
        .assert_says("CVD verified successfully with detached signature file");
    assert_eq!(
        client.read("bytecode.cvd"),
        support::fixture(GENUINE),
        "{run}"
    );
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{run}"
    );

    let spec = release_340(&world);
    let sync = mirror.sync(&world);
    sync.assert_ok();
    assert_eq!(mirror.version(), Some(340), "{sync}");
    check_served(&mirror.root, Some(339)).unwrap();
    let cdiff = std::fs::read(mirror.root.join("bytecode-340.cdiff")).unwrap();
    let cdiff_sign = std::fs::read(mirror.root.join("bytecode-340.cdiff.sign")).unwrap();

    // With TestDatabases yes the patched database fails its test load: the
    // cdiff applied (its .sign verified), but the rewritten bytecode.info no
    // longer matches its official DSIG, and no key we hold can re-sign it.
    let mark = access_log(&server).len();
    let tested = client.run(&[]);
    tested
        .assert_failed()
        .assert_says("cdiff_apply: external signature verified")
        .assert_says("cli_loadinfo: Incorrect digital signature")
        .assert_says("Database test FAILED");
    log_until_path(&server, mark, "/bytecode-340.cdiff.sign");
    assert_eq!(
        client.files(),
        ["bytecode-339.cvd.sign", "bytecode.cvd"],
        "{tested}"
    );

    // Hence TestDatabases no: the update itself is freshclam's own.
    let mark = access_log(&server).len();
    let run = client.run(&["TestDatabases no"]);
    run.assert_ok()
        .assert_says(&format!(
            "cdiff_apply: external signature verified. Signed by: {}",
            pki().signer_name()
        ))
        .assert_says("bytecode.cld updated (version: 340")
        .assert_never_says("Incremental update failed");
    let log = log_until_path(&server, mark, "/bytecode-340.cdiff.sign");
    assert_one_download(&log, "/bytecode-340.cdiff", cdiff.len(), "ClamAV/1.5.3");
    assert_one_download(
        &log,
        "/bytecode-340.cdiff.sign",
        cdiff_sign.len(),
        "ClamAV/1.5.3",
    );
    assert_no_whole_cvd(&log);
    // A CLD carries no .sign; the old CVD and its .sign are gone.
    assert_eq!(client.files(), ["bytecode.cld"], "{run}");
    let cld = client.read("bytecode.cld");
    let header = Header::parse(&cld).unwrap();
    assert_eq!(
        (header.version, header.builder.as_str()),
        (340, "cvdmirror"),
        "{run}"
    );
    assert_eq!(
        String::from_utf8_lossy(&cld[..HEADER_LEN]).trim_end(),
        spec.header_line(),
        "{run}"
    );
}

/// A copy of `root`'s served files with the `.sign` of the CVD at 339
/// replaced (`Some`) or removed (`None`), served by its own server.
fn serve_copy(root: &Path, sign_339: Option<&[u8]>) -> TestServer {
    let mut builder = TestServer::builder();
    for name in snapshot(root).keys() {
        let bytes = if name == "bytecode-339.cvd.sign" {
            match sign_339 {
                Some(bytes) => bytes.to_vec(),
                None => continue,
            }
        } else {
            std::fs::read(root.join(name)).unwrap()
        };
        builder = builder.file(name, &bytes);
    }
    builder.start()
}

/// `sign` with one base64 character of its signature line changed, near
/// the end of the DER, i.e. inside the RSA signature value: it still
/// parses, and no longer verifies.
fn tamper(sign: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(sign.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = &mut lines[1];
    assert!(line.starts_with("230::pkcs7-pem:"), "{text}");
    // Before the last four-character group, so never a '=' pad.
    let at = line.len() - 8;
    let new = if line.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    line.replace_range(at..=at, new);
    format!("{}\n", lines.join("\n")).into_bytes()
}

#[test]
fn fips_client_refuses_a_damaged_or_missing_sign() {
    // `_server` keeps the mirror's root (its directory) alive.
    let Setup {
        server: _server,
        mirror,
        ..
    } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    let good = std::fs::read(mirror.root.join("bytecode-339.cvd.sign")).unwrap();
    let tampered = tamper(&good);
    let other = sign(&support::fixture("bytecode-268.cvd"));
    for (what, bad) in [("tampered", &tampered), ("of other content", &other)] {
        // What cvdmirror's own verifier makes of it: present but invalid,
        // the kind of .sign that makes ClamAV 1.5 refuse the file.
        let verdict = sign_verifier().verify(&genuine, bad, SystemTime::now());
        assert!(
            verdict.as_ref().is_err_and(|e| e.is_invalid()),
            "a .sign {what} should be invalid, got {verdict:?}"
        );
        let server = serve_copy(&mirror.root, Some(bad));
        // Refused in FIPS mode and, an invalid .sign having no legacy
        // fallback, outside it too.
        for fips in [true, false] {
            let mut client = Client::clamav15(&server.url(""), Mode::PrivateMirror);
            if !fips {
                client = client.without_fips();
            }
            let mark = access_log(&server).len();
            let run = client.run(&[]);
            run.assert_failed()
                .assert_says("Detached CVD signature is invalid")
                .assert_says("Invalid or corrupted CVD/CLD database");
            assert!(
                client.files().is_empty(),
                "a .sign {what} (FIPS {fips}): the client kept files\n{run}"
            );
            // It did download both, and refused them.
            let log = log_until_path(&server, mark, "/bytecode-339.cvd.sign");
            assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
            assert_one_download(&log, "/bytecode-339.cvd.sign", bad.len(), "ClamAV/1.5.3");
        }
        let verify = sigtool_verify(&server.root.join("bytecode.cvd"), &pki_certs());
        assert!(
            !verify.status.success()
                && !verify.stdout.contains("Successfully verified")
                && format!("{}{}", verify.stdout, verify.stderr)
                    .contains("verify: Failed to verify file"),
            "sigtool verified a .sign {what}: {}{}",
            verify.stdout,
            verify.stderr
        );
    }

    // No .sign at all: FIPS mode has no legacy fallback...
    let server = serve_copy(&mirror.root, None);
    let client = Client::clamav15(&server.url(""), Mode::PrivateMirror);
    let run = client.run(&[]);
    run.assert_failed()
        .assert_says("No external .sign digital signature file for bytecode-339")
        .assert_says(
            "Unable to verify CVD with detached signature file and MD5 verification is disabled",
        )
        .assert_says("Invalid or corrupted CVD/CLD database");
    assert!(client.files().is_empty(), "{run}");
    let log = log_until_path(&server, 0, "/bytecode-339.cvd.sign");
    assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.5.3");
    // ...which is what refused it: the same client without FIPS limits
    // takes the genuine CVD on its legacy signature.
    let client = client.without_fips();
    let mark = access_log(&server).len();
    let run = client.run(&[]);
    run.assert_ok()
        .assert_says("bytecode.cvd updated (version: 339");
    assert!(
        client.read("bytecode.cvd") == genuine,
        "the client's bytecode.cvd differs\n{run}"
    );
    let log = log_until_path(&server, mark, "/bytecode-339.cvd.sign");
    assert!(
        log.iter()
            .filter(|a| a.path == "/bytecode-339.cvd.sign")
            .all(|a| a.status == 404),
        "{log:#?}"
    );
}

/// A certs dir holding the test PKI's root.
fn pki_certs() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test-root.crt"), pki().root_pem()).unwrap();
        dir
    });
    dir.path().to_owned()
}

#[test]
fn debian_freshclam_14_still_updates_from_a_root_with_signs() {
    let Setup { server, .. } = mirror_at_339();
    let genuine = support::fixture(GENUINE);
    assert!(server.root.join("bytecode-339.cvd.sign").is_file());
    for mode in [Mode::PrivateMirror, Mode::DatabaseMirror] {
        let client = Client::debian(&server.url(""), mode);
        let mark = access_log(&server).len();
        let run = client.run(&[]);
        run.assert_ok()
            .assert_says("bytecode.cvd updated (version: 339");
        assert!(
            client.read("bytecode.cvd") == genuine,
            "the client's bytecode.cvd differs\n{mode:?}\n{run}"
        );
        assert_eq!(client.files(), ["bytecode.cvd"], "{mode:?}\n{run}");
        let log = log_until(&server, mark, |a| {
            a.path == "/bytecode.cvd" && a.status == 200
        });
        assert_one_download(&log, "/bytecode.cvd", genuine.len(), "ClamAV/1.4");
        // ClamAV 1.4 does not know .sign files.
        assert!(
            log.iter().all(|a| !a.path.ends_with(".sign")),
            "{mode:?}: {log:#?}"
        );
    }
}
