//! Zero-copy file bodies: the kernel moves file pages to the socket with
//! `sendfile(2)`, as nginx does, and a slow client pins no file bytes in
//! our memory at all.
//!
//! hyper writes whatever a body yields, so a file body on a real connection
//! yields *placeholders* instead of bytes: slices of one static, never
//! touched region (`PLACEHOLDER`), each announcing its file range in the
//! connection's [`SendfileQueue`] first. hyper queues them like any chunk
//! (it never copies body chunks when writing vectored) and hands them to the
//! connection's stream, [`SendfileStream`], which recognizes a placeholder
//! by its address and sends the announced range from the file instead.
//! Plain slices (the response head, in-memory bodies) are written as usual.
//!
//! Ranges are consumed strictly in order and by length, so a wrapper may
//! split a placeholder (the shaper does, to fit its grants) without either
//! side noticing. A placeholder without an announced range, or a file that
//! shrank under the transfer, is an I/O error: the connection closes rather
//! than send wrong or short content.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Longest range one placeholder announces (one `sendfile` call at most).
pub const MAX_SEGMENT: usize = 1024 * 1024;

/// The region placeholders point into. It lives in `.bss` and nothing reads
/// it, so it costs address space, not memory.
static PLACEHOLDER: [u8; MAX_SEGMENT] = [0; MAX_SEGMENT];

/// A range of a file announced by a placeholder and not yet sent.
#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
}

/// The file ranges a connection's body announced, in order; shared by the
/// body (which announces) and the stream (which sends). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SendfileQueue {
    segments: Arc<Mutex<VecDeque<Segment>>>,
}

impl SendfileQueue {
    /// Announces `len` bytes (at most [`MAX_SEGMENT`]) of `file` from
    /// `offset`, and returns the placeholder the body yields for them.
    pub fn placeholder(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(MAX_SEGMENT);
        self.lock().push_back(Segment {
            file,
            offset,
            remaining: len as u64,
        });
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Segment>> {
        self.segments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `slice` is (part of) a placeholder.
fn is_placeholder(slice: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    !slice.is_empty() && at >= start && at < start + MAX_SEGMENT
}

/// A connection's socket that sends placeholders' ranges with `sendfile`.
#[derive(Debug)]
pub struct SendfileStream {
    stream: TcpStream,
    queue: SendfileQueue,
}

impl SendfileStream {
    /// Wraps `stream`; bodies announce their ranges in `queue`.
    pub fn new(stream: TcpStream, queue: SendfileQueue) -> Self {
        Self { stream, queue }
    }

    /// Sends up to `len` bytes of the front segment.
    fn poll_sendfile(&self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        let mut segments = self.queue.lock();
        let Some(segment) = segments.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "file placeholder written without an announced range",
            )));
        };
        if len as u64 > segment.remaining {
            return Poll::Ready(Err(io::Error::other(
                "file placeholder longer than its announced range",
            )));
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut offset = segment.offset;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(self.stream.as_fd(), &*segment.file, Some(&mut offset), len)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )));
                }
                Ok(n) => {
                    segment.offset += n as u64;
                    segment.remaining -= n as u64;
                    if segment.remaining == 0 {
                        segments.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(at) = bufs.iter().position(|b| is_placeholder(b)) else {
            return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        };
        if at == 0 {
            return this.poll_sendfile(cx, bufs[0].len());
        }
        // Plain bytes first (the response head); the range follows only if
        // all of them went out, and its result never hides their progress.
        let plain: usize = bufs[..at].iter().map(|b| b.len()).sum();
        let written = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, &bufs[..at]))?;
        if written < plain {
            return Poll::Ready(Ok(written));
        }
        match this.poll_sendfile(cx, bufs[at].len()) {
            Poll::Ready(Ok(sent)) => Poll::Ready(Ok(written + sent)),
            // Reported again by the next call, which starts at the range.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(Ok(written)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    /// Nothing to do: hyper shuts a connection down only to drop it, and
    /// closing the socket sends the same FIN. Skipping `shutdown(2)` saves a
    /// system call on every `Connection: close` request (nginx, too, just
    /// closes).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn file_with(data: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Arc::new(f)
    }

    #[tokio::test]
    async fn placeholders_become_file_ranges_between_plain_bytes() {
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let file = file_with(&data);
        let (server, mut client) = pair().await;
        let queue = SendfileQueue::default();
        let mut stream = SendfileStream::new(server, queue.clone());
        // A head, a range split in two (as the shaper splits), a plain
        // trailer, and a second range.
        let mut first = queue.placeholder(Arc::clone(&file), 10, 100_000);
        let second = first.split_off(30_000);
        let third = queue.placeholder(Arc::clone(&file), 2_000_000, MAX_SEGMENT);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        for part in [
            Bytes::from_static(b"HEAD"),
            first,
            second,
            Bytes::from_static(b"MID"),
            third,
        ] {
            let mut rest = part;
            while !rest.is_empty() {
                let n = stream.write_vectored(&[IoSlice::new(&rest)]).await.unwrap();
                let _ = rest.split_to(n);
            }
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&data[10..100_010]);
        want.extend_from_slice(b"MID");
        want.extend_from_slice(&data[2_000_000..2_000_000 + MAX_SEGMENT]);
        assert!(got == want, "got {} bytes, want {}", got.len(), want.len());
        assert!(queue.lock().is_empty());
    }

    #[tokio::test]
    async fn a_placeholder_without_a_range_or_a_shrunk_file_is_an_error() {
        let (server, _client) = pair().await;
        let queue = SendfileQueue::default();
        let mut stream = SendfileStream::new(server, queue.clone());
        let forged = Bytes::from_static(&PLACEHOLDER[..10]);
        assert!(stream.write(&forged).await.is_err());
        let short = file_with(b"0123456789");
        let placeholder = queue.placeholder(short, 0, 100);
        let mut rest = placeholder;
        let result = loop {
            match stream.write(&rest).await {
                Ok(n) => {
                    let _ = rest.split_to(n);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(result.kind(), io::ErrorKind::UnexpectedEof);
    }
}
