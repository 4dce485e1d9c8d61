//! Fuzzes cdiff framing, script extraction and signature verification.
//!
//! Each input is tried twice: as raw bytes (what a broken or hostile
//! upstream could send), and as the script inside a well-framed cdiff
//! (`ClamAV-Diff:<version>:<length>:` + gzip + `:` + a signature that does
//! not verify; the first input byte is the version), because random bytes
//! almost never make a valid gzip stream. Signing each input with the test
//! key would reach the accepted path too, but at a few executions per
//! second; the unit tests cover signed cdiffs.
#![no_main]

use std::io::Write;
use std::sync::LazyLock;

use cvdmirror_formats::cvd::{self, TrustedKeys, testkeys};
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TrustedKeys> = LazyLock::new(testkeys::trusted);

fn check(data: &[u8]) {
    let _ = cvd::parse_cdiff(data);
    let _ = cvd::cdiff_script(data);
    let _ = cvd::verify_cdiff(data, None, &KEYS);
}

/// `script` framed as a cdiff for `version`, with a signature of the right
/// shape that does not verify.
fn framed(version: u8, script: &[u8]) -> Option<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(script).ok()?;
    let mut out = format!("ClamAV-Diff:{version}:{}:", script.len()).into_bytes();
    out.extend_from_slice(&gz.finish().ok()?);
    out.push(b':');
    out.extend_from_slice(&[b'A'; 350]);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((&version, script)) = data.split_first()
        && let Some(cdiff) = framed(version, script)
    {
        check(&cdiff);
    }
});
