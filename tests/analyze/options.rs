//! The report's window (`--since`, `--until`), hostile input skipped and
//! counted (never a panic), and an exit status that is an error only when
//! nothing could be read.

use cvdmirror::analyze::{self, Analyzer, Options};

use super::generator::{self, Dialect, RESYNC};

use super::dialects::{args, write, write_log};

#[test]
fn since_and_until_cut_the_window() {
    let inc = generator::incident(5, 300);
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "access.log", &inc, Dialect::Cvdmirror, false);
    let mut a = args(&[&log], dir.path());
    a.since = Some(RESYNC + 600);
    let r = analyze::analyze(&a).unwrap();
    assert!(r.episodes.is_empty());
    assert_eq!(r.fallback.chains, 0);
    assert!(r.first.unwrap() >= RESYNC + 600);
    a.until = Some(RESYNC + 300);
    assert!(analyze::analyze(&a).is_err(), "--since after --until");
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let inc = generator::incident(6, 50);
    let good = generator::log(&inc, Dialect::Cvdmirror, |_| true);
    let lines: Vec<&str> = good.lines().collect();
    let mut text = Vec::new();
    let mut bad = 0;
    let mut rng = generator::Rng(99);
    for (i, l) in lines.iter().enumerate() {
        text.extend_from_slice(l.as_bytes());
        text.push(b'\n');
        if i % 50 == 7 {
            bad += 1;
            match i % 4 {
                0 => text.extend_from_slice(b"garbage in, garbage out"),
                1 => text.extend_from_slice(&l.as_bytes()[..l.len() / 2]),
                2 => (0..300).for_each(|_| text.push(rng.next_u64() as u8 | 1)),
                _ => text.extend(std::iter::repeat_n(b'A', 3 << 20)),
            }
            // Binary may hold its own newlines: count what the reader sees.
            text.push(b'\n');
        }
    }
    let newlines_in_binary = text.iter().filter(|&&b| b == b'\n').count() - lines.len() - bad;
    let mut analyzer = Analyzer::new(Options::default());
    analyzer.feed("mixed", std::io::Cursor::new(text)).unwrap();
    let r = analyzer.finish();
    assert_eq!(r.parsed as usize, lines.len());
    assert_eq!(r.malformed.count as usize, bad + newlines_in_binary);
    assert!(r.malformed.examples.len() >= 5);
    assert_eq!(
        r.malformed.examples[0].line, 9,
        "line numbers are 1-based and count skipped lines"
    );
    assert!(
        r.malformed
            .by_reason
            .iter()
            .any(|(why, _)| why.describe() == "line too long")
    );
    let html = analyze::report::html::render(&r);
    assert!(html.contains("Skipped lines"));
}

#[test]
fn exit_is_an_error_only_when_nothing_could_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.log", "not a log\n\x00\x01\x02\n", false);
    let err = analyze::analyze(&args(&[&junk], dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no line of") && err.contains("junk.log:1"),
        "{err}"
    );
    let missing = dir.path().join("missing.log");
    let err = format!(
        "{:#}",
        analyze::analyze(&args(&[&missing], dir.path())).unwrap_err()
    );
    assert!(
        err.contains("cannot read") && err.contains("missing.log"),
        "{err}"
    );
    let empty = write(dir.path(), "empty.log", "", false);
    assert!(analyze::analyze(&args(&[&empty], dir.path())).is_err());
    // A truncated gzip still yields what was readable.
    let inc = generator::incident(7, 40);
    let gz = write_log(dir.path(), "cut.gz", &inc, Dialect::Cvdmirror, true);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let r = analyze::analyze(&args(&[&gz], dir.path())).unwrap();
    assert!(r.parsed > 0 && r.inputs[0].error.is_some());
}
