//! The admin API, on its own listener (loopback by default, never the
//! public port): liveness, readiness, the live status page (`/`),
//! `/status.json`, Prometheus `/metrics`, and the authenticated actions:
//! the "update now" push that upstream mirrors conventionally receive
//! (`POST /sync`) and `POST /reset` of the status page's counters.
//!
//! Reading is open (it is bound to loopback unless the operator decides
//! otherwise); every action that changes something is a `POST` carrying the
//! bearer token from the token file. Without a token file, actions are
//! refused outright rather than left open.

use cvdmirror_observe as observe;
use cvdmirror_sync as sync;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observe::Observer;
use crate::sync::SyncStatus;
use crate::sync::schedule::Trigger;

/// What the admin API can see and do.
pub struct Admin {
    token: Option<String>,
    databases: Vec<String>,
    sync: Option<SyncHandle>,
    ready_without_sync: Box<dyn Fn() -> bool + Send + Sync>,
    observer: Option<Arc<Observer>>,
    fleet: Option<cvdmirror_fleet::Fleet>,
    shared_limits: Option<cvdmirror_fleet::SharedLimits>,
}

/// The running sync engine, when `serve` runs one.
pub struct SyncHandle {
    /// Its status.
    pub status: watch::Receiver<SyncStatus>,
    /// Where pushes go.
    pub trigger: Arc<Trigger>,
}

impl Admin {
    /// An admin API for `databases`; `ready_without_sync` says whether the
    /// served root is complete when no sync engine runs.
    pub fn new(
        token: Option<String>,
        databases: Vec<String>,
        sync: Option<SyncHandle>,
        ready_without_sync: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        Self {
            token,
            databases,
            sync,
            ready_without_sync,
            observer: None,
            fleet: None,
            shared_limits: None,
        }
    }

    /// Serves `observer`'s page, status and metrics, and its reset action.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves `/fleet.json`: the nodes of `fleet` as this node sees them.
    pub fn with_fleet(mut self, fleet: cvdmirror_fleet::Fleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Adds the fleet-wide limits' exchange (`shared_limits`) to
    /// `/fleet.json`.
    pub fn with_shared_limits(mut self, shared: cvdmirror_fleet::SharedLimits) -> Self {
        self.shared_limits = Some(shared);
        self
    }

    /// Reads the token file: one line, surrounding whitespace ignored, not empty.
    pub fn read_token(path: &Path) -> std::io::Result<String> {
        let token = std::fs::read_to_string(path)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("admin token file {}: {e}", path.display()),
                )
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("admin token file {} is empty", path.display()),
            ));
        }
        Ok(token)
    }

    /// Serves the API on `listener` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = TcpListener::from_std(listener)?;
        let tracker = TaskTracker::new();
        loop {
            let (stream, _) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
            };
            let admin = Arc::clone(&self);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = admin.handle(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    /// Routes one request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/ready") => self.ready(),
            (&Method::GET | &Method::HEAD, "/status.json") => self.status_json(),
            (&Method::GET | &Method::HEAD, "/") => self.page(),
            (&Method::GET | &Method::HEAD, "/metrics") => self.metrics(),
            (&Method::GET | &Method::HEAD, "/fleet.json") => self.fleet_json(),
            (&Method::POST, "/sync") => self.authorized(req).unwrap_or_else(|| self.push_sync()),
            (&Method::POST, "/reset") => self.authorized(req).unwrap_or_else(|| self.reset()),
            (_, "/healthz" | "/ready" | "/status.json" | "/" | "/metrics" | "/fleet.json") => {
                not_allowed("GET, HEAD")
            }
            (_, "/sync" | "/reset") => not_allowed("POST"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `None` when the request carries the right bearer token, else the refusal.
    fn authorized<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let Some(token) = &self.token else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "admin actions are disabled: no admin token file is configured\n",
            ));
        };
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match offered {
            Some(offered) if constant_time_eq(offered.trim().as_bytes(), token.as_bytes()) => None,
            _ => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required\n",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Some(response)
            }
        }
    }

    fn push_sync(&self) -> Response<Full<Bytes>> {
        match &self.sync {
            Some(sync) => {
                sync.trigger.push();
                tracing::info!("sync pass requested through the admin API");
                json(StatusCode::ACCEPTED, "{\"sync\":\"triggered\"}\n".into())
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no sync engine runs in this server (see --sync-interval)\n",
            ),
        }
    }

    fn page(&self) -> Response<Full<Bytes>> {
        if self.observer.is_none() {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let mut response = respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(crate::observe::page::HTML.as_bytes()),
        );
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::observe::page::CSP),
        );
        response
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        match &self.observer {
            Some(observer) => respond(
                StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                Bytes::from(observer.metrics_text()),
            ),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn reset(&self) -> Response<Full<Bytes>> {
        match &self.observer {
            Some(observer) => {
                observer.reset();
                json(StatusCode::OK, "{\"reset\":true}\n".into())
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn ready(&self) -> Response<Full<Bytes>> {
        let reasons = self.not_ready_reasons();
        if reasons.is_empty() {
            text(StatusCode::OK, "ready\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {}\n", reasons.join("; ")),
            )
        }
    }

    /// Empty when a complete verified set is published.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        match &self.sync {
            Some(sync) => {
                let status = sync.status.borrow();
                self.databases
                    .iter()
                    .filter(|db| !status.published.contains_key(*db))
                    .map(|db| format!("{db}.cvd not published yet"))
                    .collect()
            }
            None if (self.ready_without_sync)() => Vec::new(),
            None => vec!["the root lacks a CVD for some database".into()],
        }
    }

    fn fleet_json(&self) -> Response<Full<Bytes>> {
        match &self.fleet {
            Some(fleet) => {
                let mut body = serde_json::to_value(fleet.view().snapshot())
                    .unwrap_or(serde_json::Value::Null);
                if let (Some(map), Some(shared)) = (body.as_object_mut(), &self.shared_limits)
                    && let Ok(status) = serde_json::to_value(shared.status())
                {
                    map.insert("shared_limits".into(), status);
                }
                json(StatusCode::OK, format!("{body}\n"))
            }
            None => text(
                StatusCode::NOT_FOUND,
                "this node is not in a fleet (--fleet)\n",
            ),
        }
    }

    fn status_json(&self) -> Response<Full<Bytes>> {
        if let Some(observer) = &self.observer {
            let mut body = crate::observe::status::build(observer, false);
            if let Some(map) = body.as_object_mut() {
                map.insert(
                    "ready".into(),
                    serde_json::Value::Bool(self.not_ready_reasons().is_empty()),
                );
            }
            return json(StatusCode::OK, format!("{body}\n"));
        }
        let body = match &self.sync {
            Some(sync) => {
                let status = sync.status.borrow().clone();
                serde_json::json!({
                    "ready": self.not_ready_reasons().is_empty(),
                    "sync": {
                        "running": status.running,
                        "published": status.published,
                        "advertised": status.advertised,
                        "behind": status.behind(),
                        "last_pass": status.last_pass,
                        "heal_requests": sync.trigger.heal_requests(),
                    }
                })
            }
            None => {
                serde_json::json!({ "ready": self.not_ready_reasons().is_empty(), "sync": null })
            }
        };
        json(StatusCode::OK, format!("{body}\n"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "application/json", Bytes::from(body))
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: Option<&str>, sync: Option<SyncHandle>) -> Admin {
        Admin::new(
            token.map(str::to_owned),
            vec!["daily".into()],
            sync,
            Box::new(|| false),
        )
    }

    fn post(auth: Option<&str>) -> Request<()> {
        let mut b = Request::post("/sync");
        if let Some(auth) = auth {
            b = b.header(header::AUTHORIZATION, auth);
        }
        b.body(()).unwrap()
    }

    fn handle() -> (SyncHandle, watch::Sender<SyncStatus>) {
        let (tx, rx) = watch::channel(SyncStatus::default());
        (
            SyncHandle {
                status: rx,
                trigger: Arc::new(Trigger::default()),
            },
            tx,
        )
    }

    #[test]
    fn actions_need_the_bearer_token() {
        let (sync, _tx) = handle();
        let a = admin(Some("s3cret"), Some(sync));
        assert_eq!(a.handle(&post(None)).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.handle(&post(Some("Bearer wrong"))).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.handle(&post(Some("Bearer s3cret"))).status(),
            StatusCode::ACCEPTED
        );
        let get = Request::get("/sync").body(()).unwrap();
        assert_eq!(a.handle(&get).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn reset_is_a_post_with_the_token_and_pages_are_gets() {
        let observer = Observer::new(crate::observe::ObserveConfig::default());
        let a = admin(Some("s3cret"), None).with_observer(observer);
        let reset = |auth: Option<&str>| {
            let mut b = Request::post("/reset");
            if let Some(auth) = auth {
                b = b.header(header::AUTHORIZATION, auth);
            }
            a.handle(&b.body(()).unwrap()).status()
        };
        assert_eq!(reset(None), StatusCode::UNAUTHORIZED);
        assert_eq!(reset(Some("Bearer s3cret")), StatusCode::OK);
        let get = |path: &str| a.handle(&Request::get(path).body(()).unwrap());
        assert_eq!(get("/reset").status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(get("/").status(), StatusCode::OK);
        assert_eq!(get("/metrics").status(), StatusCode::OK);
        let status = get("/status.json");
        assert_eq!(status.status(), StatusCode::OK);
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(a.handle(&post).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn without_a_token_file_actions_are_refused() {
        let (sync, _tx) = handle();
        assert_eq!(
            admin(None, Some(sync))
                .handle(&post(Some("Bearer x")))
                .status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn ready_only_when_every_database_is_published() {
        let (sync, tx) = handle();
        let a = admin(None, Some(sync));
        let ready = Request::get("/ready").body(()).unwrap();
        assert_eq!(a.handle(&ready).status(), StatusCode::SERVICE_UNAVAILABLE);
        tx.send_modify(|s| {
            s.published.insert("daily".into(), 5);
        });
        assert_eq!(a.handle(&ready).status(), StatusCode::OK);
        assert_eq!(
            a.handle(&Request::get("/healthz").body(()).unwrap())
                .status(),
            StatusCode::OK
        );
    }
}
