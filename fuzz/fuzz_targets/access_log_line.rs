//! Fuzzes the access-log line parser and the analyzer behind it: logs hold
//! whatever clients chose to send (user agents, targets, binary junk), and
//! `cvdmirror analyze` must skip and count a bad line, never crash on one.
#![no_main]

use cvdmirror_analyze::{Analyzer, Options, parse::parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_line(data);
    let mut analyzer = Analyzer::new(Options::default());
    let input = analyzer.add_input("fuzz");
    for (no, line) in data.split(|&b| b == b'\n').enumerate() {
        analyzer.feed_line(input, no as u64 + 1, line);
    }
    let report = analyzer.finish();
    let _ = cvdmirror_analyze::report::text::render(&report);
});
