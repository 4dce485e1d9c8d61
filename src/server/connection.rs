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

use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionLimits;
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
        let mut conn = Box::new((*self).into_hyper());
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
        drop(guard);
    }

    /// hyper's connection future for this client, configured.
    fn into_hyper(self) -> HyperConnection {
        let Connection {
            stream,
            info,
            pipeline,
            limits,
        } = self;
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
        let io = match &info.sendfile {
            Some(queue) => SendfileStream::new(stream, queue.clone()),
            None => SendfileStream::new(stream, SendfileQueue::default()),
        };
        builder.serve_connection(TokioIo::new(io), Handler { pipeline, info })
    }
}

type HyperConnection = hyper::server::conn::http1::Connection<TokioIo<SendfileStream>, Handler>;

/// The connection's service: each request through the pipeline.
struct Handler {
    pipeline: Arc<Pipeline>,
    info: ConnectionInfo,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<CompletionBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.pipeline.handle(&req, &self.info)))
    }
}
