//! Fuzzes request-path decoding: whatever a client sends, the decoded path
//! is plain, relative, and never names a dot-file or a parent directory.
#![no_main]

use std::path::Component;

use cvdmirror_pipeline::path::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(path) = decode(text) {
        for component in path.components() {
            assert!(matches!(component, Component::Normal(_)), "{text:?} -> {path:?}");
            assert!(!component.as_os_str().as_encoded_bytes().starts_with(b"."));
        }
    }
});
