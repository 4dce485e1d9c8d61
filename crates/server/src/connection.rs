//! One client connection: HTTP/1.1 through hyper, with the limits that keep
//! ten thousand of them cheap.
//!
//! hyper's write queue is capped at `WRITE_QUEUE` bytes: it asks the body for
//! the next chunk only when the queue has drained below that, so a client
//! that reads slowly holds one chunk, not hyper's default of ~400 KB. The
//! header-read timeout also bounds idle keep-alive, so a silent client
//! releases its slot. The hyper in use is the one in `vendor/`, whose buffer
//! for response heads starts empty instead of at 8 KiB: a resident page less
//! per connection (`vendor/README.md`).
//!
//! A TLS connection is the same after its handshake (`tls`), with the same
//! limits: the handshake has the header-read timeout, and file bodies are
//! read in chunks and encrypted instead of sent with `sendfile`, which
//! cannot encrypt.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::tls::{Guard, Handshaken, Rules};
use crate::ConnectionLimits;
use crate::pipeline::{CompletionBody, ConnectionInfo, Pipeline};
use crate::sendfile::{SendfileQueue, SendfileStream};

/// hyper's buffered output per connection (its minimum is 8 KiB).
const WRITE_QUEUE: usize = 16 * 1024;
/// How long a connection beyond the limit may take to send its request.
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// An accepted connection and what it needs to be served.
pub(super) struct Connection {
    pub stream: TcpStream,
    pub info: ConnectionInfo,
    pub pipeline: Arc<Pipeline>,
    pub limits: ConnectionLimits,
    /// HTTPS certificates and client-certificate rules in force, if any:
    /// a TLS connection handshakes with them, and a plain one is held to
    /// the rules too.
    pub tls: Option<Arc<Rules>>,
}

impl Connection {
    /// Serves requests until the client closes, an error, or shutdown;
    /// `guard` is released when the connection ends.
    ///
    /// This future is a fixed cost of every one of ten thousand slow
    /// downloads, so it is kept to hyper's connection and the tokens: the
    /// connection arrives boxed (a pointer, freed once hyper has it), and
    /// hyper's connection (about 2 KiB) lives in a box of its own, built
    /// here on the connection's own task. A future's size is that of its
    /// largest state, and tokio moves the whole future as the task is
    /// spawned, started and finished: holding hyper's connection inline
    /// made each of those moves copy it, a twentieth of a header check's
    /// instructions.
    pub async fn serve<G: Send + 'static>(
        self: Box<Self>,
        graceful: CancellationToken,
        abort: CancellationToken,
        guard: G,
    ) {
        let conn = Box::new((*self).into_hyper());
        drive(conn, graceful, abort).await;
        drop(guard);
    }

    /// [`serve`](Self::serve) for a TLS listener: the handshake first (a
    /// client that does not finish it within the header-read timeout is
    /// dropped, as one that sends no request head), then the same HTTP
    /// over the encrypted stream, with file bodies read and encrypted
    /// instead of sent with `sendfile`.
    pub async fn serve_tls<G: Send + 'static>(
        self: Box<Self>,
        graceful: CancellationToken,
        abort: CancellationToken,
        guard: G,
    ) {
        let Some((handshake, rest)) = self.start_tls() else {
            return;
        };
        let done = tokio::select! {
            done = handshake => done,
            () = graceful.cancelled() => None,
        };
        if let Some(done) = done {
            let conn = Box::new(rest.into_hyper(done));
            drive(conn, graceful, abort).await;
        }
        drop(guard);
    }

    /// hyper's connection future for this plain client, configured.
    fn into_hyper(self) -> PlainConnection {
        let Connection {
            stream,
            info,
            pipeline,
            limits,
            tls,
        } = self;
        let io = match &info.sendfile {
            Some(queue) => SendfileStream::new(stream, queue.clone()),
            None => SendfileStream::new(stream, SendfileQueue::default()),
        };
        // A plain request for a site that requires client certificates is
        // refused like one on a TLS connection without the right one.
        let guard = tls.as_ref().and_then(|rules| Guard::new(rules, None));
        hyper_connection(TokioIo::new(io), info, pipeline, limits, guard)
    }

    /// The handshake (boxed: its state is large and short-lived, and the
    /// task should not carry it for the whole transfer) and what the
    /// connection needs after it; `None` without certificates.
    fn start_tls(self) -> Option<(Handshake, Box<AfterHandshake>)> {
        let Connection {
            stream,
            mut info,
            pipeline,
            limits,
            tls,
        } = self;
        let rules = tls?;
        let timeout = if info.over_limit {
            REFUSAL_HEADER_TIMEOUT
        } else {
            limits.header_read_timeout
        };
        // `sendfile` cannot encrypt: bodies are read in chunks instead.
        info.sendfile = None;
        let handshake = Box::pin(super::tls::handshake(
            stream,
            Arc::clone(&rules.certificates),
            info.peer,
            timeout,
        ));
        let rest = Box::new(AfterHandshake {
            info,
            pipeline,
            limits,
            rules,
        });
        Some((handshake, rest))
    }
}

type Handshake = std::pin::Pin<Box<dyn Future<Output = Option<Handshaken>> + Send>>;
type PlainConnection = hyper::server::conn::http1::Connection<TokioIo<SendfileStream>, Handler>;
type TlsConnection = hyper::server::conn::http1::Connection<TokioIo<TlsStream<TcpStream>>, Handler>;

/// A TLS connection's parts while it handshakes.
struct AfterHandshake {
    info: ConnectionInfo,
    pipeline: Arc<Pipeline>,
    limits: ConnectionLimits,
    rules: Arc<Rules>,
}

impl AfterHandshake {
    fn into_hyper(self, done: Handshaken) -> TlsConnection {
        let guard = Guard::new(&self.rules, done.authenticated);
        hyper_connection(
            TokioIo::new(done.stream),
            self.info,
            self.pipeline,
            self.limits,
            guard,
        )
    }
}

/// Runs hyper's connection until it ends or shutdown cuts it.
async fn drive<I>(
    mut conn: Box<hyper::server::conn::http1::Connection<I, Handler>>,
    graceful: CancellationToken,
    abort: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let result = tokio::select! {
        result = &mut conn => result,
        () = graceful.cancelled() => {
            std::pin::Pin::new(&mut *conn).graceful_shutdown();
            tokio::select! {
                result = &mut conn => result,
                () = abort.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// hyper's connection for a client, configured.
fn hyper_connection<I>(
    io: I,
    info: ConnectionInfo,
    pipeline: Arc<Pipeline>,
    limits: ConnectionLimits,
    guard: Option<Box<Guard>>,
) -> hyper::server::conn::http1::Connection<I, Handler>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    // No Nagle delay for response tails: `TCP_NODELAY` is set on the
    // listeners and inherited by every accepted socket
    // (`listen::no_delay`), saving a system call per connection.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(if info.over_limit {
            REFUSAL_HEADER_TIMEOUT
        } else {
            limits.header_read_timeout
        })
        .keep_alive(!info.over_limit)
        .max_buf_size(WRITE_QUEUE.max(limits.max_request_header_bytes))
        .max_header_size(limits.max_request_header_bytes)
        .writev(true)
        .half_close(false);
    builder.serve_connection(
        io,
        Handler {
            pipeline,
            info,
            guard,
        },
    )
}

/// The connection's service: each request through the pipeline.
struct Handler {
    pipeline: Arc<Pipeline>,
    info: ConnectionInfo,
    /// Present when a site requires client certificates.
    guard: Option<Box<Guard>>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<CompletionBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if let Some(guard) = &self.guard
            && let Some(refused) = guard.check(&req, self.info.peer)
        {
            return std::future::ready(Ok(refused));
        }
        std::future::ready(Ok(self.pipeline.handle(&req, &self.info)))
    }
}
