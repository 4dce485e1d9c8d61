//! Fuzzes whole-file CVD and CLD verification (header, gzip, tar, `.info`,
//! both signature schemes) on bytes as they might arrive from upstream.
#![no_main]

use std::sync::LazyLock;

use cvdmirror_formats::cvd::{self, Expected, TrustedKeys, testkeys};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TrustedKeys> = LazyLock::new(testkeys::trusted);

fuzz_target!(|data: &[u8]| {
    let _ = cvd::verify_bytes(data, &Expected::cvd("daily"), &KEYS);
    let _ = cvd::verify_bytes(data, &Expected::cld("daily").version(1), &KEYS);
});
