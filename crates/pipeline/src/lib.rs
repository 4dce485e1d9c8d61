//! The request pipeline: every request passes the same ordered stages, each
//! its own module with one job.
//!
//! 1. `method`: only GET and HEAD exist here (`405` otherwise).
//! 2. [`site`](mod@site): the Host header picks the virtual host.
//! 3. [`path`](mod@path): the target is decoded exactly once and checked (`400`/`404`).
//! 4. [`file`](mod@file): the file is opened beneath the site root, never outside it,
//!    and its validators are read (a CVD's `Last-Modified` is its build time).
//! 5. [`conditional`](mod@conditional): RFC 9110 preconditions (`304`, `412`).
//! 6. [`range`](mod@range): a single byte range (`206`, `416`).
//! 7. [`Hook`](crate::hooks::Hook)s: admission control may answer instead;
//!    body wrappers pace and count; completion goes to the access log and
//!    metrics.
//!
//! Stages return early with a finished response, so the order above is the
//! whole control flow. The header fields the stages read are picked out
//! first, in one pass (`fields`).

use cvdmirror_exchange::body;
use cvdmirror_exchange::hooks;
use cvdmirror_formats::cvd;
use cvdmirror_formats::html;

pub mod cache_control;
mod complete;
pub mod conditional;
pub mod fields;
pub mod file;
mod listing;
mod meta_cache;
mod method;
pub mod path;
pub mod range;
mod respond;
pub mod site;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::hooks::Hooks;
pub use complete::CompletionBody;
use cvdmirror_exchange::TrustedProxies;
pub use cvdmirror_exchange::{ConnectionInfo, Exchange, SentBytes, ServedFileInfo};
pub use cvdmirror_formats::FileKind;
use fields::Fields;
pub use site::Router;

/// The request path of a server, reloadable as a whole.
pub struct Pipeline {
    router: ArcSwap<Router>,
    hooks: Hooks,
    proxies: ArcSwap<TrustedProxies>,
    /// Site name of requests refused before a site is chosen.
    unnamed_site: Arc<str>,
}

impl Pipeline {
    /// A pipeline over `router`, calling `hooks` in order; forwarding
    /// headers are believed from `proxies` only.
    pub fn new(router: Router, hooks: Hooks, proxies: TrustedProxies) -> Self {
        Self {
            router: ArcSwap::from_pointee(router),
            hooks,
            proxies: ArcSwap::from_pointee(proxies),
            unnamed_site: Arc::from("-"),
        }
    }

    /// Replaces the trusted proxies (config reload).
    pub fn set_proxies(&self, proxies: TrustedProxies) {
        self.proxies.store(Arc::new(proxies));
    }

    /// Replaces the sites (config reload); requests in flight keep the old ones.
    pub fn set_router(&self, router: Router) {
        self.router.store(Arc::new(router));
    }

    /// Answers one request.
    pub fn handle<B>(&self, req: &Request<B>, conn: &ConnectionInfo) -> Response<CompletionBody> {
        let fields = Fields::scan(req.headers());
        let mut exchange = Exchange::arrived(
            conn.peer,
            req.method().clone(),
            owned_uri(req.uri()),
            req.version(),
            self.unnamed_site.clone(),
        );
        exchange.client = self.proxies.load().client_ip(conn.peer, req.headers());
        exchange.referer = fields.referer.map(owned_header);
        exchange.user_agent = fields.user_agent.map(owned_header);
        exchange.authorization = fields.authorization.map(owned_header);
        let mut response = if conn.over_limit {
            respond::over_connection_limit()
        } else {
            self.respond(req, &fields, &mut exchange)
        };
        if response.status() == StatusCode::NOT_FOUND
            && let Some(value) = &self.router.load().cache_control.missing
        {
            response
                .headers_mut()
                .insert(http::header::CACHE_CONTROL, value.clone());
        }
        for hook in self.hooks.iter() {
            if let Some(other) = hook.admit(&mut exchange, &mut response) {
                response = other;
                break;
            }
        }
        respond::add_common_headers(&mut response);
        if let Some(queue) = &conn.sendfile {
            response.body_mut().send_files_through(queue);
        }
        let exchange = Arc::new(exchange);
        let (parts, mut body) = response.into_parts();
        for hook in self.hooks.iter() {
            body = hook.wrap_body(&exchange, body);
        }
        let body = CompletionBody::new(body, exchange, self.hooks.clone(), parts.status);
        Response::from_parts(parts, body)
    }

    fn respond<B>(
        &self,
        req: &Request<B>,
        fields: &Fields,
        exchange: &mut Exchange,
    ) -> Response<ResponseBody> {
        if let Some(response) = method::reject(req.method()) {
            return response;
        }
        let Some(host) = site::request_host(req, fields) else {
            return respond::status(StatusCode::BAD_REQUEST);
        };
        let router = self.router.load();
        let site = router.select(host);
        exchange.site = site.name.clone();
        let relative = match path::decode(req.uri().path()) {
            Ok(relative) => relative,
            Err(e) => return respond::status(e.status()),
        };
        // `/daily.cvd/` names a directory that does not exist.
        let names_directory = req.uri().path().ends_with('/');
        if !names_directory
            && let Some(known) = file::lookup_known(site, &relative)
            && let Some(response) = Self::answer_file(req, fields, exchange, known)
        {
            return response;
        }
        let opened = match file::open(site, &relative) {
            Ok(opened) => opened,
            Err(file::OpenError::Overloaded(_)) => return respond::overloaded(),
            Err(e) => return respond::status(e.status()),
        };
        let served = match opened {
            file::Opened::File(_) if names_directory => {
                return respond::status(StatusCode::NOT_FOUND);
            }
            file::Opened::File(served) => served,
            file::Opened::Directory(dir) if site.directory_listing => {
                return listing::respond(dir, req.uri().path(), req.method());
            }
            file::Opened::Directory(_) => return respond::status(StatusCode::NOT_FOUND),
        };
        Self::answer_file(req, fields, exchange, served)
            .unwrap_or_else(|| respond::status(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// Preconditions, range and response for a regular file; `None` when
    /// the file was not opened (`served.file` is `None`) and the answer
    /// needs its bytes.
    fn answer_file<B>(
        req: &Request<B>,
        fields: &Fields,
        exchange: &mut Exchange,
        served: file::ServedFile,
    ) -> Option<Response<ResponseBody>> {
        exchange.file = Some(ServedFileInfo {
            kind: served.kind,
            size: served.len,
        });
        let validators = &served.meta.validators;
        let honor_range =
            match conditional::evaluate(req.method(), &fields.preconditions, validators) {
                conditional::Outcome::PreconditionFailed => {
                    return Some(respond::precondition_failed(validators));
                }
                conditional::Outcome::NotModified => {
                    return Some(respond::not_modified(
                        validators,
                        served.cache_control.as_ref(),
                    ));
                }
                conditional::Outcome::Proceed { honor_range } => {
                    honor_range && req.method() == Method::GET
                }
            };
        let range = if honor_range {
            range::evaluate(fields.range, served.len)
        } else {
            range::Selection::Full
        };
        let head_only = req.method() == Method::HEAD;
        if served.file.is_none() && !respond::needs_no_file(&served, range, head_only) {
            return None;
        }
        Some(respond::file(served, range, head_only))
    }
}

// What the exchange keeps of the request is copied out of hyper's read
// buffer: a slice of it would pin the whole buffer for as long as the
// response streams, and hyper would allocate a second one to watch for the
// client's EOF meanwhile (8 KiB each, for every slow download).

/// `uri` in its own allocation.
fn owned_uri(uri: &http::Uri) -> http::Uri {
    let copied = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(pq)) if uri.authority().is_none() => {
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(
                pq.as_str().as_bytes(),
            ))
            .ok()
            .map(http::Uri::from)
        }
        _ => http::Uri::from_maybe_shared(bytes::Bytes::from(uri.to_string())).ok(),
    };
    copied.unwrap_or_else(|| uri.clone())
}

/// `value`'s bytes in their own allocation, exactly their size.
fn owned_header(value: &HeaderValue) -> Box<[u8]> {
    Box::from(value.as_bytes())
}
