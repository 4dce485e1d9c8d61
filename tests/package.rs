//! The Debian package, end to end, on this machine: `scripts/build-deb`
//! builds it, lintian reports no error, `dpkg -i` installs it, the installed
//! binary serves a file with the packaged config as the packaged user,
//! logrotate makes it reopen its access log, installing it again (an
//! upgrade) keeps an edited conffile and the mirror's data, `dpkg -r` keeps
//! them too, and `dpkg --purge` leaves nothing behind: no file, directory,
//! user, group or systemd link.
//!
//! THIS TEST CHANGES THE MACHINE IT RUNS ON. It installs and purges the
//! `cvdmirror` package, which creates and deletes the `cvdmirror` user and
//! group, /etc/cvdmirror, /var/lib/cvdmirror and /var/log/cvdmirror. It is
//! meant for CI's own machine, run as root by scripts/test. A guard purges
//! the package even when an assertion fails, and the test refuses to start
//! if any of those already exists, so it never removes what it did not
//! install. It needs cargo-deb, dpkg-dev, lintian, logrotate, man-db and
//! util-linux's setpriv (scripts/install-test-deps installs what Debian
//! lacks by default); a missing tool fails the test, it is never skipped.
//!
//! The package is built with the `package-test` Cargo profile (thin LTO,
//! see Cargo.toml) rather than `release`: the same code, features and
//! packaging, built in about two thirds of the time (docs/packaging.md).

// A test crate: a panic with context *is* the failure report, and the
// timings it prints are real elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::process::Process;
use support::wait::{check, wait_until, wait_until_every};

const PACKAGE: &str = "cvdmirror";
const CONFIG: &str = "/etc/cvdmirror/cvdmirror.toml";
const DATA_ROOT: &str = "/var/lib/cvdmirror/mirror";
const ACCESS_LOG: &str = "/var/log/cvdmirror/access.log";
/// What the package owns besides its files, and must be gone after purge.
const STATE_PATHS: &[&str] = &[
    "/etc/cvdmirror",
    "/var/lib/cvdmirror",
    "/var/log/cvdmirror",
    // deb-systemd-helper: the enablement link, the mask `dpkg -r` leaves, their state.
    "/etc/systemd/system/multi-user.target.wants/cvdmirror.service",
    "/etc/systemd/system/cvdmirror.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/cvdmirror.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/cvdmirror.service",
    "/var/lib/systemd/deb-systemd-helper-masked/cvdmirror.service",
];
/// How long the server may take to start, log or stop.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn debian_package_builds_installs_serves_upgrades_and_purges() {
    preflight();

    let started = Instant::now();
    let deb = build();
    let built = started.elapsed();
    eprintln!("package: built {} in {:.0?}", deb.display(), built);

    lintian(&deb);
    let contents = package_files(&deb);

    let guard = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb), "dpkg -i");
    check_installed(&contents);

    // Serve a file from the packaged data root with the packaged config,
    // as the packaged user; then rotate the log and check it was reopened.
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(Path::new(DATA_ROOT).join("package-test.bin"), &body).unwrap();
    let server = Server::start();
    assert_eq!(get(server.addr, "/package-test.bin?first"), body);
    wait_for_line(ACCESS_LOG, "GET /package-test.bin?first ");
    // The daemon creates it; the directory's setgid bit gives it group adm.
    assert_eq!(owner(ACCESS_LOG), "cvdmirror:adm");
    rotate_logs();
    // The SIGHUP from postrotate reopens the log at the writer's next batch,
    // so a request or two may still land in the rotated file.
    let mut n = 0;
    wait_until_every(DEADLINE, Duration::from_millis(200), || {
        assert_eq!(
            get(server.addr, &format!("/package-test.bin?after-rotate-{n}")),
            body
        );
        n += 1;
        check(read(ACCESS_LOG).contains("?after-rotate-"), || {
            format!(
                "the access log was not reopened after logrotate:\n{}",
                read(&format!("{ACCESS_LOG}.1"))
            )
        })
    });
    let rotated = read(&format!("{ACCESS_LOG}.1"));
    assert!(
        rotated.contains("?first "),
        "rotated log lacks the first request:\n{rotated}"
    );
    assert_eq!(
        owner(ACCESS_LOG),
        "cvdmirror:adm",
        "logrotate's `create` owner"
    );
    server.stop();

    // Upgrade (the same version again runs the same maintainer-script
    // paths): an edited conffile, the data and the logs survive.
    let edited = read(CONFIG).replace("max_connections = 10000", "max_connections = 5000")
        + "# edited by tests/package.rs\n";
    std::fs::write(CONFIG, &edited).unwrap();
    let uid = run(Command::new("id").args(["-u", "cvdmirror"]), "id -u");
    run(
        Command::new("dpkg").arg("-i").arg(&deb),
        "dpkg -i (upgrade)",
    );
    assert_eq!(
        read(CONFIG),
        edited,
        "the upgrade replaced the edited conffile"
    );
    assert_eq!(
        std::fs::read(Path::new(DATA_ROOT).join("package-test.bin")).unwrap(),
        body
    );
    assert!(
        Path::new(&format!("{ACCESS_LOG}.1")).exists(),
        "the upgrade removed old logs"
    );
    assert_eq!(
        run(Command::new("id").args(["-u", "cvdmirror"]), "id -u"),
        uid
    );
    let server = Server::start();
    assert_eq!(get(server.addr, "/package-test.bin?upgraded"), body);
    server.stop();

    // Remove: the program goes, config, data, logs and user stay.
    run(Command::new("dpkg").args(["-r", PACKAGE]), "dpkg -r");
    assert!(
        !Path::new("/usr/bin/cvdmirror").exists(),
        "dpkg -r left the binary"
    );
    assert_eq!(read(CONFIG), edited, "dpkg -r changed the conffile");
    assert!(
        Path::new(DATA_ROOT).join("package-test.bin").exists(),
        "dpkg -r removed the data"
    );
    assert!(Path::new(ACCESS_LOG).exists(), "dpkg -r removed the logs");
    assert!(user_exists("passwd"), "dpkg -r removed the user");

    // Purge: nothing of it is left.
    run(
        Command::new("dpkg").args(["--purge", PACKAGE]),
        "dpkg --purge",
    );
    check_purged(&contents);
    drop(guard);

    eprintln!(
        "package: build {:.0?}, lintian + install + serve + upgrade + purge {:.0?}",
        built,
        started.elapsed() - built
    );
}

/// Fails unless every tool is there and the machine has no trace of the
/// package (installed or purged-but-not-quite), so the guard's purge can
/// only ever remove what this test installed.
fn preflight() {
    let uid = run(Command::new("id").arg("-u"), "id -u");
    assert_eq!(
        uid, "0",
        "tests/package.rs installs a package: run it as root (scripts/test)"
    );
    for tool in [
        "dpkg",
        "dpkg-deb",
        "dpkg-shlibdeps",
        "lintian",
        "logrotate",
        "man",
        "setpriv",
        "getent",
        "ldd",
        "systemd-analyze",
    ] {
        assert!(
            on_path(tool),
            "{tool} not found: run scripts/install-test-deps (tests/package.rs needs it)"
        );
    }
    let cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output();
    assert!(
        cargo_deb.as_ref().is_ok_and(|o| o.status.success()),
        "cargo-deb not found: run scripts/install-test-deps ({cargo_deb:?})"
    );
    assert!(
        !dpkg_knows(),
        "the cvdmirror package is already on this machine; tests/package.rs would remove it. \
         `dpkg --purge cvdmirror` first"
    );
    assert!(
        !user_exists("passwd") && !user_exists("group"),
        "a cvdmirror user or group exists already"
    );
    for path in STATE_PATHS {
        assert!(
            !Path::new(path).exists(),
            "{path} exists already; tests/package.rs would remove it"
        );
    }
}

fn build() -> PathBuf {
    let mut command = Command::new(repo().join("scripts/build-deb"));
    command
        .args(["--profile", "package-test"])
        .current_dir(repo());
    // What `cargo test` sets for test binaries (package metadata, the test's
    // library path, ...) would make the inner build's fingerprints differ
    // from a build run by hand, so each would rebuild after the other.
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_EXE_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name_str.starts_with(prefix))
            || [
                "CARGO",
                "LD_LIBRARY_PATH",
                "OUT_DIR",
                "RUST_RECURSION_COUNT",
            ]
            .contains(&&*name_str)
        {
            command.env_remove(&name);
        }
    }
    let out = run(&mut command, "scripts/build-deb");
    let deb = PathBuf::from(out.lines().last().unwrap_or_default());
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "build-deb printed {out:?}"
    );
    deb
}

fn lintian(deb: &Path) {
    // `lintian` exits non-zero on errors; the tags are the report either way.
    let out = Command::new("lintian")
        .args(["--info", "--display-info"])
        .arg(deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{report}{}", String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        errors.is_empty(),
        "lintian reports errors:\n{}",
        errors.join("\n")
    );
    assert!(out.status.success(), "lintian failed: {out:?}");
}

/// The files (not directories) the package contains, as absolute paths.
fn package_files(deb: &Path) -> Vec<PathBuf> {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb), "dpkg-deb -c");
    let files: Vec<PathBuf> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect();
    assert!(
        files.len() >= 10,
        "suspiciously few files in the package:\n{listing}"
    );
    files
}

fn check_installed(files: &[PathBuf]) {
    for file in files {
        assert!(
            file.exists(),
            "{} is in the package but not installed",
            file.display()
        );
    }
    for path in [
        "/usr/bin/cvdmirror",
        "/usr/lib/systemd/system/cvdmirror.service",
        CONFIG,
        "/etc/logrotate.d/cvdmirror",
        "/usr/share/bash-completion/completions/cvdmirror",
        "/usr/share/zsh/vendor-completions/_cvdmirror",
        "/usr/share/fish/vendor_completions.d/cvdmirror.fish",
        "/usr/share/doc/cvdmirror/copyright",
        "/usr/share/doc/cvdmirror/changelog.Debian.gz",
        // deb-systemd-helper enables the unit even where systemd is not running.
        "/etc/systemd/system/multi-user.target.wants/cvdmirror.service",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let conffiles = run(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]),
        "dpkg-query Conffiles",
    );
    assert!(
        conffiles.contains(CONFIG),
        "{CONFIG} is no conffile: {conffiles}"
    );
    assert!(
        conffiles.contains("/etc/logrotate.d/cvdmirror"),
        "logrotate file is no conffile: {conffiles}"
    );
    for page in ["cvdmirror", "cvdmirror-serve", "cvdmirror-sync"] {
        let path = run(Command::new("man").args(["-w", page]), "man -w");
        assert_eq!(path, format!("/usr/share/man/man1/{page}.1.gz"));
    }
    // The system's OpenSSL, not a vendored copy.
    let libs = run(Command::new("ldd").arg("/usr/bin/cvdmirror"), "ldd");
    assert!(
        libs.contains("libssl.so.3"),
        "not linked to Debian's libssl3:\n{libs}"
    );
    let depends = run(
        Command::new("dpkg-query").args(["-W", "-f=${Depends}", PACKAGE]),
        "dpkg-query Depends",
    );
    assert!(
        depends.contains("libssl3") && depends.contains("adduser"),
        "Depends: {depends}"
    );

    let user = run(
        Command::new("getent").args(["passwd", "cvdmirror"]),
        "getent passwd",
    );
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(
        fields.get(5..7),
        Some(&["/var/lib/cvdmirror", "/usr/sbin/nologin"][..]),
        "{user}"
    );
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {user}");
    assert_eq!(owner(DATA_ROOT), "cvdmirror:cvdmirror");
    assert_eq!(owner("/var/log/cvdmirror"), "cvdmirror:adm");
    assert_eq!(mode("/var/log/cvdmirror"), "2750");
    assert_eq!(owner(CONFIG), "root:root");

    // The unit parses (no systemd needs to be running for this).
    run(
        Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/cvdmirror.service"]),
        "systemd-analyze verify",
    );
    let unit = read("/usr/lib/systemd/system/cvdmirror.service");
    for line in [
        "User=cvdmirror",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cvdmirror /var/log/cvdmirror",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/bin/cvdmirror serve --config /etc/cvdmirror/cvdmirror.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line}:\n{unit}"
        );
    }
}

fn check_purged(files: &[PathBuf]) {
    assert!(!dpkg_knows(), "dpkg still knows cvdmirror after purge");
    for file in files {
        assert!(!file.exists(), "{} left after purge", file.display());
    }
    for path in STATE_PATHS {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    assert!(!user_exists("passwd"), "user cvdmirror left after purge");
    assert!(!user_exists("group"), "group cvdmirror left after purge");
}

/// Runs the packaged logrotate config now (its own state file, so the
/// machine's rotation schedule is untouched).
fn rotate_logs() {
    let state = tempfile::NamedTempFile::new().unwrap();
    run(
        Command::new("logrotate")
            .args(["--force", "--verbose", "--state"])
            .arg(state.path())
            .arg("/etc/logrotate.d/cvdmirror"),
        "logrotate",
    );
}

/// `cvdmirror serve` installed by the package, with the packaged config,
/// as the packaged user, on a free loopback port (the config's 8080 might
/// be taken); killed on drop.
struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=cvdmirror",
                "--regid=cvdmirror",
                "--init-groups",
                "--",
            ])
            .args([
                "/usr/bin/cvdmirror",
                "serve",
                "--config",
                CONFIG,
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir("/var/lib/cvdmirror");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CVDMIRROR_") {
                command.env_remove(name);
            }
        }
        let process = Process::spawn(&mut command);
        let stdout = process.wait_stdout(DEADLINE, "ready", |lines| {
            lines.iter().any(|l| l == "ready")
        });
        let addr = stdout
            .iter()
            .find_map(|l| l.strip_prefix("listening on http://"))
            .map(|a| a.trim_end_matches('/').parse().unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "no listening address printed: {stdout:?}\n{}",
                    process.stderr()
                )
            });
        Server { process, addr }
    }

    /// SIGTERM, and a clean exit within the deadline.
    fn stop(self) {
        self.process.signal("TERM");
        let status = self
            .process
            .exit_within(DEADLINE)
            .expect("cvdmirror did not stop on SIGTERM");
        assert!(
            status.success(),
            "cvdmirror exited with {status}:\n{}",
            self.process.stderr()
        );
    }
}

/// Purges the package when dropped, also when the test failed half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_knows() {
            match Command::new("dpkg").args(["--purge", PACKAGE]).output() {
                Ok(o) if o.status.success() => {}
                other => eprintln!("package: cleanup `dpkg --purge cvdmirror` failed: {other:?}"),
            }
        }
    }
}

/// The body of a `200` answer to `GET path`.
fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let response = support::http::request(addr, "GET", path, &[]);
    assert_eq!(response.status, 200, "GET {path}: {:?}", response.headers);
    response.body
}

/// Waits until the file has a line containing `needle` (the access log is
/// written in batches).
fn wait_for_line(path: &str, needle: &str) {
    wait_until(DEADLINE, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        check(text.lines().any(|l| l.contains(needle)), || {
            format!("{path} never showed {needle:?}:\n{text}")
        })
    });
}

/// Runs a command that must succeed; its trimmed stdout.
fn run(command: &mut Command, what: &str) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        status.success(),
        "{what} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout.trim().to_owned()
}

/// Whether dpkg has the package in any state but "not installed" (installed,
/// half-installed, removed with its config files left, ...).
fn dpkg_knows() -> bool {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", PACKAGE])
        .output()
    else {
        return false;
    };
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != "not-installed"
}

fn user_exists(database: &str) -> bool {
    Command::new("getent")
        .args([database, "cvdmirror"])
        .output()
        .unwrap()
        .status
        .success()
}

fn owner(path: &str) -> String {
    run(Command::new("stat").args(["-c", "%U:%G", path]), "stat")
}

fn mode(path: &str) -> String {
    run(Command::new("stat").args(["-c", "%a", path]), "stat")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
