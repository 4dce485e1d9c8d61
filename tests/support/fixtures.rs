//! Where the genuine files the tests use live (never copied into the
//! repository): ClamAV's signed `bytecode` CVDs in `$CVDMIRROR_FIXTURES`
//! (default `../shared/fixtures/clamav`), and ClamAV's own `.sign` test
//! files and test PKI in `$CVDMIRROR_SIGN_FIXTURES` (default: the sibling
//! `clamav-sign` of the former). A missing fixture fails the test.

use std::path::{Path, PathBuf};

/// The genuine signed ClamAV fixtures.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CVDMIRROR_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/clamav"))
}

/// A genuine fixture's path, e.g. `fixture_path("bytecode-268.cvd")`.
pub fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// A genuine fixture's bytes, e.g. `fixture("bytecode-268.cvd")`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// ClamAV's `.sign` test files and test PKI.
pub fn sign_fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CVDMIRROR_SIGN_FIXTURES") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("CVDMIRROR_FIXTURES") {
        PathBuf::from(dir).join("../clamav-sign")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/clamav-sign")
    }
}

/// The path of a `.sign` fixture, e.g. `sign_fixture_path("test-pki/root.crt")`.
pub fn sign_fixture_path(relative: &str) -> PathBuf {
    let path = sign_fixtures_dir().join(relative);
    assert!(
        path.is_file(),
        "missing ClamAV .sign fixture {}: the fixtures live in ../shared/fixtures/clamav-sign \
         (set CVDMIRROR_SIGN_FIXTURES, or CVDMIRROR_FIXTURES to its sibling `clamav`)",
        path.display()
    );
    path
}

/// A `.sign` fixture's bytes.
pub fn sign_fixture(relative: &str) -> Vec<u8> {
    std::fs::read(sign_fixture_path(relative)).unwrap()
}
