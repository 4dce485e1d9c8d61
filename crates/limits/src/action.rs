//! What happens when a limit is exceeded, and the headers that say so.
//!
//! Each limit has its own [`Action`]: serve slower (the bandwidth scheduler
//! applies the rate), refuse with `429` or `503` and a jittered
//! `Retry-After`, or redirect to another mirror with `302`/`307`. `301` and
//! `403` cannot be configured: clients cache a `301` for good, and freshclam
//! treats `403` as a 24 h ban.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;

use super::jitter::{Random, ceil_secs, spread};
use crate::body::ResponseBody;

/// A refusal status: `429` or `503` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct RejectStatus(StatusCode);

impl RejectStatus {
    /// `429 Too Many Requests`: freshclam stores `Retry-After` and stays away
    /// from every server until then.
    pub const TOO_MANY_REQUESTS: Self = Self(StatusCode::TOO_MANY_REQUESTS);
    /// `503 Service Unavailable`: freshclam retries after 5 s, then tries
    /// the next mirror.
    pub const SERVICE_UNAVAILABLE: Self = Self(StatusCode::SERVICE_UNAVAILABLE);

    /// The status code.
    pub fn status(self) -> StatusCode {
        self.0
    }
}

impl Default for RejectStatus {
    fn default() -> Self {
        Self::TOO_MANY_REQUESTS
    }
}

impl TryFrom<u16> for RejectStatus {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        match code {
            429 => Ok(Self::TOO_MANY_REQUESTS),
            503 => Ok(Self::SERVICE_UNAVAILABLE),
            403 => Err("403 makes freshclam stop for 24 h; use 429 or 503".into()),
            other => Err(format!("refusal status must be 429 or 503, not {other}")),
        }
    }
}

/// A redirect status: `302` or `307` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct RedirectStatus(StatusCode);

impl RedirectStatus {
    /// `302 Found`.
    pub const FOUND: Self = Self(StatusCode::FOUND);
    /// `307 Temporary Redirect`.
    pub const TEMPORARY: Self = Self(StatusCode::TEMPORARY_REDIRECT);

    /// The status code.
    pub fn status(self) -> StatusCode {
        self.0
    }
}

impl Default for RedirectStatus {
    fn default() -> Self {
        Self::FOUND
    }
}

impl TryFrom<u16> for RedirectStatus {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        match code {
            302 => Ok(Self::FOUND),
            307 => Ok(Self::TEMPORARY),
            301 | 308 => Err(format!(
                "{code} is cached by clients for good; use 302 or 307"
            )),
            other => Err(format!("redirect status must be 302 or 307, not {other}")),
        }
    }
}

/// What to do when a limit is exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// Serve, but at most `rate` bytes per second.
    Slow {
        /// The rate, written with units (`"1Mbit"`); bytes per second.
        #[serde(deserialize_with = "crate::config::rate_bytes_per_sec")]
        rate: u64,
    },
    /// Refuse with `status` and `Retry-After` = the time until the limit has
    /// room again plus a uniform random `0..=jitter`.
    Reject {
        /// `429` (default) or `503`.
        #[serde(default)]
        status: RejectStatus,
        /// Spread of `Retry-After` (default 60 s).
        #[serde(default = "default_jitter", with = "humantime_serde")]
        jitter: Duration,
    },
    /// Redirect to `url` + the request path.
    Redirect {
        /// `302` (default) or `307`.
        #[serde(default)]
        status: RedirectStatus,
        /// Base URL of the other mirror (`https://mirror2.example/clamav`).
        url: String,
    },
}

fn default_jitter() -> Duration {
    Duration::from_secs(60)
}

impl Default for Action {
    fn default() -> Self {
        Action::Reject {
            status: RejectStatus::default(),
            jitter: default_jitter(),
        }
    }
}

/// Which limit produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// Requests per client (GCRA).
    RequestRate,
    /// Concurrent requests of one client.
    ClientConnections,
    /// Concurrent requests on one site.
    SiteConnections,
    /// The site's transfer quota.
    SiteQuota,
    /// The client's transfer quota.
    ClientQuota,
    /// The herd gate for whole-database downloads.
    Herd,
}

impl LimitKind {
    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestRate => "request-rate",
            LimitKind::ClientConnections => "client-connections",
            LimitKind::SiteConnections => "site-connections",
            LimitKind::SiteQuota => "site-quota",
            LimitKind::ClientQuota => "client-quota",
            LimitKind::Herd => "herd",
        }
    }
}

/// A response that replaces the planned one.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The limit that refused.
    pub limit: LimitKind,
    /// `429`, `503`, `302` or `307`.
    pub status: StatusCode,
    /// `Retry-After`, `Location`, `RateLimit*`.
    pub headers: HeaderMap,
}

impl Refusal {
    /// The response to send (short text body; `Connection: close` on 503 so
    /// a refused client frees its connection).
    pub fn into_response(self) -> Response<ResponseBody> {
        let text = format!(
            "{} {} ({})\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.limit.as_str()
        );
        let mut response = Response::new(ResponseBody::bytes(text));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.extend(self.headers);
        response
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// The outcome of applying an action.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Serve at most this many bytes per second.
    Slow(u64),
    /// Send this instead.
    Refuse(Refusal),
}

impl Action {
    /// Applies the action for `limit`, whose room returns after `wait`;
    /// `path_and_query` is appended to a redirect URL.
    pub fn apply(
        &self,
        limit: LimitKind,
        wait: Duration,
        path_and_query: &str,
        random: &dyn Random,
    ) -> Applied {
        match self {
            Action::Slow { rate } => Applied::Slow(*rate),
            Action::Reject { status, jitter } => {
                let secs = spread(random, wait, wait + *jitter);
                Applied::Refuse(reject(limit, status.status(), secs))
            }
            Action::Redirect { status, url } => {
                let location = format!(
                    "{}/{}",
                    url.trim_end_matches('/'),
                    path_and_query.trim_start_matches('/')
                );
                let mut headers = HeaderMap::new();
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        headers.insert(header::LOCATION, v);
                        Applied::Refuse(Refusal {
                            limit,
                            status: status.status(),
                            headers,
                        })
                    }
                    // A path that cannot be a header value: refuse instead.
                    Err(_) => Applied::Refuse(reject(
                        limit,
                        StatusCode::SERVICE_UNAVAILABLE,
                        ceil_secs(wait),
                    )),
                }
            }
        }
    }
}

/// A `429`/`503` refusal with `Retry-After: secs`.
pub fn reject(limit: LimitKind, status: StatusCode, secs: u64) -> Refusal {
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Refusal {
        limit,
        status,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter::SeededRandom;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        on_exceed: Action,
    }

    fn parse(toml_text: &str) -> Result<Action, String> {
        toml::from_str::<Wrap>(toml_text)
            .map(|w| w.on_exceed)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn actions_parse_and_bad_statuses_are_refused() {
        assert_eq!(
            parse("on_exceed = { action = \"slow\", rate = \"1Mbit\" }").unwrap(),
            Action::Slow { rate: 125_000 }
        );
        assert_eq!(
            parse("on_exceed = { action = \"reject\", status = 503, jitter = \"5m\" }").unwrap(),
            Action::Reject {
                status: RejectStatus::SERVICE_UNAVAILABLE,
                jitter: Duration::from_secs(300)
            }
        );
        assert_eq!(
            parse("on_exceed = { action = \"reject\" }").unwrap(),
            Action::default()
        );
        assert!(
            parse("on_exceed = { action = \"reject\", status = 403 }")
                .unwrap_err()
                .contains("24 h")
        );
        assert!(parse("on_exceed = { action = \"redirect\", url = \"x\", status = 301 }").is_err());
        assert!(parse("on_exceed = { action = \"redirect\", url = \"x\", bogus = 1 }").is_err());
        assert!(parse("on_exceed = { action = \"explode\" }").is_err());
    }

    #[test]
    fn reject_spreads_retry_after_over_the_window() {
        let r = SeededRandom::new(3);
        let action = Action::Reject {
            status: RejectStatus::TOO_MANY_REQUESTS,
            jitter: Duration::from_secs(600),
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let Applied::Refuse(refusal) = action.apply(
                LimitKind::SiteQuota,
                Duration::from_millis(120_300),
                "/daily.cvd",
                &r,
            ) else {
                panic!("not a refusal");
            };
            assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
            let secs = refusal.retry_after().unwrap();
            assert!((121..=721).contains(&secs), "{secs}");
            seen.insert(secs);
        }
        assert!(seen.len() > 400, "only {} distinct values", seen.len());
    }

    #[test]
    fn redirect_appends_the_path_and_503_closes() {
        let r = SeededRandom::new(3);
        let action = Action::Redirect {
            status: RedirectStatus::TEMPORARY,
            url: "https://m2.example/clamav/".into(),
        };
        let Applied::Refuse(refusal) =
            action.apply(LimitKind::Herd, Duration::ZERO, "/daily.cvd", &r)
        else {
            panic!()
        };
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://m2.example/clamav/daily.cvd"
        );
        let refusal = reject(LimitKind::Herd, StatusCode::SERVICE_UNAVAILABLE, 7);
        let response = refusal.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert!(matches!(
            Action::Slow { rate: 10 }.apply(LimitKind::Herd, Duration::ZERO, "/", &r),
            Applied::Slow(10)
        ));
    }
}
