//! Reading logs: files or standard input, plain or gzip (recognised by the
//! magic bytes, since rotated logs are not always named `.gz`), split into
//! lines in bounded memory. A line longer than [`MAX_LINE`] is skipped
//! without being held: a multi-GB log with a corrupt megabyte of binary in
//! the middle costs no more memory than a clean one.

use std::io::{self, BufRead, BufReader, Cursor, Read};

use flate2::read::MultiGzDecoder;

/// Longest line accepted (longer ones are counted as malformed).
pub const MAX_LINE: usize = 64 * 1024;
const BUFFER: usize = 256 * 1024;

/// Wraps a byte stream, decompressing it if it starts with the gzip magic
/// (several concatenated gzip members, as `logrotate` may write, are read
/// as one stream).
pub fn decompressing<R: Read + 'static>(mut reader: R) -> io::Result<Box<dyn BufRead>> {
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = Cursor::new(head[..got].to_vec()).chain(reader);
    Ok(if head[..got] == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            BUFFER,
            MultiGzDecoder::new(BufReader::with_capacity(BUFFER, whole)),
        ))
    } else {
        Box::new(BufReader::with_capacity(BUFFER, whole))
    })
}

/// A line as read: its bytes (without the newline), or a note that it was
/// longer than [`MAX_LINE`] and skipped.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes.
    Text(&'a [u8]),
    /// Skipped: longer than [`MAX_LINE`].
    TooLong,
}

/// Splits a reader into numbered lines, holding at most [`MAX_LINE`] bytes.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            line_no: 0,
        }
    }

    /// The next line and its 1-based number, or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            any = true;
            let (part, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !too_long {
                if self.buf.len() + part.len() > MAX_LINE {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            self.reader.consume(used);
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line_no += 1;
        Ok(Some((
            self.line_no,
            if too_long {
                Line::TooLong
            } else {
                Line::Text(&self.buf)
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(r: Box<dyn BufRead>) -> Vec<String> {
        let mut lines = Lines::new(r);
        let mut out = Vec::new();
        while let Some((n, l)) = lines.next_line().unwrap() {
            out.push(match l {
                Line::Text(t) => format!("{n}:{}", String::from_utf8_lossy(t)),
                Line::TooLong => format!("{n}:<long>"),
            });
        }
        out
    }

    #[test]
    fn plain_and_gzip_read_alike() {
        let text = b"a\nbb\n\nccc".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let want = vec!["1:a", "2:bb", "3:", "4:ccc"];
        assert_eq!(collect(decompressing(Cursor::new(text)).unwrap()), want);
        assert_eq!(collect(decompressing(Cursor::new(gz)).unwrap()), want);
        assert!(collect(decompressing(Cursor::new(Vec::new())).unwrap()).is_empty());
    }

    #[test]
    fn huge_lines_are_skipped_not_held() {
        let mut text = vec![b'x'; MAX_LINE * 3];
        text.extend_from_slice(b"\nok\n");
        assert_eq!(
            collect(decompressing(Cursor::new(text)).unwrap()),
            vec!["1:<long>", "2:ok"]
        );
    }
}
