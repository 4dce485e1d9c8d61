//! Fuzzes cdiff framing, script extraction and signature verification.
#![no_main]

use std::sync::LazyLock;

use cvdmirror::cvd::{self, TrustedKeys, testkeys};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TrustedKeys> = LazyLock::new(testkeys::trusted);

fuzz_target!(|data: &[u8]| {
    let _ = cvd::parse_cdiff(data);
    let _ = cvd::cdiff_script(data);
    let _ = cvd::verify_cdiff(data, None, &KEYS);
});
