//! ClamAV's own tools, the reference the mirror is held to: Debian's
//! `freshclam` and `sigtool` (ClamAV 1.4, `scripts/install-test-deps`) and
//! ClamAV 1.5.3 built by `scripts/build-clamav15` in `$CVDMIRROR_CLAMAV15`
//! (default `/var/cache/cvdmirror-test/clamav-1.5.3`). A missing tool fails
//! the test that needs it; none is ever skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{Finished, run_bounded};

/// Longest a single freshclam or sigtool run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to get Debian's ClamAV tools.
pub const INSTALL_14: &str = "install it with scripts/install-test-deps (as root)";

/// Debian's freshclam: `$FRESHCLAM`, else `freshclam` on `PATH`.
pub fn freshclam_bin() -> PathBuf {
    std::env::var_os("FRESHCLAM").map_or_else(|| PathBuf::from("freshclam"), PathBuf::from)
}

/// `freshclam --version`, failing the test (never skipping it) when
/// freshclam is not installed.
pub fn freshclam_version() -> String {
    let out = run_bounded(
        Command::new(freshclam_bin()).arg("--version"),
        RUN_TIMEOUT,
        INSTALL_14,
    );
    assert!(out.ok(), "freshclam --version failed: {out}");
    out.stdout.trim().to_owned()
}

/// `sigtool --info=PATH` (Debian's sigtool).
pub fn sigtool_info(path: &Path) -> Finished {
    run_bounded(
        Command::new("sigtool").arg(format!("--info={}", path.display())),
        RUN_TIMEOUT,
        INSTALL_14,
    )
}

/// `sigtool --info=PATH`: asserts the file verifies and returns its version.
pub fn sigtool_verified_version(path: &Path) -> u32 {
    let out = sigtool_info(path);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok() && text.contains("Verification OK."),
        "sigtool rejects {}:\n{text}",
        path.display()
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in sigtool output:\n{text}"))
}

/// Where ClamAV 1.5.3 is installed.
pub fn clamav15_prefix() -> PathBuf {
    std::env::var_os("CVDMIRROR_CLAMAV15").map_or_else(
        || PathBuf::from("/var/cache/cvdmirror-test/clamav-1.5.3"),
        PathBuf::from,
    )
}

/// `bin/NAME` of the ClamAV 1.5.3 build; fails the test when it is missing.
pub fn clamav15_bin(name: &str) -> PathBuf {
    let path = clamav15_prefix().join("bin").join(name);
    assert!(
        path.is_file(),
        "ClamAV 1.5.3 {name} not found at {}: build it with scripts/build-clamav15 \
         (or point CVDMIRROR_CLAMAV15 at its install prefix)",
        path.display()
    );
    path
}

/// `sigtool --verify FILE --cvdcertsdir CERTS` of ClamAV 1.5.3: `FILE`
/// against the `.sign` it finds beside it, trusting the roots in `CERTS`.
pub fn sigtool15_verify(file: &Path, certs: &Path) -> Finished {
    let mut cmd = Command::new(clamav15_bin("sigtool"));
    cmd.arg("--verify")
        .arg(file)
        .arg("--cvdcertsdir")
        .arg(certs)
        .env_remove("CVD_CERTS_DIR");
    if let Some(dir) = file.parent() {
        cmd.current_dir(dir);
    }
    run_bounded(
        &mut cmd,
        RUN_TIMEOUT,
        "build it with scripts/build-clamav15",
    )
}
