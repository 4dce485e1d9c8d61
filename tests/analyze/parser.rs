//! The line parser never panics, on any bytes or on mutations of real
//! combined and JSON lines (fed to the analyzer too), and reads every
//! well-formed line the generator writes back exactly.

use cvdmirror::analyze::{
    Analyzer, Options,
    parse::{RequestTime, parse_line},
};
use proptest::prelude::*;

use super::generator::{self, Dialect};

/// `line` with byte `at` set to `byte` and cut after `cut` bytes, through
/// the parser and the analyzer (neither may panic).
fn mutated(line: &[u8], cut: usize, byte: u8, at: usize) {
    let mut line = line.to_vec();
    if at < line.len() {
        line[at] = byte;
    }
    line.truncate(cut.min(line.len()));
    let _ = parse_line(&line);
    let mut a = Analyzer::new(Options::default());
    let i = a.add_input("p");
    a.feed_line(i, 1, &line);
    let _ = a.finish();
}

proptest! {
    #[test]
    fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_line(&bytes);
    }

    #[test]
    fn mutated_lines_never_panic(cut in 0usize..200, byte in any::<u8>(), at in 0usize..200) {
        mutated(b"192.0.2.7 - - [27/Nov/2026:16:41:07 +0000] \"GET /daily.cvd HTTP/1.1\" 200 61234567 \"-\" \"ClamAV/1.4.6 (OS: linux-gnu)\" 96.021", cut, byte, at);
    }

    #[test]
    fn mutated_json_lines_never_panic(cut in 0usize..400, byte in any::<u8>(), at in 0usize..400) {
        mutated(br#"{"level":"info","ts":1795970467.52,"request":{"client_ip":"192.0.2.7","method":"GET","uri":"/daily.cvd","headers":{"User-Agent":["ClamAV/1.5.1"]}},"duration":2400.1,"size":61234567,"status":200,"resp_headers":{"Server":["Caddy"]}}"#, cut, byte, at);
    }

    #[test]
    fn well_formed_lines_round_trip(
        host in "[0-9a-f:.]{1,39}",
        status in 100u16..600,
        bytes in any::<u64>(),
        ua in "[ -!#-\\[\\]-~]{0,80}",
        millis in 0u64..10_000_000,
        secs in 0i64..4_000_000_000,
    ) {
        let r = generator::Request { t: secs, host: host.clone(), path: "/daily.cvd".into(), status, bytes, ua: ua.clone(), dur_ms: millis };
        let line = generator::line(&r, Dialect::Cvdmirror);
        let e = parse_line(line.as_bytes()).unwrap();
        prop_assert_eq!(e.host, host.as_bytes());
        prop_assert_eq!(e.time, secs);
        prop_assert_eq!((e.status, e.bytes), (status, bytes));
        prop_assert_eq!(e.user_agent, if ua.is_empty() || ua == "-" { &b""[..] } else { ua.as_bytes() });
        prop_assert_eq!(e.request_time, Some(RequestTime::Millis(millis)));
    }
}
