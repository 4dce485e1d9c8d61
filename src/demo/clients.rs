//! Simulated `freshclam` clients: they ask the mirror what real ones ask,
//! in the same order, and honour `429`/`503` with `Retry-After` as
//! freshclam does (it waits at least that long before trying again).
//!
//! An up-to-date client only checks the CVD header (`Range: bytes=0-511`).
//! An updating client fetches each cdiff from its version to the advertised
//! one; at the first cdiff the mirror does not have (`404`) it falls back to
//! the whole `daily.cvd`: the behaviour that turns one missing file into a
//! herd. Each client connects from its own loopback address (on Linux), so
//! the status page counts them as distinct clients.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio_util::sync::CancellationToken;

/// freshclam's gives up on a database after this many refusals in a row.
const MAX_REFUSALS: u32 = 8;
/// Longest wait honoured from one `Retry-After` (the demo is short).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// What every client did, summed.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// `429`/`503` answers.
    pub refused: AtomicU64,
    /// cdiff `404`s.
    pub cdiff_missing: AtomicU64,
    /// Clients updated by cdiffs alone.
    pub patched: AtomicU64,
    /// Clients that downloaded the whole CVD.
    pub full_downloads: AtomicU64,
    /// Clients that gave up or were stopped before finishing.
    pub unfinished: AtomicU64,
    /// Transport errors.
    pub errors: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One simulated client.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// The loopback address of client number `n` in group `group` (Linux routes
/// all of 127.0.0.0/8 to loopback; elsewhere everyone is 127.0.0.1).
fn address(group: u8, n: u32) -> Option<IpAddr> {
    if cfg!(target_os = "linux") {
        let [_, _, hi, lo] = n.to_be_bytes();
        Some(IpAddr::V4(Ipv4Addr::new(
            127,
            group,
            hi,
            lo.saturating_add(1).max(1),
        )))
    } else {
        None
    }
}

impl Client {
    /// Client `n` of `group` (1: routine checks, 2: the herd, 3: latecomers).
    pub fn new(base: &str, group: u8, n: u32) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(
                "ClamAV/1.4.3 (OS: linux-gnu, ARCH: x86_64, CPU: x86_64, UUID: cvdmirror-demo)",
            )
            .local_address(address(group, n))
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// An up-to-date client's check: the CVD header only.
    pub async fn header_check(&self, stats: &Stats, stop: &CancellationToken) {
        let request = self
            .http
            .get(format!("{}/daily.cvd", self.base))
            .header(http::header::RANGE, "bytes=0-511");
        let _ = self.fetch(request, stats, stop).await;
    }

    /// Updates from `have` to `want`: cdiffs, or the whole CVD at the first
    /// missing one.
    pub async fn update(&self, have: u32, want: u32, stats: &Stats, stop: &CancellationToken) {
        for version in have + 1..=want {
            let url = format!("{}/daily-{version}.cdiff", self.base);
            match self.fetch_honouring_refusals(&url, stats, stop).await {
                Some(StatusCode::OK) => continue,
                Some(StatusCode::NOT_FOUND) => {
                    Stats::add(&stats.cdiff_missing, 1);
                    let url = format!("{}/daily.cvd", self.base);
                    if self.fetch_honouring_refusals(&url, stats, stop).await
                        == Some(StatusCode::OK)
                    {
                        Stats::add(&stats.full_downloads, 1);
                    } else {
                        Stats::add(&stats.unfinished, 1);
                    }
                    return;
                }
                _ => {
                    Stats::add(&stats.unfinished, 1);
                    return;
                }
            }
        }
        Stats::add(&stats.patched, 1);
    }

    /// GETs `url`, waiting out `429`/`503` as told; the final status, or
    /// `None` when stopped, failed or refused too often.
    async fn fetch_honouring_refusals(
        &self,
        url: &str,
        stats: &Stats,
        stop: &CancellationToken,
    ) -> Option<StatusCode> {
        for _ in 0..MAX_REFUSALS {
            let (status, retry_after) = self.fetch(self.http.get(url), stats, stop).await?;
            if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE
            {
                return Some(status);
            }
            Stats::add(&stats.refused, 1);
            let wait = retry_after.unwrap_or(Duration::from_secs(5)).min(MAX_WAIT);
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
        None
    }

    /// One request, its body read to the end; status and `Retry-After`.
    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
        stats: &Stats,
        stop: &CancellationToken,
    ) -> Option<(StatusCode, Option<Duration>)> {
        Stats::add(&stats.requests, 1);
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            while let Some(chunk) = response.chunk().await? {
                Stats::add(&stats.bytes, chunk.len() as u64);
            }
            Ok::<_, reqwest::Error>((status, retry_after))
        };
        tokio::select! {
            () = stop.cancelled() => None,
            result = exchange => match result {
                Ok(answer) => Some(answer),
                Err(e) => {
                    Stats::add(&stats.errors, 1);
                    tracing::debug!(error = %e, "demo client request failed");
                    None
                }
            },
        }
    }
}
