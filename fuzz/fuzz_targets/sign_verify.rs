//! Fuzzes verification of ClamAV 1.5 `.sign` files (`#clamsign-1.0`) as
//! they might arrive from upstream: the line splitter, the header check, the
//! field parser, the PEM/DER decoding of the PKCS#7 and `PKCS7_verify`
//! itself, against the production root at a fixed time. Nothing may panic.
//!
//! Input: the first byte is the length of the signed file (taken from the
//! bytes that follow, at most all of them); the rest is the `.sign`. Each
//! input is verified as is and once more behind a `#clamsign-1.0` header,
//! so mutations reach the signature lines without first having to find the
//! header.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cvdmirror_formats::cvd::sign::{SIGN_HEADER, SignLine, SignRoots, SignVerifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<SignVerifier> =
    LazyLock::new(|| SignVerifier::new(SignRoots::official()));

/// 2026-06-01 00:00 UTC: a fixed verification time keeps runs reproducible.
const AT: Duration = Duration::from_secs(1_780_272_000);

fuzz_target!(|data: &[u8]| {
    let (signed, sign) = match data.split_first() {
        Some((&len, rest)) => rest.split_at(usize::from(len).min(rest.len())),
        None => (data, data),
    };
    let at: SystemTime = UNIX_EPOCH + AT;
    // Production-signed files cannot be forged by a fuzzer: every verdict
    // is a failure, and it must be one without a panic.
    assert!(VERIFIER.verify(signed, sign, at).is_err());
    let with_header = [SIGN_HEADER.as_bytes(), b"\n", sign].concat();
    assert!(VERIFIER.verify(signed, &with_header, at).is_err());
    if let Ok(text) = std::str::from_utf8(sign) {
        for line in text.lines() {
            let _ = SignLine::parse(line.trim());
        }
    }
});
