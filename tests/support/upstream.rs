//! A fake ClamAV upstream in-process: a hyper 1 HTTP/1.1 server on
//! `127.0.0.1:0` serving a mutable map of file name → bytes, with per-file
//! fault injection and a log of every request.
//!
//! The sync engine's promises are about what happens when upstream
//! misbehaves, so the faults are the point: error statuses (`5xx`, `429`
//! with or without `Retry-After`, `403`), bodies that stop early (the
//! connection closes while `Content-Length` promises more), stall (headers
//! and part of the body, then silence on an open connection) or end in a TCP
//! reset. Content faults (flipped bytes, bad signatures, wrong versions,
//! missing files) need no machinery: the test puts those bytes in the map,
//! or leaves the name out.
//!
//! Ranges are honoured like a CDN does (`Range: bytes=N-` with `If-Range`
//! compared against the strong `ETag` or `Last-Modified`), so resumed
//! downloads can be asserted from the request log. The query string is
//! ignored when looking a file up (cvdupdate asks for `bytecode.cvd?version=N`).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bodies are sent in pieces this big, so a stall or a kill can land mid-file.
const CHUNK: usize = 64 * 1024;

/// What goes wrong with a request for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with an empty body (`500`, `503`, `403`, …).
    Status(u16),
    /// `429`, with this `Retry-After` value (seconds or an HTTP date) or none.
    RateLimited(Option<String>),
    /// Promise the whole file, send this many bytes, then close the connection.
    Truncate(usize),
    /// Send this many bytes, then nothing more on an open connection.
    Stall(usize),
    /// Send this many bytes, then reset the connection (TCP RST).
    Reset(usize),
}

/// One request as upstream saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Status answered.
    pub status: u16,
}

impl Logged {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header(&self.headers, name)
    }

    /// The file asked for: the path without `/` and query.
    pub fn file(&self) -> &str {
        file_name(&self.path)
    }
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.status)?;
        for name in ["range", "if-range", "user-agent"] {
            if let Some(v) = self.header(name) {
                write!(f, " [{name}: {v}]")?;
            }
        }
        Ok(())
    }
}

/// Formats a log for an assertion message.
pub fn show(log: &[Logged]) -> String {
    log.iter().map(|l| format!("  {l}\n")).collect()
}

fn file_name(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    path.trim_start_matches('/')
}

struct Armed {
    fault: Fault,
    /// Requests it still applies to; `None` is every request.
    remaining: Option<usize>,
}

struct Stored {
    bytes: Bytes,
    etag: String,
    last_modified: String,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, Stored>,
    faults: BTreeMap<String, Armed>,
    log: Vec<Logged>,
    chunk_delay: Duration,
}

/// The running fake upstream; stops when dropped. Its methods are plain
/// (not async) so tests can drive it between runs of the real binary.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves (must run inside a tokio runtime).
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&state), stop.clone()));
        Upstream { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `bytes` as `name` from now on (a new `ETag` and `Last-Modified`).
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let digest = Sha256::digest(bytes);
        let etag = format!(
            "\"{}\"",
            digest[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let mut state = self.lock();
        // Last-Modified must move forward with each version, as a CDN's does.
        let previous = state
            .files
            .get(name)
            .and_then(|s| httpdate::parse_http_date(&s.last_modified).ok());
        let mut when = SystemTime::now();
        if let Some(prev) = previous
            && when <= prev
        {
            when = prev + Duration::from_secs(1);
        }
        state.files.insert(
            name.to_owned(),
            Stored {
                bytes: Bytes::copy_from_slice(bytes),
                etag,
                last_modified: httpdate::fmt_http_date(when),
            },
        );
    }

    /// Stops serving `name` (`404` from now on).
    pub fn remove(&self, name: &str) {
        self.lock().files.remove(name);
    }

    /// The `ETag` served with `name`.
    pub fn etag(&self, name: &str) -> Option<String> {
        self.lock().files.get(name).map(|s| s.etag.clone())
    }

    /// Every request for `name` fails with `fault` until cleared.
    pub fn fault(&self, name: &str, fault: Fault) {
        self.lock().faults.insert(
            name.to_owned(),
            Armed {
                fault,
                remaining: None,
            },
        );
    }

    /// The next `times` requests for `name` fail with `fault`.
    pub fn fault_times(&self, name: &str, fault: Fault, times: usize) {
        self.lock().faults.insert(
            name.to_owned(),
            Armed {
                fault,
                remaining: Some(times),
            },
        );
    }

    /// Requests for `name` are served normally again.
    pub fn clear_fault(&self, name: &str) {
        self.lock().faults.remove(name);
    }

    /// Waits this long between body chunks (spreads a download over time).
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.lock().chunk_delay = delay;
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Requests after the first `mark` (a mark is `log().len()` taken earlier).
    pub fn log_since(&self, mark: usize) -> Vec<Logged> {
        self.lock().log[mark..].to_vec()
    }

    /// A mark for [`Upstream::log_since`].
    pub fn mark(&self) -> usize {
        self.lock().log.len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let reset = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Conn {
            inner: stream,
            reset: Arc::clone(&reset),
        });
        let state = Arc::clone(&state);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&state, &req, &reset);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The connection, which ends in a TCP reset instead of a FIN once a
/// [`Fault::Reset`] body asks for it.
struct Conn {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // Linger 0: close() sends RST and discards unsent data.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a body ends after its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Close,
    Stall,
    Reset,
}

/// A response body that can end in a fault.
pub struct FaultBody {
    chunks: VecDeque<Bytes>,
    end: End,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    paused: bool,
    reset: Arc<AtomicBool>,
}

impl FaultBody {
    fn new(data: Bytes, end: End, delay: Duration, reset: &Arc<AtomicBool>) -> Self {
        let mut chunks = VecDeque::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = rest.len().min(CHUNK);
            chunks.push_back(rest.split_to(n));
        }
        Self {
            chunks,
            end,
            delay,
            sleep: None,
            paused: false,
            reset: Arc::clone(reset),
        }
    }

    fn empty(reset: &Arc<AtomicBool>) -> Self {
        Self::new(Bytes::new(), End::Complete, Duration::ZERO, reset)
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        if let Some(chunk) = this.chunks.pop_front() {
            if !this.delay.is_zero() && !this.chunks.is_empty() {
                this.sleep = Some(Box::pin(tokio::time::sleep(this.delay)));
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.end != End::Complete && !this.paused {
            // Let hyper flush what was sent before the fault hits, or the
            // client would see the connection die before any header.
            this.paused = true;
            let mut sleep = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
            let _ = sleep.as_mut().poll(cx);
            this.sleep = Some(sleep);
            return Poll::Pending;
        }
        match this.end {
            End::Complete => Poll::Ready(None),
            End::Close => Poll::Ready(Some(Err(io::Error::other(
                "injected fault: body cut short",
            )))),
            // Never woken: the connection stays open, silent, until the client gives up.
            End::Stall => Poll::Pending,
            End::Reset => {
                this.reset.store(true, Ordering::SeqCst);
                Poll::Ready(Some(Err(io::ErrorKind::ConnectionReset.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.end == End::Complete && self.sleep.is_none()
    }
}

fn respond(
    state: &Arc<Mutex<State>>,
    req: &Request<Incoming>,
    reset: &Arc<AtomicBool>,
) -> Response<FaultBody> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let name = file_name(&path).to_owned();
    let fault = match state.faults.get_mut(&name) {
        Some(armed) => {
            let fault = armed.fault.clone();
            if let Some(n) = armed.remaining.as_mut() {
                *n -= 1;
                if *n == 0 {
                    state.faults.remove(&name);
                }
            }
            Some(fault)
        }
        None => None,
    };
    let delay = state.chunk_delay;
    let response = build(&state, &name, req, fault, delay, reset);
    state.log.push(Logged {
        method: req.method().to_string(),
        path,
        headers,
        status: response.status().as_u16(),
    });
    response
}

fn status_only(status: StatusCode, reset: &Arc<AtomicBool>) -> Response<FaultBody> {
    let mut response = Response::new(FaultBody::empty(reset));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

fn build(
    state: &State,
    name: &str,
    req: &Request<Incoming>,
    fault: Option<Fault>,
    delay: Duration,
    reset: &Arc<AtomicBool>,
) -> Response<FaultBody> {
    let (end, cut) = match fault {
        Some(Fault::Status(code)) => {
            return status_only(StatusCode::from_u16(code).unwrap(), reset);
        }
        Some(Fault::RateLimited(retry_after)) => {
            let mut response = status_only(StatusCode::TOO_MANY_REQUESTS, reset);
            if let Some(value) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
            }
            return response;
        }
        Some(Fault::Truncate(n)) => (End::Close, Some(n)),
        Some(Fault::Stall(n)) => (End::Stall, Some(n)),
        Some(Fault::Reset(n)) => (End::Reset, Some(n)),
        None => (End::Complete, None),
    };
    let Some(stored) = state.files.get(name) else {
        return status_only(StatusCode::NOT_FOUND, reset);
    };
    let len = stored.bytes.len();
    let mut status = StatusCode::OK;
    let mut range = None;
    if let Some(spec) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let validator_ok = req
            .headers()
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v == stored.etag || v == stored.last_modified);
        if validator_ok && let Some((start, end)) = parse_range(spec, len) {
            if start >= len {
                let mut response = status_only(StatusCode::RANGE_NOT_SATISFIABLE, reset);
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
                );
                return response;
            }
            status = StatusCode::PARTIAL_CONTENT;
            range = Some((start, end.min(len - 1)));
        }
    }
    let body = match range {
        Some((start, end)) => stored.bytes.slice(start..=end),
        None => stored.bytes.clone(),
    };
    let promised = body.len();
    let sent = match cut {
        Some(n) => body.slice(..n.min(promised)),
        None => body,
    };
    let mut response = Response::new(FaultBody::new(sent, end, delay, reset));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(promised));
    h.insert(header::ETAG, HeaderValue::from_str(&stored.etag).unwrap());
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&stored.last_modified).unwrap(),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some((start, end)) = range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).unwrap(),
        );
    }
    response
}

/// `bytes=N-` or `bytes=N-M` (one range; anything else is ignored, as RFC 9110 allows).
fn parse_range(spec: &str, len: usize) -> Option<(usize, usize)> {
    let (start, end) = spec.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.saturating_sub(1).max(start),
        e => e.parse().ok()?,
    };
    (end >= start).then_some((start, end))
}
