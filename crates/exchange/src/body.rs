//! Response bodies: files streamed in bounded memory, and the wrapper hook
//! through which shaping and observation see every byte.
//!
//! A file body reads one chunk at a time, and only when hyper asks for the
//! next one, which hyper does only after its (deliberately small) write queue
//! has drained into the socket. A slow client therefore pins at most one
//! chunk. Chunks start small and grow while the client keeps up, so a fast
//! download moves in large writes while ten thousand slow ones stay cheap.
//!
//! The drain time cannot tell a slow client from a fast one at first: the
//! kernel's send buffer swallows the first megabyte of every download at
//! once. So large chunks come from a process-wide budget ([`LARGE_BUDGET`]):
//! under a herd of slow downloads, the first few hold large chunks and every
//! further one costs a small chunk.
//!
//! Reads are positional (`pread`) on the runtime thread, as nginx does in its
//! event loop: the mirror's few hundred megabytes live in the page cache, and
//! a hop to a blocking pool per chunk would cost more than the copy. Large
//! files are announced to the kernel as sequential so cold reads are
//! read-ahead rather than waited for.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Duration, Instant};

use crate::sendfile::{MAX_SEGMENT, SendfileQueue};

/// Smallest chunk read from a file: what a slow client pins.
pub const MIN_CHUNK: usize = 16 * 1024;
/// Largest chunk: what a fast client gets per write.
pub const MAX_CHUNK: usize = 256 * 1024;
/// A chunk consumed faster than this means the client keeps up.
const FAST_DRAIN: Duration = Duration::from_millis(2);
/// Bytes all bodies together may hold in chunks larger than [`MIN_CHUNK`].
pub const LARGE_BUDGET: usize = 64 * 1024 * 1024;

/// Bytes currently held in chunks read from files and not yet written.
static CHUNK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes read from files and not yet handed to the kernel, process-wide.
pub fn chunk_bytes_in_flight() -> usize {
    CHUNK_BYTES.load(Ordering::Relaxed)
}

/// A chunk's buffer, counted in [`CHUNK_BYTES`] until hyper drops it.
struct CountedChunk(Vec<u8>);

impl AsRef<[u8]> for CountedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for CountedChunk {
    fn drop(&mut self) {
        CHUNK_BYTES.fetch_sub(self.0.len(), Ordering::Relaxed);
    }
}

/// A boxed body, the shape wrappers produce.
pub type BoxedBody = Pin<Box<dyn Body<Data = Bytes, Error = io::Error> + Send + 'static>>;

/// The body of every response cvdmirror sends.
pub struct ResponseBody {
    inner: Inner,
}

enum Inner {
    Empty,
    Bytes(Option<Bytes>),
    File(FileBody),
    Boxed(BoxedBody),
}

impl ResponseBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Empty,
        }
    }

    /// A body held in memory.
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: if bytes.is_empty() {
                Inner::Empty
            } else {
                Inner::Bytes(Some(bytes))
            },
        }
    }

    /// `len` bytes of `file` from `offset`, streamed.
    pub fn file(file: Arc<File>, offset: u64, len: u64) -> Self {
        Self {
            inner: Inner::File(FileBody::new(file, offset, len)),
        }
    }

    /// Makes a file body yield placeholders that `queue`'s connection sends
    /// with `sendfile` (see [`crate::sendfile`]); other bodies are unchanged.
    pub fn send_files_through(&mut self, queue: &SendfileQueue) {
        if let Inner::File(file) = &mut self.inner {
            file.sendfile = Some(queue.clone());
        }
    }

    /// Any other body, e.g. a wrapper around this one.
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes, Error = io::Error> + Send + 'static,
    {
        Self {
            inner: Inner::Boxed(Box::pin(body)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::File(file) => Poll::Ready(file.next_chunk().map(|r| r.map(Frame::data))),
            Inner::Boxed(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Bytes(bytes) => bytes.is_none(),
            Inner::File(file) => file.remaining == 0,
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::File(file) => SizeHint::with_exact(file.remaining),
            Inner::Boxed(body) => body.size_hint(),
        }
    }
}

/// Wraps a body and reports the size of every data chunk as it is handed
/// to the connection: how quotas are charged and traffic is counted while a
/// transfer runs, not only when it ends.
pub struct OnData<B, F> {
    inner: B,
    on_data: F,
}

impl<B, F> OnData<B, F> {
    /// Calls `on_data(len)` for every chunk `inner` yields.
    pub fn new(inner: B, on_data: F) -> Self {
        Self { inner, on_data }
    }
}

impl<B, F> Body for OnData<B, F>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
    F: FnMut(usize) + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            (this.on_data)(data.len());
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

/// A byte range of a file, read chunk by chunk.
struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    chunk: usize,
    last_poll: Option<Instant>,
    /// Announce ranges here instead of reading them.
    sendfile: Option<SendfileQueue>,
}

impl FileBody {
    fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        if len > MAX_CHUNK as u64 {
            // Advisory only: a failure changes nothing but read-ahead.
            let _ = rustix::fs::fadvise(
                &*file,
                offset,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::Sequential,
            );
        }
        Self {
            file,
            offset,
            remaining: len,
            chunk: MIN_CHUNK,
            last_poll: None,
            sendfile: None,
        }
    }

    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.remaining == 0 {
            return None;
        }
        if let Some(queue) = &self.sendfile {
            // Nothing is read: the connection sends the range from the file.
            let len = usize::try_from(self.remaining).map_or(MAX_SEGMENT, |r| r.min(MAX_SEGMENT));
            let placeholder = queue.placeholder(Arc::clone(&self.file), self.offset, len);
            self.offset += len as u64;
            self.remaining -= len as u64;
            return Some(Ok(placeholder));
        }
        let now = Instant::now();
        if let Some(last) = self.last_poll {
            self.chunk = if now.duration_since(last) <= FAST_DRAIN {
                (self.chunk * 2).min(MAX_CHUNK)
            } else {
                (self.chunk / 2).max(MIN_CHUNK)
            };
        }
        self.last_poll = Some(now);
        if self.chunk > MIN_CHUNK && CHUNK_BYTES.load(Ordering::Relaxed) + self.chunk > LARGE_BUDGET
        {
            self.chunk = MIN_CHUNK;
        }
        let want = usize::try_from(self.remaining).map_or(self.chunk, |r| r.min(self.chunk));
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match self
                .file
                .read_at(&mut buf[filled..], self.offset + filled as u64)
            {
                Ok(0) => {
                    // The file shrank under us (replaced in place by a foreign
                    // tool). Abort: the client must not take a short body as whole.
                    self.remaining = 0;
                    return Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.remaining = 0;
                    return Some(Err(e));
                }
            }
        }
        self.offset += want as u64;
        self.remaining -= want as u64;
        CHUNK_BYTES.fetch_add(want, Ordering::Relaxed);
        Some(Ok(Bytes::from_owner(CountedChunk(buf))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    #[tokio::test]
    async fn file_body_yields_exactly_the_range() {
        let mut tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let body = ResponseBody::file(Arc::new(tmp), 10, 700_000);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[10..700_010]);
    }

    #[tokio::test]
    async fn file_that_shrank_is_an_error_not_a_short_body() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&[1u8; 100]).unwrap();
        let body = ResponseBody::file(Arc::new(tmp), 0, 200);
        assert!(body.collect().await.is_err());
    }

    #[test]
    fn a_held_chunk_is_counted() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&[7u8; 100_000]).unwrap();
        let mut body = FileBody::new(Arc::new(tmp), 0, 100_000);
        let chunk = body.next_chunk().unwrap().unwrap();
        // Other tests may hold chunks too; ours is always included.
        assert!(chunk_bytes_in_flight() >= chunk.len());
    }

    #[tokio::test]
    async fn on_data_sees_every_chunk() {
        let mut seen = 0usize;
        let body = OnData::new(ResponseBody::bytes("hello"), |n| seen += n);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!((&got[..], seen), (&b"hello"[..], 5));
    }

    #[test]
    fn in_memory_bodies_report_exact_sizes() {
        assert_eq!(ResponseBody::bytes("abc").size_hint().exact(), Some(3));
        assert!(ResponseBody::empty().is_end_stream());
    }
}
