//! The access log, in the combined format Apache and nginx write, with the
//! request time appended, so every existing log tool (and `cvdmirror
//! analyze`) reads it:
//!
//! `client - - [27/Nov/2026:16:41:07 +0000] "GET /daily.cvd HTTP/1.1" 200 61234567 "-" "ClamAV/1.4.6 (...)" 96.021`
//!
//! The byte count is the body bytes actually handed to the connection, so an
//! aborted download shows how far it got. Lines are written by one dedicated
//! thread: request tasks only enqueue, never block on disk. The queue is
//! bounded; if the disk cannot keep up, lines are dropped and counted rather
//! than stalling the server. The writer drains and flushes every 20 ms
//! instead of being woken for each line (a wake-up per request cost more
//! than everything else a `304` does), and [`AccessLog::finish`] drains it
//! one last time at shutdown.

use cvdmirror_exchange::hooks;
use cvdmirror_formats::calendar;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;

use crate::calendar::civil_from_days;
use crate::hooks::{Completion, Hook};
use cvdmirror_exchange::Exchange;

/// Access log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file, reopened on `SIGHUP` (for logrotate).
    File(PathBuf),
    /// Not written.
    Off,
}

/// How often the writer drains the queue and flushes.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Bytes of lines that may wait for the writer before new ones are dropped
/// (about 64k lines).
const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// The access-log hook; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

/// What request tasks and the writer thread share.
#[derive(Default)]
struct Shared {
    /// Finished lines not yet written, in order.
    queue: Mutex<Vec<u8>>,
    reopen: AtomicBool,
    stop: AtomicBool,
    dropped: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

thread_local! {
    /// Each worker formats into its own reused buffer, then appends it to
    /// the queue in one copy: no allocation and a short lock per line.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

use cvdmirror_formats::mutex::lock;

impl AccessLog {
    /// Starts the writer for `target` (opening the file now, so a bad path
    /// stops startup instead of losing the log).
    pub fn start(target: &AccessLogTarget) -> io::Result<Self> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(Self { shared: None }),
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::File(path) => Sink::File(path.clone(), open(path)?),
        };
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(sink, &for_thread))?;
        *lock(&shared.thread) = Some(thread);
        Ok(Self {
            shared: Some(shared),
        })
    }

    /// Reopens the file (after logrotate moved it away). Lines finished
    /// before the call still go to the old file.
    pub fn reopen(&self) {
        if let Some(shared) = &self.shared {
            shared.reopen.store(true, Ordering::Release);
        }
    }

    /// Writes every queued line and stops the writer (at shutdown).
    pub fn finish(&self) {
        let Some(shared) = &self.shared else { return };
        shared.stop.store(true, Ordering::Release);
        let thread = lock(&shared.thread).take();
        if let Some(thread) = thread {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }

    /// Lines lost because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }
}

impl Hook for AccessLog {
    fn complete(&self, exchange: &Exchange, completion: &Completion) {
        let Some(shared) = &self.shared else { return };
        LINE.with_borrow_mut(|line| {
            line.clear();
            write_line(line, exchange, completion);
            let mut queue = lock(&shared.queue);
            if queue.len() + line.len() > QUEUE_BYTES {
                drop(queue);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                queue.extend_from_slice(line);
            }
        });
    }
}

enum Sink {
    Stdout,
    File(PathBuf, File),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(_, file) => file.write_all(bytes),
        }
    }
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn write_loop(mut sink: Sink, shared: &Arc<Shared>) {
    let mut batch = Vec::new();
    loop {
        // Drain on a short timer rather than being woken per line: a
        // wake-up per request costs more than formatting the line (two
        // context switches), and nginx writes without any.
        let stopping = shared.stop.load(Ordering::Acquire)
            // Every `AccessLog` is gone: nobody can add lines or stop us.
            || Arc::strong_count(shared) == 1;
        if !stopping {
            std::thread::park_timeout(DRAIN_EVERY);
        }
        std::mem::swap(&mut batch, &mut *lock(&shared.queue));
        if !batch.is_empty() {
            if let Err(e) = sink.write_all(&batch) {
                tracing::error!(error = %e, "cannot write access log");
            }
            batch.clear();
            // A burst's buffer is not kept for ever.
            batch.shrink_to(1024 * 1024);
        }
        if shared.reopen.swap(false, Ordering::AcqRel)
            && let Sink::File(path, file) = &mut sink
        {
            match open(path) {
                Ok(new) => *file = new,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen access log; keeping the old file")
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// One combined-format line, newline included.
pub fn format_line(exchange: &Exchange, completion: &Completion) -> String {
    let mut line = Vec::with_capacity(256);
    write_line(&mut line, exchange, completion);
    // Every byte written is printable ASCII or an escape.
    String::from_utf8_lossy(&line).into_owned()
}

/// Appends one combined-format line to `line`. Hand-formatted: this runs
/// for every request, and `format!` machinery was a visible share of a
/// `304`'s cost.
fn write_line(line: &mut Vec<u8>, exchange: &Exchange, completion: &Completion) {
    let mut n = itoa::Buffer::new();
    match exchange.client {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                line.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
    line.extend_from_slice(b" - - [");
    clf_time(line, exchange.received);
    line.extend_from_slice(b"] \"");
    escape_into(line, exchange.method.as_str().as_bytes());
    line.push(b' ');
    match exchange.target.path_and_query() {
        // Origin form, as nearly every client sends it.
        Some(pq) if exchange.target.scheme().is_none() => escape_into(line, pq.as_str().as_bytes()),
        _ => escape_into(line, exchange.target.to_string().as_bytes()),
    }
    line.extend_from_slice(match exchange.version {
        Version::HTTP_09 => b" HTTP/0.9\" ",
        Version::HTTP_10 => b" HTTP/1.0\" ",
        Version::HTTP_2 => b" HTTP/2.0\" ",
        Version::HTTP_3 => b" HTTP/3.0\" ",
        _ => b" HTTP/1.1\" ",
    });
    line.extend_from_slice(n.format(completion.status.as_u16()).as_bytes());
    line.push(b' ');
    line.extend_from_slice(n.format(completion.body_bytes).as_bytes());
    line.extend_from_slice(b" \"");
    quoted_header(line, exchange.referer.as_deref());
    line.extend_from_slice(b"\" \"");
    quoted_header(line, exchange.user_agent.as_deref());
    line.extend_from_slice(b"\" ");
    // Seconds with millisecond resolution, rounded, as nginx's $request_time.
    let millis = (completion.duration.as_nanos() + 500_000) / 1_000_000;
    line.extend_from_slice(n.format(millis / 1000).as_bytes());
    line.push(b'.');
    let frac = (millis % 1000) as u16;
    line.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    line.push(b'\n');
}

fn quoted_header(line: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => escape_into(line, v),
        None => line.push(b'-'),
    }
}

/// nginx's escaping: `"` and `\` are backslashed, bytes outside printable
/// ASCII become `\xHH`, so a line never breaks or forges a field.
fn escape_into(line: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = bytes;
    while let Some(at) = first_to_escape(rest) {
        line.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            b => line.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        rest = &rest[at + 1..];
    }
    line.extend_from_slice(rest);
}

/// Where the first byte that needs escaping is. Blocks of 16 bytes are
/// tested whole, without an early exit, which compiles to a few vector
/// compares per block: a `User-Agent` rarely has anything to escape, and
/// every request's line carries one.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 16;
    // Branch-free (`|`, and one compare for "outside 0x20..=0x7e").
    let needs = |b: u8| (b == b'"') | (b == b'\\') | (b.wrapping_sub(0x20) > 0x7e - 0x20);
    let mut start = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if block.iter().fold(false, |any, &b| any | needs(b)) {
            break;
        }
        start += BLOCK;
    }
    bytes[start..]
        .iter()
        .position(|&b| needs(b))
        .map(|at| start + at)
}

thread_local! {
    /// The last second formatted, and its text: a busy server formats the
    /// same second thousands of times.
    static CLF_SECOND: RefCell<(u64, [u8; 26])> = const { RefCell::new((u64::MAX, [0; 26])) };
}

/// `27/Nov/2026:16:41:07 +0000` (always UTC).
fn clf_time(line: &mut Vec<u8>, t: SystemTime) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CLF_SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *text = clf_text(secs);
            *cached = secs;
        }
        line.extend_from_slice(text);
    });
}

fn clf_text(secs: u64) -> [u8; 26] {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = *b"00/Jan/0000:00:00:00 +0000";
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    out[0..2].copy_from_slice(&two(u64::from(day)));
    out[3..6].copy_from_slice(MONTHS[(month.clamp(1, 12) - 1) as usize]);
    let year = year.clamp(0, 9999) as u64;
    out[7..9].copy_from_slice(&two(year / 100));
    out[9..11].copy_from_slice(&two(year % 100));
    out[12..14].copy_from_slice(&two(rem / 3600));
    out[15..17].copy_from_slice(&two(rem / 60 % 60));
    out[18..20].copy_from_slice(&two(rem % 60));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::time::Duration;

    fn exchange(ua: Option<&'static str>) -> Exchange {
        let mut exchange = Exchange::get("192.0.2.7:5555".parse().unwrap(), "/daily.cvd");
        exchange.user_agent = ua.map(|ua| Box::from(ua.as_bytes()));
        exchange.received = UNIX_EPOCH + Duration::from_secs(1_440_082_241);
        exchange
    }

    #[test]
    fn formats_a_combined_line_with_request_time() {
        let completion = Completion {
            status: StatusCode::PARTIAL_CONTENT,
            body_bytes: 512,
            finished: true,
            duration: Duration::from_millis(1234),
        };
        let line = format_line(&exchange(Some("ClamAV/1.4.6 (OS: linux)")), &completion);
        assert_eq!(
            line,
            "192.0.2.7 - - [20/Aug/2015:14:50:41 +0000] \"GET /daily.cvd HTTP/1.1\" 206 512 \"-\" \"ClamAV/1.4.6 (OS: linux)\" 1.234\n"
        );
    }

    #[test]
    fn hostile_header_values_cannot_forge_fields() {
        let mut s = Vec::new();
        escape_into(&mut s, b"a\"b\\c\nd\xff");
        assert_eq!(s, b"a\\\"b\\\\c\\x0Ad\\xFF");
    }

    proptest::proptest! {
        #[test]
        fn escaping_finds_every_byte_a_bytewise_scan_finds(
            // Mostly printable, as header values are, so the first byte to
            // escape falls in any block, or in none.
            bytes in proptest::collection::vec(
                proptest::prop_oneof![30 => 0x20u8..=0x7e, 1 => proptest::prelude::any::<u8>()],
                0..80,
            )
        ) {
            let naive = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b));
            proptest::prop_assert_eq!(first_to_escape(&bytes), naive);
        }
    }

    #[test]
    fn a_byte_to_escape_past_the_first_block_is_found() {
        let mut s = Vec::new();
        escape_into(&mut s, b"ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64)\"");
        assert_eq!(s, b"ClamAV/1.4.6 (OS: linux-gnu, ARCH: x86_64)\\\"");
    }

    #[test]
    fn civil_dates_are_right_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }
}
