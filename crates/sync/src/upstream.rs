//! Talking to upstream politely: one HTTP client with a versioned
//! User-Agent, downloads into staging that resume where they stopped, and
//! every answer turned into a typed outcome the engine can act on (`429` →
//! cool-down with `Retry-After`, `403` → stop everything, `5xx`/timeouts →
//! retry later).
//!
//! An upstream may also be local (`file:///path`): a bundle written by
//! `cvdmirror export`, or a directory ([`super::bundle`]). It answers the
//! same two questions (a CVD's header, a file's bytes) with the same
//! outcomes, so the engine treats its files exactly as downloaded ones;
//! etiquette (cool-downs, request budgets) is for remote upstreams only
//! ([`Upstream::is_local`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use http::{StatusCode, header};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use super::bundle::{Bundle, LocalSource};
use crate::cvd;

/// User-Agent sent upstream: stable and versioned, as upstream etiquette asks.
pub const USER_AGENT: &str = concat!(
    "cvdmirror/",
    env!("CARGO_PKG_VERSION"),
    " (ClamAV database mirror)"
);

/// `Retry-After` assumed when a `429` carries none (ClamAV's own default).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(4 * 3600);

/// Why a request to upstream did not yield the file.
#[derive(Debug, Error)]
pub enum FetchError {
    /// `404`: upstream does not have it.
    #[error("not found upstream (404)")]
    NotFound,
    /// `429`: come back after the given time.
    #[error("rate limited by upstream (429), retry after {}s", .retry_after.as_secs())]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// `403`: upstream refuses this mirror.
    #[error("forbidden by upstream (403)")]
    Forbidden,
    /// `407` (or `401`, which some proxies send for plain HTTP): credentials
    /// were missing or refused.
    #[error(
        "{0}: credentials missing or refused; check the user and password of the proxy (--proxy, [sync] proxy, HTTPS_PROXY) or of the upstream URL"
    )]
    Unauthorized(StatusCode),
    /// Another unexpected status.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// Connection, TLS or timeout trouble, including a stalled transfer.
    #[error("transfer failed: {0}")]
    Transport(String),
    /// The body is larger than any database could be.
    #[error("response larger than {0} bytes")]
    TooLarge(u64),
    /// Local disk trouble.
    #[error("cannot write staging file: {0}")]
    Io(#[from] std::io::Error),
    /// A local upstream (bundle or directory) cannot be used.
    #[error("{0}")]
    Local(String),
}

impl FetchError {
    /// Whether trying again soon may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Status(s) if s.is_server_error())
            || matches!(self, FetchError::Transport(_))
    }
}

/// A finished download in staging.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Bytes in the file.
    pub len: u64,
    /// Whether it resumed an earlier partial download.
    pub resumed: bool,
}

/// A partial download's validator, to resume it with `If-Range`.
pub type Validator = String;

/// The upstream mirror or CDN, or a local bundle or directory.
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Inner,
    /// The URL it was built from (`bundle` for an opened bundle).
    base: String,
}

#[derive(Debug, Clone)]
enum Inner {
    Http(Http),
    Local(Arc<LocalSource>),
}

impl Upstream {
    /// An upstream for `base`: an HTTP client for `http(s)://` (see
    /// [`Http::new`] for the other arguments), a local source for
    /// `file:///path` (which must exist).
    pub fn new(
        base: &str,
        connect_timeout: Duration,
        stall: Duration,
        proxy: Option<&str>,
    ) -> Result<Self, FetchError> {
        let inner = match file_url_path(base) {
            Some(path) => {
                let path = path.map_err(FetchError::Local)?;
                let source = LocalSource::new(path)
                    .map_err(|e| FetchError::Local(format!("upstream {base}: {e}")))?;
                Inner::Local(Arc::new(source))
            }
            None => Inner::Http(Http::new(base, connect_timeout, stall, proxy)?),
        };
        Ok(Self {
            inner,
            base: base.to_owned(),
        })
    }

    /// This upstream, sending `Authorization: Bearer TOKEN` with every
    /// request: how a fleet node syncing from another proves it is one of
    /// the fleet. Local sources ignore it. reqwest drops the header on a
    /// redirect to another host.
    pub fn with_bearer(mut self, token: &str) -> Result<Self, FetchError> {
        if let Inner::Http(http) = &mut self.inner {
            let mut value =
                header::HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    FetchError::Transport("the bearer token is not a header value".to_owned())
                })?;
            value.set_sensitive(true);
            http.authorization = Some(value);
        }
        Ok(self)
    }

    /// The bearer token this upstream sends, if any.
    pub fn bearer(&self) -> Option<&str> {
        match &self.inner {
            Inner::Http(http) => http
                .authorization
                .as_ref()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer ")),
            Inner::Local(_) => None,
        }
    }

    /// An upstream over a bundle already opened and checked.
    pub fn bundle(bundle: Arc<Bundle>) -> Self {
        Self {
            inner: Inner::Local(Arc::new(LocalSource::from_bundle(bundle))),
            base: "bundle".to_owned(),
        }
    }

    /// The URL this upstream was built from.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether this is a local bundle or directory, to which upstream
    /// etiquette (cool-downs, request budgets, `403` bans) does not apply.
    pub fn is_local(&self) -> bool {
        matches!(self.inner, Inner::Local(_))
    }

    /// Prepares a pass: a local source opens and checks its bundle (a
    /// damaged one fails the pass before anything is taken from it).
    pub async fn begin_pass(&self) -> Result<(), FetchError> {
        match &self.inner {
            Inner::Http(_) => Ok(()),
            Inner::Local(source) => source
                .begin_pass()
                .await
                .map(drop)
                .map_err(|e| FetchError::Local(source.explain(&e))),
        }
    }

    /// Reads the 512-byte header of `<db>.cvd` (HTTP version checks, only
    /// for upstreams that allow them: never the official CDN).
    pub async fn cvd_header(&self, db: &str) -> Result<cvd::Header, FetchError> {
        match &self.inner {
            Inner::Http(http) => http.cvd_header(db).await,
            Inner::Local(source) => match source.cvd_header(db).await {
                Ok(Some(header)) => Ok(header),
                Ok(None) => Err(FetchError::Local(format!(
                    "{} has no {db}.cvd",
                    source.describe()
                ))),
                Err(e) => Err(FetchError::Local(source.explain(&e))),
            },
        }
    }

    /// Downloads `name` into `dest` (see [`Http::download`]); a local
    /// source copies it, checking it against its bundle's manifest.
    pub async fn download(
        &self,
        name: &str,
        dest: &Path,
        validator: Option<&str>,
        validator_out: &mut Option<Validator>,
        on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Result<Downloaded, FetchError> {
        let source = match &self.inner {
            Inner::Http(http) => {
                return http
                    .download(name, dest, validator, validator_out, on_progress)
                    .await;
            }
            Inner::Local(source) => source,
        };
        let local = |e| FetchError::Local(source.explain(&e));
        let total = source.size(name).await.map_err(local)?;
        on_progress(0, total);
        match source.copy(name, dest).await.map_err(local)? {
            Some(len) => {
                on_progress(len, Some(len));
                Ok(Downloaded {
                    len,
                    resumed: false,
                })
            }
            None => Err(FetchError::NotFound),
        }
    }
}

/// `Some` for a `file:` URL: its path, or why it names none.
fn file_url_path(base: &str) -> Option<Result<PathBuf, String>> {
    if !base.get(..5)?.eq_ignore_ascii_case("file:") {
        return None;
    }
    Some(
        reqwest::Url::parse(base)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .ok_or_else(|| {
                format!("upstream {base}: not a file URL with an absolute path (file:///path/to/bundle.tar)")
            }),
    )
}

/// An HTTP upstream: the official CDN or another mirror.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    max_file_bytes: u64,
    /// Sent with every request (a fleet peer's token), marked sensitive.
    authorization: Option<header::HeaderValue>,
}

impl Http {
    /// A client for `base` (e.g. `https://database.clamav.net`); `stall` is
    /// how long a transfer may go without a byte before it is abandoned.
    /// Requests go through `proxy` (`http://[user:password@]host:port`,
    /// basic authentication from the URL; hosts in `NO_PROXY` go direct)
    /// or, without one, through the proxy the usual environment names
    /// (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
    pub fn new(
        base: &str,
        connect_timeout: Duration,
        stall: Duration,
        proxy: Option<&str>,
    ) -> Result<Self, FetchError> {
        // One process-wide TLS provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect_timeout)
            .read_timeout(stall);
        if let Some(url) = proxy {
            let proxy = reqwest::Proxy::all(url)
                .map_err(|e| FetchError::Transport(format!("proxy {}: {e}", redact_password(url))))?
                .no_proxy(reqwest::NoProxy::from_env());
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Transport(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            max_file_bytes: 1 << 31,
            authorization: None,
        })
    }

    /// A GET of `url`, with the authorization this client carries.
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        let request = self.client.get(url);
        match &self.authorization {
            Some(value) => request.header(header::AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// URL of a file upstream.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Reads the 512-byte header of `<db>.cvd` (HTTP version checks, only
    /// for upstreams that allow them: never the official CDN).
    pub async fn cvd_header(&self, db: &str) -> Result<cvd::Header, FetchError> {
        let response = self
            .get(self.url(&format!("{db}.cvd")))
            .header(header::RANGE, "bytes=0-511")
            .send()
            .await
            .map_err(transport)?;
        let response = check(response)?;
        let body = response.bytes().await.map_err(transport)?;
        cvd::Header::parse(&body)
            .map_err(|e| FetchError::Transport(format!("{db}.cvd header: {e}")))
    }

    /// Downloads `name` into `dest`. If `dest` holds a partial download whose
    /// `validator` is known, it is resumed (`Range` + `If-Range`); upstream
    /// answering `200` instead restarts it. `on_progress(done, total)` is
    /// called as bytes arrive. On error the partial file stays for the next
    /// attempt and `validator_out` holds what identifies it.
    pub async fn download(
        &self,
        name: &str,
        dest: &Path,
        validator: Option<&str>,
        validator_out: &mut Option<Validator>,
        on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Result<Downloaded, FetchError> {
        let existing = match (validator, tokio::fs::metadata(dest).await) {
            (Some(_), Ok(meta)) if meta.len() > 0 => meta.len(),
            _ => 0,
        };
        let mut request = self.get(self.url(name));
        if existing > 0
            && let Some(v) = validator
        {
            request = request
                .header(header::RANGE, format!("bytes={existing}-"))
                .header(header::IF_RANGE, v);
        }
        let response = request.send().await.map_err(transport)?;
        let resumed = existing > 0 && response.status() == StatusCode::PARTIAL_CONTENT;
        if existing > 0 && response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // Our partial file is as long as theirs or longer: start over.
            let _ = tokio::fs::remove_file(dest).await;
            return Box::pin(self.download(name, dest, None, validator_out, on_progress)).await;
        }
        let response = check(response)?;
        *validator_out = response
            .headers()
            .get(header::ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"))
            .or_else(|| response.headers().get(header::LAST_MODIFIED))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let total = response
            .content_length()
            .map(|n| n + if resumed { existing } else { 0 });
        if total.is_some_and(|t| t > self.max_file_bytes) {
            return Err(FetchError::TooLarge(self.max_file_bytes));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(dest)
            .await?;
        let mut done = if resumed { existing } else { 0 };
        on_progress(done, total);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            done += chunk.len() as u64;
            if done > self.max_file_bytes {
                return Err(FetchError::TooLarge(self.max_file_bytes));
            }
            file.write_all(&chunk).await?;
            on_progress(done, total);
        }
        file.flush().await?;
        file.sync_all().await?;
        if let Some(total) = total
            && done != total
        {
            return Err(FetchError::Transport(format!(
                "body ended after {done} of {total} bytes"
            )));
        }
        Ok(Downloaded { len: done, resumed })
    }
}

/// The error with every underlying cause, so a log says *what* broke
/// ("connection reset by peer"), not only that decoding a body failed.
fn transport(e: reqwest::Error) -> FetchError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "error"
    };
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Transport(message)
}

/// Maps a status to success or the outcome the engine acts on.
fn check(response: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    match response.status() {
        s if s.is_success() => Ok(response),
        StatusCode::NOT_FOUND => Err(FetchError::NotFound),
        StatusCode::FORBIDDEN => Err(FetchError::Forbidden),
        s @ (StatusCode::PROXY_AUTHENTICATION_REQUIRED | StatusCode::UNAUTHORIZED) => {
            Err(FetchError::Unauthorized(s))
        }
        StatusCode::TOO_MANY_REQUESTS => {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
                .unwrap_or(DEFAULT_RETRY_AFTER);
            Err(FetchError::RateLimited { retry_after })
        }
        s => Err(FetchError::Status(s)),
    }
}

/// A proxy URL fit for a log line: `http://user:***@host:port`.
pub fn redact_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_remembers_the_bearer_it_sends() {
        let timeout = Duration::from_secs(1);
        let plain = Upstream::new("http://127.0.0.1:9", timeout, timeout, None).unwrap();
        assert_eq!(plain.bearer(), None);
        let peer = plain.with_bearer("0123abcd").unwrap();
        assert_eq!(peer.bearer(), Some("0123abcd"));
        assert!(format!("{peer:?}").contains("Sensitive"), "{peer:?}");
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Fri, 27 Nov 2026 16:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 17:00:00 GMT", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 15:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_server_errors_and_transport_trouble_are_retryable() {
        assert!(FetchError::Status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(FetchError::Transport("reset".into()).is_retryable());
        assert!(!FetchError::NotFound.is_retryable());
        assert!(!FetchError::Forbidden.is_retryable());
        assert!(
            !FetchError::RateLimited {
                retry_after: DEFAULT_RETRY_AFTER
            }
            .is_retryable()
        );
    }
}
