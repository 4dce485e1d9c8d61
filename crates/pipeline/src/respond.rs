//! Builds responses: one place decides the headers of every status, so a
//! `304` always carries the validators and a `416` always says the length.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::file::{ServedFile, Validators};
use super::range::Selection;
use crate::body::ResponseBody;

/// `Server` header value.
pub const SERVER: &str = concat!("cvdmirror/", env!("CARGO_PKG_VERSION"));

/// Seconds a client over the connection limit is asked to wait.
const CONNECTION_LIMIT_RETRY_AFTER: &str = "10";

/// Headers a response has room for from the start: the seven of a `206`
/// (validators, type, length, ranges, `Content-Range`, `Server`) and one
/// more, so building a response allocates its header map once instead of
/// outgrowing the default and copying it.
const HEADER_ROOM: usize = 8;

/// An empty response with `status` and room for its headers.
fn new<B>(status: StatusCode, body: B) -> Response<B> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = HeaderMap::with_capacity(HEADER_ROOM);
    response
}

/// A short plain-text response for `status`.
pub fn status(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = new(status, ResponseBody::bytes(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `503` for a connection beyond the limit; the connection closes after it.
pub fn over_connection_limit() -> Response<ResponseBody> {
    let mut response = status(StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(CONNECTION_LIMIT_RETRY_AFTER),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `503` when the process ran out of descriptors: a jittered `Retry-After`
/// spreads the clients that come back.
pub fn overloaded() -> Response<ResponseBody> {
    use rand::RngExt;
    let mut response = status(StatusCode::SERVICE_UNAVAILABLE);
    let seconds = rand::rng().random_range(30..=300u32);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// `304` with the validators a cache needs to refresh its entry, and the
/// `Cache-Control` a `200` would carry (RFC 9110 §15.4.5).
pub fn not_modified(v: &Validators, cache_control: Option<&HeaderValue>) -> Response<ResponseBody> {
    let mut response = new(StatusCode::NOT_MODIFIED, ResponseBody::empty());
    insert_validators(&mut response, v);
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, value.clone());
    }
    response
}

/// `412`.
pub fn precondition_failed(v: &Validators) -> Response<ResponseBody> {
    let mut response = status(StatusCode::PRECONDITION_FAILED);
    insert_validators(&mut response, v);
    response
}

/// Whether [`file()`] can answer without the open file: the answer has no
/// body, or the body lies within the cached header bytes.
pub fn needs_no_file(served: &ServedFile, selection: Selection, head_only: bool) -> bool {
    match selection {
        Selection::Unsatisfiable => true,
        _ if head_only => true,
        Selection::Full => served.len == 0 || head_covers(served, 0, served.len),
        Selection::Partial { start, end } => head_covers(served, start, end - start + 1),
    }
}

fn head_covers(served: &ServedFile, start: u64, count: u64) -> bool {
    served
        .meta
        .head
        .as_ref()
        .is_some_and(|head| start + count <= head.len() as u64)
}

/// `200`, `206` or `416` for a file. `served.file` may be `None` only where
/// [`needs_no_file`] holds.
pub fn file(served: ServedFile, selection: Selection, head_only: bool) -> Response<ResponseBody> {
    let len = served.len;
    let (status, start, count) = match selection {
        Selection::Full => (StatusCode::OK, 0, len),
        Selection::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Selection::Unsatisfiable => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{len}")),
            );
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return response;
        }
    };
    let body = if head_only || count == 0 {
        ResponseBody::empty()
    } else {
        match (&served.meta.head, &served.file) {
            (Some(head), _) if start + count <= head.len() as u64 => {
                ResponseBody::bytes(head.slice(start as usize..(start + count) as usize))
            }
            (_, Some(file)) => ResponseBody::file(Arc::clone(file), start, count),
            (_, None) => {
                tracing::error!("a file recognized without opening it needs its bytes");
                return self::status(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    };
    let mut response = new(status, body);
    insert_validators(&mut response, &served.meta.validators);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(served.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(value) = served.cache_control {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            content_range(start, start + count - 1, len),
        );
    }
    response
}

/// Headers every response carries.
pub fn add_common_headers<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER));
}

fn insert_validators(response: &mut Response<ResponseBody>, v: &Validators) {
    let headers = response.headers_mut();
    headers.insert(header::ETAG, v.etag_header.clone());
    headers.insert(header::LAST_MODIFIED, v.last_modified_header.clone());
}

/// `bytes START-END/LEN`, written without the formatting machinery (a
/// header check answers with one of these, and `format!` was over a third
/// of the work of building its response).
fn content_range(start: u64, end: u64, len: u64) -> HeaderValue {
    let mut n = itoa::Buffer::new();
    let mut text = Vec::with_capacity(6 + 3 * 20 + 2);
    text.extend_from_slice(b"bytes ");
    text.extend_from_slice(n.format(start).as_bytes());
    text.push(b'-');
    text.extend_from_slice(n.format(end).as_bytes());
    text.push(b'/');
    text.extend_from_slice(n.format(len).as_bytes());
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Our own formatted values are always valid header text.
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_reads_as_rfc_9110_writes_it() {
        assert_eq!(content_range(0, 511, 72_345), "bytes 0-511/72345");
        assert_eq!(
            content_range(u64::MAX - 1, u64::MAX - 1, u64::MAX),
            "bytes 18446744073709551614-18446744073709551614/18446744073709551615"
        );
    }
}
