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

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::calendar::civil_from_days;
use crate::config::AccessLogTarget;
use crate::hooks::{Completion, Hook};
use crate::pipeline::Exchange;

/// How often the writer drains the queue and flushes.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;

enum Message {
    Line(String),
    Reopen,
}

/// The access-log hook; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<Message>>,
    dropped: Arc<AtomicU64>,
    writer: Arc<Writer>,
}

/// The writer thread and how to stop it.
#[derive(Default)]
struct Writer {
    stop: std::sync::atomic::AtomicBool,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Starts the writer for `target` (opening the file now, so a bad path
    /// stops startup instead of losing the log).
    pub fn start(target: &AccessLogTarget) -> io::Result<Self> {
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = match target {
            AccessLogTarget::Off => {
                return Ok(Self {
                    sender: None,
                    dropped,
                    writer: Arc::default(),
                });
            }
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::File(path) => Sink::File(path.clone(), open(path)?),
        };
        let (sender, receiver) = sync_channel(QUEUE);
        let writer = Arc::new(Writer::default());
        let stop = Arc::clone(&writer);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(sink, receiver, &stop.stop))?;
        *writer
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
        Ok(Self {
            sender: Some(sender),
            dropped,
            writer,
        })
    }

    /// Reopens the file (after logrotate moved it away).
    pub fn reopen(&self) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(Message::Reopen);
        }
    }

    /// Writes every queued line and stops the writer (at shutdown).
    pub fn finish(&self) {
        self.writer.stop.store(true, Ordering::Relaxed);
        let thread = self
            .writer
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Lines lost because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Hook for AccessLog {
    fn complete(&self, exchange: &Exchange, completion: &Completion) {
        let Some(sender) = &self.sender else { return };
        let line = format_line(exchange, completion);
        match sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

enum Sink {
    Stdout,
    File(PathBuf, File),
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn write_loop(mut sink: Sink, receiver: Receiver<Message>, stop: &std::sync::atomic::AtomicBool) {
    let mut out: Box<dyn Write> = writer(&sink);
    loop {
        // Drain on a short timer rather than being woken per line: a
        // wake-up per request costs more than formatting the line (two
        // context switches), and nginx writes without any.
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            std::thread::sleep(DRAIN_EVERY);
        }
        loop {
            let message = match receiver.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            };
            match message {
                Message::Line(line) => {
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        tracing::error!(error = %e, "cannot write access log");
                    }
                }
                Message::Reopen => {
                    let _ = out.flush();
                    if let Sink::File(path, file) = &mut sink {
                        match open(path) {
                            Ok(new) => *file = new,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot reopen access log; keeping the old file")
                            }
                        }
                    }
                    out = writer(&sink);
                }
            }
        }
        let _ = out.flush();
        if stopping {
            return;
        }
    }
}

fn writer(sink: &Sink) -> Box<dyn Write> {
    match sink {
        Sink::Stdout => Box::new(BufWriter::with_capacity(64 * 1024, io::stdout())),
        Sink::File(_, file) => match file.try_clone() {
            Ok(file) => Box::new(BufWriter::with_capacity(64 * 1024, file)),
            Err(_) => Box::new(io::sink()),
        },
    }
}

/// One combined-format line, newline included.
pub fn format_line(exchange: &Exchange, completion: &Completion) -> String {
    let mut line = String::with_capacity(256);
    let _ = write!(line, "{} - - [", exchange.client);
    clf_time(&mut line, exchange.received);
    line.push_str("] \"");
    escape_into(&mut line, exchange.method.as_str().as_bytes());
    line.push(' ');
    escape_into(&mut line, exchange.target.to_string().as_bytes());
    let _ = write!(
        line,
        " {:?}\" {} {} \"",
        exchange.version,
        completion.status.as_u16(),
        completion.body_bytes
    );
    quoted_header(&mut line, exchange.referer.as_ref());
    line.push_str("\" \"");
    quoted_header(&mut line, exchange.user_agent.as_ref());
    let _ = writeln!(line, "\" {:.3}", completion.duration.as_secs_f64());
    line
}

fn quoted_header(line: &mut String, value: Option<&HeaderValue>) {
    match value {
        Some(v) => escape_into(line, v.as_bytes()),
        None => line.push('-'),
    }
}

/// nginx's escaping: `"` and `\` are backslashed, bytes outside printable
/// ASCII become `\xHH`, so a line never breaks or forges a field.
fn escape_into(line: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            0x20..=0x7e => line.push(b as char),
            _ => {
                let _ = write!(line, "\\x{b:02X}");
            }
        }
    }
}

/// `27/Nov/2026:16:41:07 +0000` (always UTC).
fn clf_time(line: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        line,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode, Version};
    use std::time::Duration;

    fn exchange(ua: Option<&'static str>) -> Exchange {
        Exchange {
            peer: "192.0.2.7:5555".parse().unwrap(),
            method: Method::GET,
            target: http::Uri::from_static("/daily.cvd"),
            version: Version::HTTP_11,
            site: Arc::from("default"),
            referer: None,
            user_agent: ua.map(HeaderValue::from_static),
            received: UNIX_EPOCH + Duration::from_secs(1_440_082_241),
            started: tokio::time::Instant::now(),
            file: None,
            client: "192.0.2.7".parse().unwrap(),
            extensions: http::Extensions::new(),
        }
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
        let mut s = String::new();
        escape_into(&mut s, b"a\"b\\c\nd\xff");
        assert_eq!(s, "a\\\"b\\\\c\\x0Ad\\xFF");
    }

    #[test]
    fn civil_dates_are_right_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }
}
