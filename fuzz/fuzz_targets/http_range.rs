//! Fuzzes `Range` header evaluation: a selected range always lies inside
//! the file, whatever the header says.
#![no_main]

use cvdmirror_pipeline::range::{Selection, evaluate};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u64)| {
    let (header, len) = input;
    let Ok(value) = HeaderValue::from_bytes(header) else { return };
    if let Selection::Partial { start, end } = evaluate(Some(&value), len) {
        assert!(start <= end && end < len);
    }
});
