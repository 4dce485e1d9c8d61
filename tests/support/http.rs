//! Raw HTTP/1.1 on loopback, as a client sees it: requests written byte by
//! byte, responses parsed from the bytes the server sent (head, headers,
//! body framed by `Content-Length` or chunked, pipelined rest), and a
//! keep-alive connection that reads one response at a time or notices the
//! server closing it. The tests pin the bytes on the wire, so nothing here
//! is a library's idea of HTTP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::wait::DEADLINE;

/// `METHOD path HTTP/1.1` with `Host: localhost`, `Connection: close` if
/// `close`, then `headers`; a `POST` without a body gets `Content-Length: 0`.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST"
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Writes `request` on a fresh connection and reads until EOF (or deadline).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Sends `request` raw and parses the single response (connection read to EOF).
pub fn raw_response(addr: SocketAddr, request: &[u8], head_only: bool) -> Response {
    let bytes = raw_exchange(addr, request);
    assert!(
        !bytes.is_empty(),
        "no response at all to {:?}",
        String::from_utf8_lossy(request)
    );
    Response::parse(&bytes, head_only)
}

/// `METHOD path` with `Connection: close` to `addr`, the response parsed.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let bytes = raw_exchange(addr, &request_bytes(method, path, headers, true));
    Response::parse(&bytes, method == "HEAD")
}

/// The first value of header `name` (lower-case) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The status and the headers (names lower-cased, in order) of a response
/// head without its final blank line.
pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?} in {head:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (as framed by Content-Length, or to EOF).
    pub body: Vec<u8>,
    /// Bytes after this response (pipelined responses).
    pub rest: Vec<u8>,
}

impl Response {
    /// Parses the first response in `bytes`. `head_only`: a HEAD response has no body.
    pub fn parse(bytes: &[u8], head_only: bool) -> Response {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
        let (status, headers) = parse_head(std::str::from_utf8(&bytes[..end]).unwrap());
        let after = &bytes[end + 4..];
        let len = if head_only || status == 304 || status == 204 || (100..200).contains(&status) {
            0
        } else {
            header(&headers, "content-length")
                .map(|v| v.parse().unwrap())
                .unwrap_or(after.len())
        };
        let len = len.min(after.len());
        Response {
            status,
            headers,
            body: after[..len].to_vec(),
            rest: after[len..].to_vec(),
        }
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One client connection that can carry several requests (keep-alive).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `METHOD path HTTP/1.1` with `Host: localhost` and `headers` (no `Connection` header).
    pub fn send_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        self.send(&request_bytes(method, path, headers, false));
    }

    /// Sends a request and reads its response, keeping the connection open.
    pub fn roundtrip(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send_request(method, path, headers);
        self.read_response(method == "HEAD")
    }

    /// Reads more bytes into the buffer; false on EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "reading response: {e} (have {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads exactly one response, framed by Content-Length or chunked
    /// encoding (or EOF when neither is present).
    pub fn read_response(&mut self, head_only: bool) -> Response {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = Response::parse(&self.buf[..head_end], true);
        let no_body = head_only
            || head.status == 304
            || head.status == 204
            || (100..200).contains(&head.status);
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut resp = head;
        if no_body {
            self.buf.drain(..head_end);
        } else if chunked {
            let mut pos = head_end;
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                        break pos + p;
                    }
                    assert!(self.fill(), "EOF inside chunked body");
                };
                let size_text = std::str::from_utf8(&self.buf[pos..line_end]).unwrap();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                pos = line_end + 2;
                if size == 0 {
                    // Trailer section ends with an empty line.
                    loop {
                        if let Some(p) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                            let empty = p == 0;
                            pos += p + 2;
                            if empty {
                                break;
                            }
                        } else {
                            assert!(self.fill(), "EOF inside chunked trailer");
                        }
                    }
                    break;
                }
                while self.buf.len() < pos + size + 2 {
                    assert!(self.fill(), "EOF inside chunk");
                }
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
            self.buf.drain(..pos);
            resp.body = body;
        } else if let Some(len) = resp
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap())
        {
            while self.buf.len() < head_end + len {
                assert!(
                    self.fill(),
                    "EOF after {} of {len} body bytes",
                    self.buf.len() - head_end
                );
            }
            resp.body = self.buf[head_end..head_end + len].to_vec();
            self.buf.drain(..head_end + len);
        } else {
            while self.fill() {}
            resp.body = self.buf[head_end..].to_vec();
            self.buf.clear();
        }
        resp.rest = Vec::new();
        resp
    }

    /// Waits up to `within` for the server to close the connection. Returns
    /// whatever bytes arrived first (e.g. a 408), or `None` if still open.
    pub fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut got = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 65536];
        while start.elapsed() < within {
            let left = within
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => return Some(got),
            }
        }
        self.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        self.buf = got;
        None
    }

    /// True if nothing is readable and the peer has not closed within `wait`.
    pub fn still_open(&mut self, wait: Duration) -> bool {
        self.closed_within(wait).is_none()
    }
}
