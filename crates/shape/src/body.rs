//! The response body wrapper that makes every byte wait for its grant.
//!
//! Hyper polls the body only when its small write queue has room, so holding
//! back the next frame is all it takes to pace a connection: no sleeping
//! worker, no per-connection timer. A chunk larger than the grant is split
//! with [`Bytes::split_to`] (no copy) and the rest waits for the next grant.
//! When no cap applies to a flow the body is a pass-through that only counts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::Shared;
use super::rate::Rate;
use super::tree::{FlowCell, NodeId};

/// One registered response; deregistered when dropped.
pub struct Flow {
    shared: Arc<Shared>,
    id: NodeId,
    cell: Arc<FlowCell>,
}

impl Flow {
    pub(crate) fn new(shared: Arc<Shared>, id: NodeId, cell: Arc<FlowCell>) -> Self {
        Self { shared, id, cell }
    }

    /// Body bytes this flow has handed on.
    pub fn bytes_sent(&self) -> u64 {
        self.cell.sent.load(Ordering::Relaxed)
    }

    /// Whether no cap applies, so grants are not needed.
    pub fn is_unshaped(&self) -> bool {
        self.cell.bypass.load(Ordering::Relaxed)
    }

    /// Asks to send `want` bytes: `Ready(n)` with `1 ≤ n ≤ want` bytes that
    /// may go now (and must be reported with [`Flow::record_sent`]), or
    /// `Pending` with the task woken at the next grant. `want == 0` is
    /// `Ready(0)`.
    pub fn poll_grant(&self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        if want == 0 || self.is_unshaped() {
            return Poll::Ready(want);
        }
        let mut tree = self.shared.lock();
        let idle_before = tree.waiting == 0;
        let taken = tree.take_credit(self.id, want as u64, Some(cx.waker()), Instant::now());
        let wake_pacer = idle_before && tree.waiting > 0;
        drop(tree);
        if wake_pacer {
            self.shared.wake_pacer.notify_one();
        }
        match usize::try_from(taken) {
            Ok(0) => Poll::Pending,
            Ok(n) => Poll::Ready(n),
            Err(_) => Poll::Ready(want),
        }
    }

    /// Counts bytes handed to the connection.
    pub fn record_sent(&self, bytes: usize) {
        self.cell.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A handle that changes this flow's client cap while it runs.
    pub fn rate_handle(&self) -> FlowRate {
        FlowRate {
            shared: Arc::clone(&self.shared),
            id: self.id,
        }
    }
}

/// Changes the client cap of a running [`Flow`]: how a transfer is slowed
/// when a quota runs out under it. Once the flow has ended, it does
/// nothing.
#[derive(Clone)]
pub struct FlowRate {
    shared: Arc<Shared>,
    id: NodeId,
}

impl FlowRate {
    /// Caps the flow's client at `rate` from now on, as
    /// [`FlowSpec::with_client_rate`](super::FlowSpec::with_client_rate)
    /// does at registration (`None`: the class's `client_rate`, if any).
    /// Other flows of the client in the same class share the cap.
    pub fn set(&self, rate: Option<Rate>) {
        let waker = self
            .shared
            .lock()
            .set_client_rate(self.id, rate, Instant::now());
        if let Some(waker) = waker {
            waker.wake();
        }
        // A flow that became capped asks for grants on its next poll,
        // which wakes the pacer if it sleeps.
    }
}

impl std::fmt::Debug for FlowRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRate").finish_non_exhaustive()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.shared.lock().deregister(self.id);
    }
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("bytes_sent", &self.bytes_sent())
            .field("unshaped", &self.is_unshaped())
            .finish()
    }
}

/// A body paced by its [`Flow`]; yields the inner body's bytes unchanged and
/// in order, at most a grant at a time.
#[derive(Debug)]
pub struct ShapedBody<B> {
    inner: B,
    flow: Flow,
    /// The rest of a chunk not yet granted.
    pending: Option<Bytes>,
}

impl<B> ShapedBody<B> {
    /// Paces `inner` through `flow`.
    pub fn new(inner: B, flow: Flow) -> Self {
        Self {
            inner,
            flow,
            pending: None,
        }
    }

    /// Body bytes yielded so far.
    pub fn bytes_sent(&self) -> u64 {
        self.flow.bytes_sent()
    }

    /// The flow behind this body.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }
}

impl<B> Body for ShapedBody<B>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let mut chunk = match this.pending.take() {
            Some(chunk) => chunk,
            None => loop {
                match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => break data,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    },
                }
            },
        };
        match this.flow.poll_grant(cx, chunk.len()) {
            Poll::Pending => {
                this.pending = Some(chunk);
                Poll::Pending
            }
            Poll::Ready(n) => {
                if n < chunk.len() {
                    let head = chunk.split_to(n);
                    this.pending = Some(chunk);
                    chunk = head;
                }
                this.flow.record_sent(chunk.len());
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}
