//! Fuzzes the 512-byte CVD/CLD header parser, which the server runs on every
//! file it publishes and the sync engine on every download.
#![no_main]

use cvdmirror_formats::cvd::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let _ = Header::parse_line(&String::from_utf8_lossy(data));
});
