//! One client connection: HTTP/1.1 through hyper, with the limits that keep
//! ten thousand of them cheap.
//!
//! hyper's write queue is capped at `WRITE_QUEUE` bytes: it asks the body for
//! the next chunk only when the queue has drained below that, so a client
//! that reads slowly holds one chunk, not hyper's default of ~400 KB. The
//! header-read timeout also bounds idle keep-alive, so a silent client
//! releases its slot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionLimits;
use crate::pipeline::{ConnectionInfo, Pipeline};
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
    /// Serves requests until the client closes, an error, or shutdown.
    pub async fn serve(self, graceful: CancellationToken, abort: CancellationToken) {
        let Connection {
            stream,
            info,
            pipeline,
            limits,
        } = self;
        // Responses are written whole; don't let Nagle hold back their tails.
        let _ = stream.set_nodelay(true);
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
        let info = Arc::new(info);
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let response = pipeline.handle(&req, &info);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = graceful.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = abort.cancelled() => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
