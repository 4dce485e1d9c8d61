//! The demo's fake upstream: a directory of test-signed `daily` files served
//! over HTTP by a plain (unshaped, unobserved) cvdmirror server on
//! `127.0.0.1:0`, and a DNS TXT server advertising its version.
//!
//! Files are generated up front (CVD building and RSA signing cost CPU on a
//! shared machine; the scenario should not stall waiting for them) and
//! placed into the served directory by rename when the script says so, so
//! the server never sees a half-written file.

use crate::calendar::unix_now;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::flags::ServeArgs;
use crate::cvd::build::{DbSpec, cdiff, cvd};
use crate::cvd::testkeys::signing_keys;
use crate::dns::test_server::TxtServer;
use crate::hooks::Hooks;
use crate::server::{Server, listen};

/// The TXT record name the fake upstream answers for.
pub const DNS_NAME: &str = "current.cvd.demo.test";

/// cdiff history published upstream below the first version.
const HISTORY: u32 = 5;

/// Every file the scenario will ever publish, built before it starts.
struct Fixtures {
    first_cvd: Vec<u8>,
    next_cvd: Vec<u8>,
    /// `(version, bytes)` for versions `first - HISTORY + 1 ..= first + 2`.
    cdiffs: Vec<(u32, Vec<u8>)>,
}

/// The running fake upstream.
pub struct Upstream {
    dir: PathBuf,
    fixtures: Fixtures,
    /// The version first published.
    pub first: u32,
    /// Its HTTP base URL.
    pub url: String,
    dns: TxtServer,
    server: JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
}

impl Upstream {
    /// Builds the fixtures (`cvd_size` bytes per CVD) in `dir` and starts
    /// serving `daily` at version `first`, with a few cdiffs of history.
    pub async fn start(dir: &Path, first: u32, cvd_size: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let fixtures = tokio::task::spawn_blocking(move || build_fixtures(first, cvd_size))
            .await
            .context("fixture builder panicked")??;

        let args = ServeArgs {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            root: Some(dir.to_path_buf()),
            access_log: Some("off".into()),
            ..ServeArgs::default()
        };
        let mut config = Config::resolve(&args).context("upstream server configuration")?;
        config.shutdown_grace = Duration::from_secs(1);
        let server = Arc::new(Server::new(config.server(), Hooks::new())?);
        let listeners = listen::bind_all(&config.listen, false)?;
        let addr = listeners
            .first()
            .context("upstream server has no listener")?
            .local_addr()?;
        let stop = CancellationToken::new();
        let server = tokio::spawn(server.run(listeners, stop.clone().cancelled_owned()));
        let dns = TxtServer::start(DNS_NAME, record(first))
            .await
            .context("cannot start the upstream DNS server")?;

        let upstream = Self {
            dir: dir.to_path_buf(),
            fixtures,
            first,
            url: format!("http://{addr}"),
            dns,
            server,
            stop,
        };
        upstream.place("daily.cvd", &upstream.fixtures.first_cvd)?;
        for (version, bytes) in &upstream.fixtures.cdiffs {
            if *version <= first {
                upstream.place(&format!("daily-{version}.cdiff"), bytes)?;
            }
        }
        Ok(upstream)
    }

    /// The nameserver answering [`DNS_NAME`].
    pub fn nameserver(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// Size of the CVDs, in bytes.
    pub fn cvd_len(&self) -> u64 {
        self.fixtures.first_cvd.len() as u64
    }

    /// The failed update: `first + 2` is published and advertised, but
    /// `daily-{first+1}.cdiff` is not.
    pub fn publish_without_middle_cdiff(&self) -> anyhow::Result<()> {
        let next = self.first + 2;
        self.place(&format!("daily-{next}.cdiff"), self.cdiff(next)?)?;
        self.place("daily.cvd", &self.fixtures.next_cvd)?;
        self.dns.set_record(record(next));
        Ok(())
    }

    /// The missing cdiff finally appears upstream.
    pub fn publish_middle_cdiff(&self) -> anyhow::Result<()> {
        let middle = self.first + 1;
        self.place(&format!("daily-{middle}.cdiff"), self.cdiff(middle)?)
    }

    fn cdiff(&self, version: u32) -> anyhow::Result<&[u8]> {
        self.fixtures
            .cdiffs
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, bytes)| bytes.as_slice())
            .with_context(|| format!("no fixture for daily-{version}.cdiff"))
    }

    /// Writes `name` beside its final place, then renames it in.
    fn place(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let staging = self.dir.join(format!(".{name}.part"));
        std::fs::write(&staging, bytes)
            .with_context(|| format!("cannot write {}", staging.display()))?;
        std::fs::rename(&staging, self.dir.join(name))
            .with_context(|| format!("cannot publish {name} upstream"))?;
        Ok(())
    }

    /// Stops the HTTP and DNS servers.
    pub async fn stop(self) {
        self.stop.cancel();
        drop(self.dns);
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "demo upstream server failed");
        }
    }
}

fn build_fixtures(first: u32, cvd_size: u64) -> anyhow::Result<Fixtures> {
    let keys = signing_keys();
    let spec = |version: u32| {
        DbSpec::new("daily", version)
            .signatures(100 + version % 1000)
            .stime(unix_now().saturating_sub(3_600 * u64::from(first + 2 - version)))
            .size(cvd_size)
    };
    let first_cvd = cvd(&spec(first), &keys).context("cannot build daily.cvd")?;
    let next_cvd = cvd(&spec(first + 2), &keys).context("cannot build daily.cvd")?;
    let cdiffs = (first.saturating_sub(HISTORY - 1)..=first + 2)
        .map(|v| Ok((v, cdiff("daily", v, &keys)?)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot build cdiffs")?;
    Ok(Fixtures {
        first_cvd,
        next_cvd,
        cdiffs,
    })
}

/// A TXT record as `current.cvd.clamav.net` has it, advertising `daily`.
fn record(daily: u32) -> String {
    format!("1.4.3:62:{daily}:{}:0:90:0:335", unix_now())
}
