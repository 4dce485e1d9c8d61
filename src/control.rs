//! Traffic control: the hook that puts admission ([`crate::limits`]) and
//! pacing ([`crate::shape`]) on every response.
//!
//! For each exchange, in order: the client is keyed (IPv4 address, IPv6
//! /64, after trusted proxies); the response is classified (header checks
//! and cdiffs are `small`, whole CVDs `bulk`); the limits decide whether it
//! may be served at all (request rate, connections, quotas, and the herd
//! gate, which admits a whole-CVD download only while the class can still
//! give every admitted one its minimum rate); the body is paced by the
//! shaper under the link, site, class and client caps and charged to the
//! quotas as it is sent; and when the exchange ends, its admission slot is
//! released.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};

use crate::body::ResponseBody;
use crate::hooks::{Completion, Hook};
use crate::limits::{self, AdmissionGuard, ClientKey, Decision, Limits, Planned};
use crate::pipeline::{Exchange, FileKind};
use crate::shape::{self, FlowSpec, Rate, Shaper};

/// Admission and pacing for every response.
pub struct Control {
    shaper: Shaper,
    limits: ArcSwap<Limits>,
    client_rate: ArcSwap<Option<Rate>>,
}

/// What `admit` leaves for `wrap_body` and `complete`.
#[derive(Clone)]
struct Admission {
    client: ClientKey,
    class: Arc<str>,
    slow_to: Option<Rate>,
    guard: Arc<Mutex<Option<AdmissionGuard>>>,
}

impl Control {
    /// Control with `shaper` (whose pacer the caller runs) and `limits`.
    pub fn new(shaper: Shaper, limits: Arc<Limits>, client_rate: Option<Rate>) -> Self {
        Self {
            shaper,
            limits: ArcSwap::new(limits),
            client_rate: ArcSwap::from_pointee(client_rate),
        }
    }

    /// The shaper, for stats and the link guard.
    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }

    /// The limits in force, for stats and persistence.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// Applies new limits (config reload), carrying usage over; transfers
    /// in flight keep the slots they were admitted with.
    pub fn set_limits(&self, limits: Arc<Limits>) {
        limits.restore(&self.limits.load().state());
        self.limits.store(limits);
    }

    /// Applies a new per-client cap (config reload).
    pub fn set_client_rate(&self, rate: Option<Rate>) {
        self.client_rate.store(Arc::new(rate));
    }
}

impl Hook for Control {
    fn admit(
        &self,
        exchange: &mut Exchange,
        planned: &mut Response<ResponseBody>,
    ) -> Option<Response<ResponseBody>> {
        let limits = self.limits.load();
        let client = limits.config().clients.key(exchange.client);
        let body_len = if exchange.method == Method::HEAD {
            0
        } else {
            planned.body().size_hint().exact().unwrap_or(0)
        };
        let kind = exchange.file.as_ref().map_or(FileKind::Other, |f| f.kind);
        let class = self.shaper.classify(exchange.target.path(), kind, body_len);
        let path_and_query = exchange.target.path_and_query().map_or("/", |p| p.as_str());
        let request = Planned {
            site: &exchange.site,
            client,
            path_and_query,
            status: planned.status(),
            is_head: exchange.method == Method::HEAD,
            body_len,
        };
        let available = || {
            self.shaper
                .class_load(&exchange.site, &class)
                .available
                .map_or(u64::MAX, |rate| rate as u64)
        };
        match limits.admit(&request, available) {
            Decision::Serve(admitted) => {
                planned.headers_mut().extend(admitted.headers);
                let slow_to = admitted.slow_to.and_then(Rate::from_bytes_per_sec);
                exchange.extensions.insert(Admission {
                    client,
                    class,
                    slow_to,
                    guard: Arc::new(Mutex::new(Some(admitted.guard))),
                });
                None
            }
            Decision::Refuse(refusal) => {
                tracing::debug!(client = %client, limit = ?refusal.limit, "request refused by a limit");
                Some(refusal.into_response())
            }
        }
    }

    fn wrap_body(&self, exchange: &Arc<Exchange>, body: ResponseBody) -> ResponseBody {
        let Some(admission) = exchange.extensions.get::<Admission>() else {
            // Refusals are a few bytes and must not wait behind anything.
            return body;
        };
        let mut spec = FlowSpec::new(
            Arc::clone(&exchange.site),
            Arc::clone(&admission.class),
            shape::ClientKey::new(admission.client),
        );
        if let Some(rate) = Rate::min_cap(**self.client_rate.load(), admission.slow_to) {
            spec = spec.with_client_rate(rate);
        }
        let shaped = self.shaper.wrap(body, &spec);
        ResponseBody::boxed(Charged {
            inner: shaped,
            limits: self.limits.load_full(),
            site: Arc::clone(&exchange.site),
            client: admission.client,
        })
    }

    fn complete(&self, exchange: &Exchange, _completion: &Completion) {
        if let Some(admission) = exchange.extensions.get::<Admission>() {
            drop(limits::lock(&admission.guard).take());
        }
    }
}

/// Charges every byte to the quotas as it leaves, so a long transfer counts
/// while it runs, not only when it ends.
struct Charged<B> {
    inner: B,
    limits: Arc<Limits>,
    site: Arc<str>,
    client: ClientKey,
}

impl<B> Body for Charged<B>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.limits
                .charge(&self.site, self.client, data.len() as u64);
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
