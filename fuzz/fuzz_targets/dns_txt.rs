//! Fuzzes the TXT version-record parser, which reads text from any DNS
//! server the mirror is pointed at: it must never panic, and whatever it
//! accepts must format back to text that parses to the same record.

#![no_main]

use cvdmirror_dns::VersionRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // TXT strings are bytes; the lookup decodes them lossily, so do the same.
    let text = String::from_utf8_lossy(data);
    if let Ok(record) = VersionRecord::parse(&text) {
        let again = VersionRecord::parse(&record.to_string());
        assert_eq!(again.as_ref(), Ok(&record), "round trip of {text:?}");
    }
});
