//! The outermost body: counts what was actually sent and tells every hook,
//! exactly once, how the exchange ended, whether the body finished, failed,
//! or was dropped because the client went away.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use super::Exchange;
use crate::body::ResponseBody;
use crate::hooks::{Completion, Hooks};

/// The body hyper sends; reports completion to the hooks.
pub struct CompletionBody {
    inner: ResponseBody,
    exchange: Arc<Exchange>,
    hooks: Hooks,
    status: StatusCode,
    sent: u64,
    reported: bool,
}

impl CompletionBody {
    /// Wraps `inner` for an exchange that answered `status`.
    pub fn new(
        inner: ResponseBody,
        exchange: Arc<Exchange>,
        hooks: Hooks,
        status: StatusCode,
    ) -> Self {
        Self {
            inner,
            exchange,
            hooks,
            status,
            sent: 0,
            reported: false,
        }
    }

    fn report(&mut self, finished: bool) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let completion = Completion {
            status: self.status,
            body_bytes: self.sent,
            finished,
            duration: self.exchange.started.elapsed(),
        };
        for hook in self.hooks.iter() {
            hook.complete(&self.exchange, &completion);
        }
    }
}

impl Body for CompletionBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                    self.exchange.sent.add(data.len() as u64);
                }
                if self.inner.is_end_stream() {
                    self.report(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.report(false),
            Poll::Ready(None) => self.report(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CompletionBody {
    fn drop(&mut self) {
        // HEAD, 304 and empty bodies are never polled: they ended complete.
        let finished = self.inner.is_end_stream() || self.exchange.method == http::Method::HEAD;
        self.report(finished);
    }
}
