//! Loopback clients for the traffic-control tests: sockets bound to distinct
//! source addresses (127.0.0.N is a distinct client to the server), one-shot
//! requests, and streaming downloads that record when every byte arrived.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::support::TestServer;
use crate::support::http::{header, parse_head, request_bytes};
use crate::support::wait::{DEADLINE as IO_TIMEOUT, check, wait_until};

/// `127.0.0.n`: the n-th loopback client.
pub fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A TCP connection from `src` (port chosen by the kernel) to `to`.
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket
        .bind(&SocketAddr::new(src.into(), 0).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    socket
        .connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {src} -> {to}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Writes `METHOD path` with `Connection: close` and `headers`.
pub fn send_request(stream: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)]) {
    stream
        .write_all(&request_bytes(method, path, headers, true))
        .unwrap();
}

/// A response's status line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// `Content-Length`, if given.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// Reads up to the end of the response head; returns it and the body bytes
/// that arrived with it.
pub fn read_head(stream: &mut TcpStream) -> (Head, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status, headers) = parse_head(std::str::from_utf8(&buf[..end]).unwrap());
            return (Head { status, headers }, buf[end + 4..].to_vec());
        }
        let n = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("reading a response head: {e}"));
        assert!(n > 0, "connection closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A whole response to one request from `src`, with how long it took from
/// connecting to its last byte.
#[derive(Debug)]
pub struct Exchange {
    /// Status and headers.
    pub head: Head,
    /// The body (to `Content-Length`, or to EOF).
    pub body: Vec<u8>,
    /// From before `connect` to the last body byte.
    pub elapsed: Duration,
}

impl Exchange {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// One request on a fresh connection from `src`, read completely.
pub fn fetch(
    src: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Exchange {
    let start = Instant::now();
    let mut stream = connect_from(src, to);
    send_request(&mut stream, method, path, headers);
    let (head, mut body) = read_head(&mut stream);
    let want = if method == "HEAD" || head.status == 304 {
        Some(0)
    } else {
        head.content_length()
    };
    let mut chunk = vec![0u8; 64 * 1024];
    while want.is_none_or(|w| (body.len() as u64) < w) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading {path}: {e}"),
        }
    }
    Exchange {
        head,
        body,
        elapsed: start.elapsed(),
    }
}

/// What a download saw: its head and when each read returned how many bytes.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Status and headers.
    pub head: Head,
    /// `(when, bytes)` for every read that returned data (the bytes that
    /// came with the head are recorded at the time the head was read).
    pub reads: Vec<(Instant, usize)>,
    /// Body bytes received in all.
    pub total: u64,
    /// Whether the whole body (`Content-Length`) arrived.
    pub complete: bool,
    /// An I/O error that ended it early (a dropped transfer), if any.
    pub error: Option<String>,
}

impl Trace {
    /// Body bytes received in `[from, to)`.
    pub fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        self.reads
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| *n as u64)
            .sum()
    }
}

/// How a download reads its body.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the server sends.
    Greedy,
    /// Not at all until released with [`Download::release`], then greedily.
    Hold,
    /// `bytes` per read, then a pause of `pause` (a slow client).
    Slow { bytes: usize, pause: Duration },
}

/// A download running on its own thread.
pub struct Download {
    thread: Option<JoinHandle<Trace>>,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    head: std::sync::mpsc::Receiver<Head>,
    /// The status and headers once they arrived (see [`Download::head`]).
    seen_head: Option<Head>,
}

impl Download {
    /// Starts `GET path` from `src` to `to`, reading at `pace`.
    pub fn start(src: Ipv4Addr, to: SocketAddr, path: &str, pace: Pace) -> Download {
        Self::start_with(src, to, path, &[], pace)
    }

    /// Like [`start`](Self::start), with extra request headers.
    pub fn start_with(
        src: Ipv4Addr,
        to: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        pace: Pace,
    ) -> Download {
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (head_tx, head_rx) = std::sync::mpsc::channel();
        let mut stream = connect_from(src, to);
        send_request(&mut stream, "GET", path, headers);
        let thread = {
            let (stop, release) = (stop.clone(), release.clone());
            std::thread::spawn(move || {
                // Short read timeouts, so `stop` is noticed promptly.
                let (head, first) = read_head(&mut stream);
                let _ = head_tx.send(head.clone());
                let len = head.content_length();
                let mut trace = Trace {
                    head,
                    reads: Vec::new(),
                    total: first.len() as u64,
                    complete: false,
                    error: None,
                };
                if !first.is_empty() {
                    trace.reads.push((Instant::now(), first.len()));
                }
                stream
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    if len.is_some_and(|l| trace.total >= l) {
                        trace.complete = true;
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let want = match pace {
                        Pace::Hold if !release.load(Ordering::Relaxed) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Pace::Slow { bytes, .. } => bytes.min(buf.len()),
                        _ => buf.len(),
                    };
                    match stream.read(&mut buf[..want]) {
                        Ok(0) => break,
                        Ok(n) => {
                            trace.reads.push((Instant::now(), n));
                            trace.total += n as u64;
                            if let Pace::Slow { pause, .. } = pace {
                                std::thread::sleep(pause);
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => {
                            trace.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                trace
            })
        };
        Download {
            thread: Some(thread),
            stop,
            release,
            head: head_rx,
            seen_head: None,
        }
    }

    /// The response head, waiting for it.
    pub fn head(&mut self) -> &Head {
        if self.seen_head.is_none() {
            let head = self
                .head
                .recv_timeout(IO_TIMEOUT)
                .expect("no response head in time");
            self.seen_head = Some(head);
        }
        self.seen_head.as_ref().unwrap()
    }

    /// Lets a [`Pace::Hold`] download start reading.
    pub fn release(&self) {
        self.release.store(true, Ordering::Relaxed);
    }

    /// Whether the reader has ended (complete, closed or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops reading (closing the connection) and returns the trace.
    pub fn stop(mut self) -> Trace {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Waits (bounded) for the body to end on its own and returns the trace.
    pub fn finish(mut self, limit: Duration) -> Trace {
        wait_until(limit, || {
            check(self.is_finished(), || {
                format!("download did not finish in {limit:?}")
            })
        });
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts greedy downloads of `path` from each client, checks each got 200.
pub fn downloads(server: &TestServer, clients: &[u8], path: &str) -> Vec<Download> {
    let mut all: Vec<Download> = clients
        .iter()
        .map(|&n| Download::start(client(n), server.addr, path, Pace::Greedy))
        .collect();
    for d in &mut all {
        let head = d.head().clone();
        assert_eq!(head.status, 200, "{head:?}");
    }
    all
}

/// Stops every download and returns their traces.
pub fn stop_all(downloads: Vec<Download>) -> Vec<Trace> {
    downloads.into_iter().map(Download::stop).collect()
}

/// The status of `GET path` from `src`, without reading the body (a
/// download that is admitted is closed at once).
pub fn fetch_head(server: &TestServer, src: Ipv4Addr, path: &str) -> u16 {
    let mut d = Download::start(src, server.addr, path, Pace::Hold);
    let status = d.head().status;
    drop(d);
    status
}
