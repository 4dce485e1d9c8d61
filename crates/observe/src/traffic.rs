//! Traffic accounting: bytes as they are sent, requests as they end (by
//! class, which only the end decides) and as they start (in the top
//! clients and files tables, so a client busy with its first download
//! shows a request beside its bytes; running transfers are counted apart).
//!
//! The per-chunk cost must be negligible (a 60 MB download is a few hundred
//! chunks, a herd is thousands of downloads at once), so a chunk only adds
//! to its own transfer's uncontended atomic counter. Everything that needs a
//! lock (per-site, per-class, per-client and per-file attribution) happens
//! when the sampler *flushes* the running transfers once a second and when a
//! transfer completes. Live rates are therefore true to the second during a
//! long download instead of arriving in one lump at its end, and totals are
//! exact to the byte once the transfers are over (and at any moment, since
//! every reader flushes first).
//!
//! Counters here are lifetime counters (Prometheus wants monotonic ones);
//! the admin reset records a baseline that the status page subtracts, and
//! clears the tables and history.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;

use super::class::RequestClass;
use super::client::{self, ClientKey, Grouping};
use super::distinct::Windowed;
use crate::hooks::Completion;
use cvdmirror_exchange::Exchange;
use cvdmirror_formats::topk::{Counter, Rank, TopK};

/// Clients and files kept in the top tables.
pub const TOP_CAPACITY: usize = 512;
/// Clients tracked per second for live per-client rates.
const LIVE_CLIENTS_CAP: usize = 4096;
/// Upper bounds of the request duration histogram, in seconds: from a 1 ms
/// header check to a 20-minute CVD download on a starved link.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0,
];

/// Per-class lifetime counters of one site.
#[derive(Debug, Default)]
pub struct ClassCounters {
    bytes: [AtomicU64; RequestClass::COUNT],
    requests: [AtomicU64; RequestClass::COUNT],
}

impl ClassCounters {
    /// Bytes and requests per class, indexed by [`RequestClass::index`].
    pub fn load(&self) -> ([u64; RequestClass::COUNT], [u64; RequestClass::COUNT]) {
        (
            std::array::from_fn(|i| self.bytes[i].load(Ordering::Relaxed)),
            std::array::from_fn(|i| self.requests[i].load(Ordering::Relaxed)),
        )
    }
}

/// The hot half of a running transfer: what its body has sent so far.
/// The cold half, under the `active` lock.
#[derive(Debug)]
struct Running {
    flushed: u64,
    /// Site and file (the path of a file body) come from here: one pointer
    /// per running transfer instead of copies.
    exchange: Arc<Exchange>,
    client: ClientKey,
    class: Option<RequestClass>,
}

impl Running {
    /// The path of its file body, if it sends a file.
    fn file(&self) -> Option<&str> {
        let exchange = &self.exchange;
        exchange.file.as_ref().map(|_| exchange.target.path())
    }
}

/// A client's share of the last flush interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveClient {
    /// Bytes since the previous flush.
    pub bytes: u64,
    /// Transfers running now.
    pub transfers: u64,
}

/// Per-client bytes since the last tick, and who is downloading now.
#[derive(Debug, Default)]
struct Tables {
    clients: Option<TopK<ClientKey>>,
    files: Option<TopK<Arc<str>>>,
    live: HashMap<ClientKey, LiveClient>,
    distinct: Option<Windowed>,
    refused: Option<Windowed>,
}

/// Lifetime requests by site, class and status code.
pub type CodeCounts = BTreeMap<(Arc<str>, RequestClass, u16), u64>;

/// What the status page subtracts after a reset.
#[derive(Debug, Default, Clone)]
struct Baseline {
    at: Option<SystemTime>,
    sites: BTreeMap<Arc<str>, ([u64; RequestClass::COUNT], [u64; RequestClass::COUNT])>,
    codes: CodeCounts,
    cdiff_not_found: u64,
    sign_not_found: u64,
}

/// Every traffic counter of the server.
#[derive(Debug)]
pub struct Traffic {
    sites: RwLock<BTreeMap<Arc<str>, Arc<ClassCounters>>>,
    codes: Mutex<CodeCounts>,
    cdiff_not_found: AtomicU64,
    sign_not_found: AtomicU64,
    /// Keyed by the exchange's address, never by anything a client
    /// chooses: foldhash, cheaper than SipHash on every request.
    active: Mutex<foldhash::HashMap<usize, Running>>,
    tables: Mutex<Tables>,
    baseline: Mutex<Baseline>,
    durations: [Histogram; RequestClass::COUNT],
    grouping: Grouping,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

use cvdmirror_formats::mutex::lock;

/// The exchange's identity while it runs: its `Arc` allocation, which lives
/// from `wrap_body` until after `complete`, so the address cannot be reused
/// in between.
fn key_of(exchange: &Exchange) -> usize {
    std::ptr::from_ref(exchange) as usize
}

fn unix_minute(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl Traffic {
    /// Empty counters, clients grouped the default way.
    pub fn new() -> Self {
        Self::with_grouping(Grouping::default())
    }

    /// Empty counters, clients grouped by `grouping`.
    pub fn with_grouping(grouping: Grouping) -> Self {
        Self {
            grouping,
            sites: RwLock::default(),
            codes: Mutex::default(),
            cdiff_not_found: AtomicU64::new(0),
            sign_not_found: AtomicU64::new(0),
            active: Mutex::default(),
            tables: Mutex::new(Tables {
                clients: Some(TopK::new(TOP_CAPACITY, Rank::Bytes)),
                files: Some(TopK::new(TOP_CAPACITY, Rank::Bytes)),
                live: HashMap::new(),
                distinct: Some(Windowed::new(6)),
                refused: Some(Windowed::new(6)),
            }),
            baseline: Mutex::new(Baseline {
                at: Some(SystemTime::now()),
                ..Baseline::default()
            }),
            durations: std::array::from_fn(|_| Histogram::new(DURATION_BUCKETS)),
        }
    }

    fn site(&self, name: &Arc<str>) -> Arc<ClassCounters> {
        if let Some(c) = self
            .sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Arc::clone(c);
        }
        let mut sites = self
            .sites
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(sites.entry(Arc::clone(name)).or_default())
    }

    /// A transfer starts (from `Hook::wrap_body`); `body_len` is the body's
    /// exact size if known. Its request counts in the top tables from now
    /// on, so a client whose only download is still running does not show
    /// bytes without requests; the class counters count it when it ends,
    /// with its final class.
    pub fn begin(&self, exchange: &Arc<Exchange>, body_len: Option<u64>) {
        let running = Running {
            flushed: 0,
            exchange: Arc::clone(exchange),
            client: client::key(&self.grouping, exchange.client),
            class: RequestClass::provisional(exchange, body_len),
        };
        // `active` before `tables`, as everywhere: a reset in between cannot
        // lose the request (it counts the running ones again).
        let mut active = lock(&self.active);
        lock(&self.tables).attribute(running.client, running.file(), 0, 1);
        active.insert(key_of(exchange), running);
    }

    /// Attributes what running transfers sent since the last flush.
    pub fn flush(&self) {
        let mut active = lock(&self.active);
        let mut tables = lock(&self.tables);
        let mut seen: HashMap<ClientKey, u64> = HashMap::new();
        for running in active.values() {
            *seen.entry(running.client).or_default() += 1;
        }
        for running in active.values_mut() {
            let Some(class) = running.class else { continue };
            let sent = running.exchange.sent.get();
            let delta = sent - running.flushed;
            if delta == 0 {
                continue;
            }
            running.flushed = sent;
            self.site(&running.exchange.site).bytes[class.index()]
                .fetch_add(delta, Ordering::Relaxed);
            tables.attribute(running.client, running.file(), delta, 0);
        }
        for (client, transfers) in seen {
            if let Some(live) = tables.live_entry(client) {
                live.transfers = transfers;
            }
        }
    }

    /// The exchange is over (from `Hook::complete`); returns its class.
    pub fn finish(&self, exchange: &Exchange, completion: &Completion) -> RequestClass {
        let class = RequestClass::classify(exchange, completion.status, completion.body_bytes);
        let running = lock(&self.active).remove(&key_of(exchange));
        // Bodyless answers (`304`, `HEAD`) and bodies handed over in one
        // write were never registered; a registered one's request was
        // counted in the top tables when it began.
        let (remainder, started) = match &running {
            Some(r) => (r.exchange.sent.get() - r.flushed, 0),
            None => (completion.body_bytes, 1),
        };
        let file = exchange.file.as_ref().map(|_| exchange.target.path());
        // Bytes flushed earlier stay under the provisional class, which for
        // a file body over 512 bytes is the final one.
        let counters = self.site(&exchange.site);
        counters.bytes[class.index()].fetch_add(remainder, Ordering::Relaxed);
        counters.requests[class.index()].fetch_add(1, Ordering::Relaxed);
        if class == RequestClass::NotFound && RequestClass::is_cdiff_target(exchange) {
            self.cdiff_not_found.fetch_add(1, Ordering::Relaxed);
        }
        if class == RequestClass::NotFound && RequestClass::is_sign_target(exchange) {
            self.sign_not_found.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.codes)
            .entry((
                Arc::clone(&exchange.site),
                class,
                completion.status.as_u16(),
            ))
            .or_default() += 1;
        self.durations[class.index()].observe(completion.duration.as_secs_f64());

        let client = client::key(&self.grouping, exchange.client);
        let minute = unix_minute(exchange.received);
        let mut tables = lock(&self.tables);
        tables.attribute(client, file, remainder, started);
        if let Some(d) = tables.distinct.as_mut() {
            d.insert(minute, &client);
        }
        if class == RequestClass::Refused
            && let Some(d) = tables.refused.as_mut()
        {
            d.insert(minute, &client);
        }
        class
    }

    /// Lifetime counters per site (flush first for to-the-byte totals).
    pub fn sites(&self) -> Vec<(Arc<str>, Arc<ClassCounters>)> {
        self.sites
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect()
    }

    /// Lifetime requests by site, class and status.
    pub fn codes(&self) -> CodeCounts {
        lock(&self.codes).clone()
    }

    /// Lifetime `404`s for cdiffs.
    pub fn cdiff_not_found(&self) -> u64 {
        self.cdiff_not_found.load(Ordering::Relaxed)
    }

    /// Lifetime `404`s for `.sign` files.
    pub fn sign_not_found(&self) -> u64 {
        self.sign_not_found.load(Ordering::Relaxed)
    }

    /// Duration histogram per class, indexed by [`RequestClass::index`].
    pub fn durations(&self) -> &[Histogram; RequestClass::COUNT] {
        &self.durations
    }

    /// Transfers running now.
    pub fn active_transfers(&self) -> usize {
        lock(&self.active).len()
    }

    /// Per-client bytes since the previous call, with running transfers.
    pub fn take_live_clients(&self) -> HashMap<ClientKey, LiveClient> {
        std::mem::take(&mut lock(&self.tables).live)
    }

    /// Top `n` clients and files by bytes since the reset, with the
    /// transfers of each running now.
    pub fn top(&self, n: usize) -> Top {
        let active = lock(&self.active);
        let mut clients: HashMap<ClientKey, u64> = HashMap::new();
        let mut files: HashMap<&str, u64> = HashMap::new();
        for running in active.values() {
            *clients.entry(running.client).or_default() += 1;
            if let Some(file) = running.file() {
                *files.entry(file).or_default() += 1;
            }
        }
        let tables = lock(&self.tables);
        Top {
            clients: tables.clients.as_ref().map_or_else(Vec::new, |t| {
                t.top(n)
                    .into_iter()
                    .map(|(key, usage)| TopRow {
                        running: clients.get(&key).copied().unwrap_or(0),
                        key,
                        usage,
                    })
                    .collect()
            }),
            files: tables.files.as_ref().map_or_else(Vec::new, |t| {
                t.top(n)
                    .into_iter()
                    .map(|(key, usage)| TopRow {
                        running: files.get(&*key).copied().unwrap_or(0),
                        key,
                        usage,
                    })
                    .collect()
            }),
        }
    }

    /// Distinct clients (all, refused) seen since the unix minute `since`.
    pub fn distinct_clients_since(&self, since: SystemTime) -> (u64, u64) {
        let since = unix_minute(since);
        let tables = lock(&self.tables);
        (
            tables
                .distinct
                .as_ref()
                .map_or(0, |d| d.estimate_since(since)),
            tables
                .refused
                .as_ref()
                .map_or(0, |d| d.estimate_since(since)),
        )
    }

    /// Counters since the last reset.
    pub fn since_reset(&self) -> SinceReset {
        self.flush();
        let baseline = lock(&self.baseline).clone();
        let zero = ([0; RequestClass::COUNT], [0; RequestClass::COUNT]);
        let sites = self
            .sites()
            .into_iter()
            .map(|(name, counters)| {
                let (bytes, requests) = counters.load();
                let (b0, r0) = baseline.sites.get(&name).copied().unwrap_or(zero);
                let bytes = std::array::from_fn(|i| bytes[i].saturating_sub(b0[i]));
                let requests = std::array::from_fn(|i| requests[i].saturating_sub(r0[i]));
                (name, bytes, requests)
            })
            .collect();
        let codes = self
            .codes()
            .into_iter()
            .map(|(k, n)| {
                let before = baseline.codes.get(&k).copied().unwrap_or(0);
                (k, n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        SinceReset {
            at: baseline.at,
            sites,
            codes,
            cdiff_not_found: self
                .cdiff_not_found()
                .saturating_sub(baseline.cdiff_not_found),
            sign_not_found: self
                .sign_not_found()
                .saturating_sub(baseline.sign_not_found),
        }
    }

    /// Starts the status page's counters afresh (Prometheus counters stay
    /// monotonic).
    pub fn reset(&self) {
        self.flush();
        let sites = self
            .sites()
            .into_iter()
            .map(|(name, c)| (name, c.load()))
            .collect();
        *lock(&self.baseline) = Baseline {
            at: Some(SystemTime::now()),
            sites,
            codes: self.codes(),
            cdiff_not_found: self.cdiff_not_found(),
            sign_not_found: self.sign_not_found(),
        };
        let active = lock(&self.active);
        let mut guard = lock(&self.tables);
        let tables = &mut *guard;
        for t in [&mut tables.distinct, &mut tables.refused]
            .into_iter()
            .flatten()
        {
            t.clear();
        }
        if let Some(t) = tables.clients.as_mut() {
            t.clear();
        }
        if let Some(t) = tables.files.as_mut() {
            t.clear();
        }
        // Transfers running across the reset count as requests of the new
        // period: their bytes from now on will.
        for running in active.values() {
            if let Some(t) = tables.clients.as_mut() {
                t.add_n(&running.client, 1, 0);
            }
            if let (Some(t), Some(file)) = (tables.files.as_mut(), running.file()) {
                t.add_n(file, 1, 0);
            }
        }
    }
}

impl Tables {
    fn attribute(&mut self, client: ClientKey, file: Option<&str>, bytes: u64, requests: u64) {
        if let Some(t) = self.clients.as_mut() {
            t.add_n(&client, requests, bytes);
        }
        if let (Some(t), Some(file)) = (self.files.as_mut(), file) {
            t.add_n(file, requests, bytes);
        }
        if let Some(live) = self.live_entry(client) {
            live.bytes += bytes;
        }
    }

    fn live_entry(&mut self, client: ClientKey) -> Option<&mut LiveClient> {
        // Bounded: past the cap, new clients still count everywhere else.
        if self.live.len() >= LIVE_CLIENTS_CAP && !self.live.contains_key(&client) {
            return None;
        }
        Some(self.live.entry(client).or_default())
    }
}

/// One row of a top table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow<K> {
    /// The client or file.
    pub key: K,
    /// Bytes sent and requests started since the reset.
    pub usage: Counter,
    /// Of those requests, transfers running now.
    pub running: u64,
}

/// Top tables.
#[derive(Debug, Default)]
pub struct Top {
    /// Heaviest clients.
    pub clients: Vec<TopRow<ClientKey>>,
    /// Heaviest files (site-relative paths).
    pub files: Vec<TopRow<Arc<str>>>,
}

/// Counters since the last reset.
#[derive(Debug, Clone)]
pub struct SinceReset {
    /// When the reset happened (server start if never).
    pub at: Option<SystemTime>,
    /// Per site: bytes and requests per class.
    pub sites: Vec<(
        Arc<str>,
        [u64; RequestClass::COUNT],
        [u64; RequestClass::COUNT],
    )>,
    /// Requests by site, class and status.
    pub codes: CodeCounts,
    /// `404`s for cdiffs.
    pub cdiff_not_found: u64,
    /// `404`s for `.sign` files.
    pub sign_not_found: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::tests::exchange;
    use cvdmirror_formats::FileKind;
    use http::StatusCode;
    use std::time::Duration;

    fn done(status: u16, bytes: u64) -> Completion {
        Completion {
            status: StatusCode::from_u16(status).unwrap(),
            body_bytes: bytes,
            finished: true,
            duration: Duration::from_millis(3),
        }
    }

    #[tokio::test]
    async fn bytes_count_while_sent_and_totals_are_exact() {
        let traffic = Traffic::new();
        let cvd = Arc::new(exchange("192.0.2.1:5", "/daily.cvd", Some(FileKind::Cvd)));
        traffic.begin(&cvd, Some(1_000_000));
        cvd.sent.add(300_000);
        traffic.flush();
        let live = traffic.take_live_clients();
        let who = client::key(&Grouping::default(), "192.0.2.1".parse().unwrap());
        assert_eq!(
            live[&who],
            LiveClient {
                bytes: 300_000,
                transfers: 1
            }
        );
        let now = traffic.since_reset();
        assert_eq!(now.sites[0].1[RequestClass::Cvd.index()], 300_000);
        assert_eq!(now.sites[0].2[RequestClass::Cvd.index()], 0);
        assert_eq!(traffic.active_transfers(), 1);
        cvd.sent.add(700_000);
        assert_eq!(
            traffic.finish(&cvd, &done(200, 1_000_000)),
            RequestClass::Cvd
        );
        let check = Arc::new(exchange("192.0.2.2:5", "/daily.cvd", Some(FileKind::Cvd)));
        traffic.begin(&check, Some(512));
        check.sent.add(512);
        traffic.finish(&check, &done(206, 512));
        let now = traffic.since_reset();
        let (_, bytes, requests) = &now.sites[0];
        assert_eq!(bytes[RequestClass::Cvd.index()], 1_000_000);
        assert_eq!(requests[RequestClass::Cvd.index()], 1);
        assert_eq!(bytes[RequestClass::Check.index()], 512);
        assert_eq!(traffic.active_transfers(), 0);
        let top = traffic.top(5);
        assert_eq!(top.clients[0].usage.bytes, 1_000_000);
        assert_eq!(&*top.files[0].key, "/daily.cvd");
        assert_eq!(top.files[0].usage.requests, 2);

        traffic.reset();
        let after = traffic.since_reset();
        assert!(after.sites[0].1.iter().all(|&b| b == 0));
        assert!(after.codes.is_empty());
        assert!(traffic.top(5).clients.is_empty());
        // Lifetime counters stay monotonic for Prometheus.
        assert_eq!(
            traffic.sites()[0].1.load().0[RequestClass::Cvd.index()],
            1_000_000
        );
    }

    /// A client whose only request is a download still running has a
    /// request beside its bytes, and the download shows as running; once
    /// it ends it is not counted again. A reset during the download counts
    /// it in the new period.
    #[tokio::test]
    async fn a_running_download_counts_as_a_request() {
        let traffic = Traffic::new();
        let who = client::key(&Grouping::default(), "2001:db8::7".parse().unwrap());
        let cvd = Arc::new(exchange(
            "[2001:db8::7]:5",
            "/daily.cvd",
            Some(FileKind::Cvd),
        ));
        traffic.begin(&cvd, Some(5_800_000));
        cvd.sent.add(2_000_000);
        traffic.flush();
        let row = |traffic: &Traffic| {
            let top = traffic.top(5);
            let file = top.files[0].clone();
            assert_eq!(top.clients[0].key, who);
            (top.clients[0].clone(), file)
        };
        let (client, file) = row(&traffic);
        assert_eq!(
            (client.usage.bytes, client.usage.requests, client.running),
            (2_000_000, 1, 1)
        );
        assert_eq!((file.usage.requests, file.running), (1, 1));

        traffic.reset();
        cvd.sent.add(3_800_000);
        traffic.flush();
        let (client, _) = row(&traffic);
        assert_eq!(
            (client.usage.bytes, client.usage.requests, client.running),
            (3_800_000, 1, 1),
            "counted again in the new period"
        );

        traffic.finish(&cvd, &done(200, 5_800_000));
        let (client, file) = row(&traffic);
        assert_eq!(
            (client.usage.bytes, client.usage.requests, client.running),
            (3_800_000, 1, 0)
        );
        assert_eq!((file.usage.requests, file.running), (1, 0));
        // The class counters count it once, when it ends.
        let cvds = traffic.sites()[0].1.load().1[RequestClass::Cvd.index()];
        assert_eq!(cvds, 1);
    }

    #[tokio::test]
    async fn cdiff_404s_and_refusals_are_counted() {
        let traffic = Traffic::new();
        let missing = Arc::new(exchange("[2001:db8::1]:5", "/daily-9.cdiff", None));
        traffic.begin(&missing, Some(14));
        traffic.finish(&missing, &done(404, 14));
        let refused = Arc::new(exchange("192.0.2.9:5", "/daily.cvd", Some(FileKind::Cvd)));
        traffic.begin(&refused, Some(20));
        traffic.finish(&refused, &done(429, 20));
        let unsigned = Arc::new(exchange("192.0.2.9:5", "/daily-9.cdiff.sign", None));
        traffic.begin(&unsigned, Some(14));
        traffic.finish(&unsigned, &done(404, 14));
        assert_eq!(
            traffic.cdiff_not_found(),
            1,
            "a .sign 404 is no missing patch"
        );
        assert_eq!(traffic.sign_not_found(), 1);
        assert_eq!(traffic.since_reset().sign_not_found, 1);
        let (all, refused) = traffic.distinct_clients_since(UNIX_EPOCH);
        assert_eq!((all, refused), (2, 1));
    }
}
