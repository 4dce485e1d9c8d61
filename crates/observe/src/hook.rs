//! The observation hook: every exchange is registered when its body is
//! wrapped, every chunk is counted as it leaves, and the completion closes
//! the books.
//!
//! The same hook answers the public status page when
//! `[observe] public_status` is on: the pipeline refuses dot-paths, so the
//! page lives at a plain path (`/_status` by default), and the hook's
//! `admit` replaces the pipeline's answer for exactly that path (and
//! `<path>/status.json`) with the read-only page or JSON. Nothing that
//! changes state is reachable from the public listener.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body;

use super::Observer;
use crate::body::ResponseBody;
use crate::hooks::{Completion, Hook};
use cvdmirror_exchange::Exchange;

/// The [`Hook`] that feeds an [`Observer`].
pub struct ObserveHook {
    observer: Arc<Observer>,
}

impl ObserveHook {
    /// Feeds `observer`.
    pub fn new(observer: Arc<Observer>) -> Self {
        Self { observer }
    }

    fn public_answer(&self, exchange: &Exchange) -> Option<Response<ResponseBody>> {
        let path = self.observer.public_path()?;
        if exchange.method != Method::GET && exchange.method != Method::HEAD {
            return None;
        }
        let target = exchange.target.path();
        let (content_type, body) = if target == path || target.strip_prefix(path) == Some("/") {
            (
                "text/html; charset=utf-8",
                Bytes::from_static(super::page::HTML.as_bytes()),
            )
        } else if target.strip_prefix(path) == Some("/status.json") {
            (
                "application/json",
                Bytes::from(self.observer.status_json_text(true)),
            )
        } else {
            return None;
        };
        let body = if exchange.method == Method::HEAD {
            ResponseBody::empty()
        } else {
            ResponseBody::bytes(body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(super::page::CSP),
        );
        Some(response)
    }
}

/// Bodies up to this size are handed to the connection in one go (its
/// write queue holds 16 KiB), so they are never seen running.
const HANDED_OVER_AT_ONCE: u64 = 16 * 1024;

impl Hook for ObserveHook {
    fn admit(
        &self,
        exchange: &mut Exchange,
        planned: &mut Response<ResponseBody>,
    ) -> Option<Response<ResponseBody>> {
        // Only where the pipeline found no file: a real file wins.
        if planned.status() != StatusCode::NOT_FOUND {
            return None;
        }
        self.public_answer(exchange)
    }

    fn wrap_body(&self, exchange: &Arc<Exchange>, body: ResponseBody) -> ResponseBody {
        let len = body.size_hint().exact();
        if len.is_some_and(|n| n <= HANDED_OVER_AT_ONCE) {
            // Nothing, or a body the connection takes in one write (a
            // header check's 512 bytes, a `.sign`, most cdiffs): there is
            // no transfer to watch, and `complete` books it whole.
            return body;
        }
        // Live rates read the exchange's own count of bytes handed over.
        self.observer.traffic().begin(exchange, len);
        body
    }

    fn complete(&self, exchange: &Exchange, completion: &Completion) {
        self.observer.traffic().finish(exchange, completion);
    }
}
