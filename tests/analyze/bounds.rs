//! A stream of distinct clients, files and agents far larger than the
//! tables stays inside their bounds: at a debug-friendly size and at the
//! benchmark log's two million lines.

use std::io::Read;

use cvdmirror::analyze::{Analyzer, Limits, Options};

use super::generator::{self, Dialect};

/// Writes random but well-formed lines on the fly: a stream no file holds.
struct Flood {
    rng: generator::Rng,
    left: u64,
    t: i64,
    pending: Vec<u8>,
    at: usize,
}

impl Read for Flood {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            if self.left == 0 {
                return Ok(0);
            }
            self.pending.clear();
            self.at = 0;
            for _ in 0..self.left.min(1000) {
                self.left -= 1;
                self.t += (self.rng.next_u64() % 3) as i64;
                let r = self.rng.next_u64();
                let ip = r as u32;
                let (path, status, bytes) = match r >> 61 {
                    0 | 1 => (format!("/daily-{}.cdiff", r >> 40 & 0xffff), 404, 0),
                    2 => ("/daily.cvd".to_string(), 200, r >> 20 & 0x3ff_ffff),
                    3 => (format!("/file-{}", r >> 32 & 0xfffff), 200, r & 0xffff),
                    4 => (format!("/daily-{}.cvd.sign", r >> 40 & 0xffff), 404, 0),
                    _ => ("/daily.cvd".to_string(), 304, 0),
                };
                let ua = format!(
                    "ClamAV/{}.{} (OS: x, UUID: {:x})",
                    r >> 50 & 0xff,
                    r >> 44 & 0x3f,
                    r >> 8
                );
                let line = generator::line(
                    &generator::Request {
                        t: self.t,
                        host: format!(
                            "{}.{}.{}.{}",
                            ip >> 24,
                            ip >> 16 & 255,
                            ip >> 8 & 255,
                            ip & 255
                        ),
                        path,
                        status,
                        bytes,
                        ua,
                        dur_ms: r & 0x3ffff,
                    },
                    Dialect::Cvdmirror,
                );
                self.pending.extend_from_slice(line.as_bytes());
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The same bound check at a size a debug build runs in seconds.
#[test]
fn a_flood_of_distinct_keys_stays_inside_the_bounds() {
    flood_stays_inside_the_bounds(4 * 60_000);
}

fn flood_stays_inside_the_bounds(lines: u64) {
    let limits = Limits {
        buckets: 2000,
        top_capacity: 200,
        pending_streaks: 20_000,
        fallback_clients: 5_000,
        sign_clients: 5_000,
        sequence_clients: 5_000,
        missing_clients: 5_000,
        shared_transfers: 5_000,
    };
    let mut analyzer = Analyzer::new(Options {
        limits,
        ..Options::default()
    });
    for part in 0..4 {
        let flood = Flood {
            rng: generator::Rng(part),
            left: lines / 4,
            t: generator::START + part as i64 * 100_000,
            pending: Vec::new(),
            at: 0,
        };
        analyzer.feed("flood", flood).unwrap();
        let s = analyzer.table_sizes();
        for (name, (len, cap)) in [
            ("buckets", s.buckets),
            ("clients", s.clients),
            ("agents", s.agents),
            ("versions", s.versions),
            ("files", s.files),
            ("pending", s.pending_streaks),
            ("fallback clients", s.fallback_clients),
            ("sized files", s.sized_files),
            ("sign downloads", s.sign_recent),
            ("sign clients", s.sign_clients),
            ("sequence clients", s.sequence_clients),
            ("missing files", s.missing_files),
            ("shared transfers", s.shared_transfers),
        ] {
            assert!(len <= cap, "{name}: {len} > {cap}");
        }
        assert!(s.clients.0 > 0 && s.pending_streaks.0 > 0);
        assert!(s.sign_recent.0 > 0 && s.sign_clients.0 > 0);
    }
    assert_eq!(analyzer.parsed(), lines);
    let r = analyzer.finish();
    assert_eq!(r.totals.requests, lines);
    assert!(
        r.bounds.evicted["clients"] > 0,
        "the flood did overflow the tables"
    );
    assert!(r.timeline.len() <= 2000);
    assert!(
        r.sign.at_least,
        "the flood overflowed the .sign client sets"
    );
}

/// The flood at the size of the benchmark's log (about half a minute in a
/// debug build, in parallel with the rest of the suite).
#[test]
fn two_million_lines_stay_inside_the_bounds() {
    flood_stays_inside_the_bounds(2_000_000);
}
