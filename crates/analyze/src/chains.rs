//! Detects the herd's signature: a client asks for a patch
//! (`daily-27654.cdiff`), gets `404` (freshclam retries three times), and
//! then downloads the whole database (`GET /daily.cvd` → `200`). One such
//! sequence is a *fallback chain*; it turns tens of KB into 60 MB per client,
//! and hundreds of them saturate a link.
//!
//! The link is made by the client's own sequence of requests, not by a
//! clock: a streak of 404s stays open until the client's next whole
//! download of that database (a chain, however long the download took: on
//! a saturated link 5–40 minutes, logged at completion by nginx), a served
//! patch at least as new (no chain), or its next unrelated check of that
//! database (a `304`, a small `206` or a `HEAD`: a new update cycle, no
//! chain). A streak left open for [`STREAK_MAX_SECS`] is forgotten. An
//! optional window (`--chain-window`) caps the time from the last 404 to the
//! download's start as the log states it.
//!
//! A client is its address plus freshclam's installation UUID when the
//! User-Agent carries one, so clients behind one NAT address are told apart.
//! Chains are matched in each client's log order, which is right when a
//! client's lines come from one server's log (each server logs in order).
//!
//! Bounds: open 404 streaks live in a table of at most `pending_cap` entries
//! (streaks older than the window, or [`STREAK_MAX_SECS`], are purged; when
//! still full, new streaks are dropped and counted). Clients that completed
//! a chain live in a table of at most `clients_cap` entries, each keeping
//! its first three chains and its latest; chains of clients beyond the cap
//! are counted but not attributed, and the report then says "at least".

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Chains kept per client (the first three and the latest).
const EVENTS_PER_CLIENT: usize = 4;
/// Distinct file names remembered for attribution.
const NAMES_CAP: usize = 4096;
/// Longest a 404 streak waits for its download without a window: far
/// beyond any transfer (60 MB at 5 kB/s is under four hours), short enough
/// that last week's streak does not meet today's download.
pub const STREAK_MAX_SECS: i64 = 24 * 3600;
/// A download stamped this long before its streak's first 404 (read from
/// another server's log first) is not that streak's.
const BEFORE_TOLERANCE_SECS: i64 = 2;

/// Tuning and bounds of the detector.
#[derive(Debug, Clone, Copy)]
pub struct ChainLimits {
    /// Longest gap from the last 404 to the whole download's start, in
    /// seconds; `None`: the client's next download, whenever it comes.
    pub window_secs: Option<i64>,
    /// Most open 404 streaks held.
    pub pending_cap: usize,
    /// Most fallback clients held.
    pub clients_cap: usize,
}

/// A client's identity: hash of address and UUID.
pub type ClientKey = u64;

/// A map keyed by client digests (and small numbers): the keys are hashes
/// already, so [`KeyHasher`]'s one multiplication is all the table needs
/// (these maps are consulted on most lines).
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// The hasher of [`KeyMap`]: multiplicative mixing of integer keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The identity of the client at `host` with freshclam UUID `uuid`.
pub fn client_key(host: &[u8], uuid: Option<&[u8]>) -> ClientKey {
    let mut h = DefaultHasher::new();
    host.hash(&mut h);
    uuid.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    first_miss: i64,
    last_miss: i64,
    patch: u32,
    version: u32,
}

/// One completed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// When the whole download started (UTC seconds) if the log's stamps
    /// mark arrivals / completions (see [`super::stamps::Stamp`]).
    pub start: [i64; 2],
    /// When the first 404 of the streak happened.
    pub first_miss: i64,
    /// Interned name of the first missing patch.
    pub patch: u32,
    /// Interned name of the whole database downloaded.
    pub file: u32,
    /// Bytes of that download (less than the full size if aborted).
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
struct Client {
    host: String,
    chains: u64,
    events: Vec<Chain>,
}

/// The fallback-chain detector.
#[derive(Debug, Clone)]
pub struct Chains {
    limits: ChainLimits,
    pending: KeyMap<(ClientKey, u32), Pending>,
    clients: KeyMap<ClientKey, Client>,
    names: Vec<String>,
    ids: HashMap<String, u32>,
    latest: i64,
    inserts_since_purge: usize,
    /// Every chain seen, attributed or not.
    pub total_chains: u64,
    /// Bytes of every chain's whole download.
    pub total_bytes: u64,
    /// Chains of clients beyond `clients_cap` (not attributed).
    pub untracked_chains: u64,
    /// 404 streaks dropped because the pending table was full.
    pub dropped_streaks: u64,
}

impl Chains {
    /// An empty detector.
    pub fn new(limits: ChainLimits) -> Self {
        Self {
            limits,
            pending: KeyMap::default(),
            clients: KeyMap::default(),
            names: Vec::new(),
            ids: HashMap::new(),
            latest: i64::MIN,
            inserts_since_purge: 0,
            total_chains: 0,
            total_bytes: 0,
            untracked_chains: 0,
            dropped_streaks: 0,
        }
    }

    /// The interned id of a file name (names beyond the cap share one id).
    pub fn intern(&mut self, name: &[u8]) -> u32 {
        let text = String::from_utf8_lossy(name);
        if let Some(&id) = self.ids.get(text.as_ref()) {
            return id;
        }
        if self.names.len() >= NAMES_CAP {
            return self.intern_overflow();
        }
        let id = self.names.len() as u32;
        self.names.push(text.clone().into_owned());
        self.ids.insert(text.into_owned(), id);
        id
    }

    fn intern_overflow(&mut self) -> u32 {
        const OTHER: &str = "(other files)";
        if let Some(&id) = self.ids.get(OTHER) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(OTHER.into());
        self.ids.insert(OTHER.into(), id);
        id
    }

    /// The name behind an interned id.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// A `404` for patch number `version` of database `db` (interned),
    /// named `patch` (interned).
    pub fn miss(&mut self, client: ClientKey, db: u32, patch: u32, version: u32, t: i64) {
        self.latest = self.latest.max(t);
        let horizon = self.horizon();
        if let Some(p) = self.pending.get_mut(&(client, db)) {
            if t - p.last_miss <= horizon {
                p.last_miss = p.last_miss.max(t);
                return;
            }
            *p = Pending {
                first_miss: t,
                last_miss: t,
                patch,
                version,
            };
            return;
        }
        if self.pending.len() >= self.limits.pending_cap && !self.purge() {
            self.dropped_streaks += 1;
            return;
        }
        self.inserts_since_purge += 1;
        self.pending.insert(
            (client, db),
            Pending {
                first_miss: t,
                last_miss: t,
                patch,
                version,
            },
        );
    }

    /// Drops expired streaks; false when the table is still full. Purges at
    /// most once per `cap / 8` inserts so a flood costs amortised O(1).
    fn purge(&mut self) -> bool {
        if self.inserts_since_purge >= self.limits.pending_cap / 8 {
            self.inserts_since_purge = 0;
            let horizon = self.latest.saturating_sub(self.horizon());
            self.pending.retain(|_, p| p.last_miss >= horizon);
        }
        self.pending.len() < self.limits.pending_cap
    }

    /// How long a streak stays open without news.
    fn horizon(&self) -> i64 {
        self.limits.window_secs.unwrap_or(STREAK_MAX_SECS)
    }

    /// Whether any 404 streak is open (a check can end one).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `client` checked whether `db` changed (a `304`, a small `206`, a
    /// `HEAD`): a new update cycle, so an open streak ends without a chain.
    pub fn check(&mut self, client: ClientKey, db: u32) {
        if !self.pending.is_empty() {
            self.pending.remove(&(client, db));
        }
    }

    /// Patch number `version` of `db` was served (`200`): if it is the one
    /// that was missing (or a later one), the client is not falling back.
    /// An earlier patch (fetched on the way) changes nothing.
    pub fn patched(&mut self, client: ClientKey, db: u32, version: u32) {
        if self
            .pending
            .get(&(client, db))
            .is_some_and(|p| version >= p.version)
        {
            self.pending.remove(&(client, db));
        }
    }

    /// A `200` for the whole database `db` (file `file`), of `bytes`,
    /// stamped `stamp`, starting at `start` under each stamp meaning; for the
    /// window, it started at `window_start` as the log states it. Returns
    /// the chain it completes, if any.
    #[allow(clippy::too_many_arguments, reason = "one call site, named fields")]
    pub fn whole(
        &mut self,
        client: ClientKey,
        host: &[u8],
        db: u32,
        file: u32,
        stamp: i64,
        start: [i64; 2],
        window_start: i64,
        bytes: u64,
    ) -> Option<Chain> {
        self.latest = self.latest.max(stamp);
        let p = self.pending.get(&(client, db)).copied()?;
        if stamp < p.first_miss - BEFORE_TOLERANCE_SECS {
            return None;
        }
        if window_start - p.last_miss > self.horizon() {
            if self.limits.window_secs.is_none() {
                self.pending.remove(&(client, db));
            }
            return None;
        }
        self.pending.remove(&(client, db));
        self.total_chains += 1;
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        let chain = Chain {
            start,
            first_miss: p.first_miss,
            patch: p.patch,
            file,
            bytes,
        };
        let full = self.clients.len() >= self.limits.clients_cap;
        match self.clients.get_mut(&client) {
            Some(c) => record(c, chain),
            None if full => self.untracked_chains += 1,
            None => {
                let mut c = Client {
                    host: String::from_utf8_lossy(host).into_owned(),
                    ..Client::default()
                };
                record(&mut c, chain);
                self.clients.insert(client, c);
            }
        }
        Some(chain)
    }

    /// Sizes of the internal tables: (pending streaks, fallback clients).
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.pending.len(), self.clients.len())
    }

    /// Limits in force.
    pub fn limits(&self) -> ChainLimits {
        self.limits
    }

    /// Distinct clients with at least one attributed chain.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Every remembered chain with its client's identity.
    pub fn each(&self) -> impl Iterator<Item = (ClientKey, &Chain)> {
        self.clients
            .iter()
            .flat_map(|(&k, c)| c.events.iter().map(move |e| (k, e)))
    }

    /// (address, chains, bytes) of the clients with most chains.
    pub fn top_clients(&self, n: usize) -> Vec<(String, u64, u64)> {
        let mut v: Vec<(String, u64, u64)> = self
            .clients
            .values()
            .map(|c| {
                (
                    c.host.clone(),
                    c.chains,
                    c.events.iter().map(|e| e.bytes).sum(),
                )
            })
            .collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

fn record(c: &mut Client, chain: Chain) {
    c.chains += 1;
    if c.events.len() < EVENTS_PER_CLIENT {
        c.events.push(chain);
    } else if let Some(last) = c.events.last_mut() {
        *last = chain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(window_secs: Option<i64>) -> ChainLimits {
        ChainLimits {
            window_secs,
            pending_cap: 8,
            clients_cap: 4,
        }
    }

    fn whole(c: &mut Chains, k: ClientKey, t: i64) -> bool {
        c.whole(k, b"h", 0, 2, t, [t, t], t, 60_000_000).is_some()
    }

    #[test]
    fn miss_miss_miss_then_whole_is_one_chain() {
        let mut c = Chains::new(limits(None));
        let (db, patch, file) = (
            c.intern(b"daily"),
            c.intern(b"daily-27654.cdiff"),
            c.intern(b"daily.cvd"),
        );
        let k = client_key(b"192.0.2.1", None);
        for t in [100, 100, 101] {
            c.miss(k, db, patch, 27654, t);
        }
        let chain = c.whole(k, b"192.0.2.1", db, file, 103, [103, 103], 103, 60_000_000);
        assert_eq!(chain.map(|c| (c.first_miss, c.patch)), Some((100, patch)));
        assert!(!whole(&mut c, k, 200), "one chain per streak");
        assert_eq!((c.total_chains, c.clients()), (1, 1));
    }

    #[test]
    fn the_clients_next_download_whenever_it_comes() {
        let mut c = Chains::new(limits(None));
        let k = client_key(b"h", None);
        // Logged at completion, 40 minutes after the 404s.
        c.miss(k, 0, 1, 5, 100);
        assert!(whole(&mut c, k, 100 + 2400));
        // Not after the client's next check of the database.
        c.miss(k, 0, 1, 5, 5000);
        c.check(k, 0);
        assert!(!whole(&mut c, k, 5100));
        // Nor a day later.
        c.miss(k, 0, 1, 5, 10_000);
        assert!(!whole(&mut c, k, 10_000 + STREAK_MAX_SECS + 1));
        // Nor a download stamped before the 404 (another server's log).
        c.miss(k, 0, 1, 5, 200_000);
        assert!(!whole(&mut c, k, 199_000));
        assert!(whole(&mut c, k, 200_001), "the streak is still open");
    }

    #[test]
    fn a_window_caps_and_a_served_patch_ends() {
        let mut c = Chains::new(limits(Some(600)));
        let k = client_key(b"h", None);
        c.miss(k, 0, 1, 5, 100);
        assert!(!whole(&mut c, k, 100 + 601));
        c.miss(k, 0, 1, 5, 1000);
        c.patched(k, 0, 4);
        assert!(whole(&mut c, k, 1001), "an older patch does not help");
        c.miss(k, 0, 1, 5, 2000);
        c.patched(k, 0, 5);
        assert!(!whole(&mut c, k, 2001));
    }

    #[test]
    fn tables_stay_bounded() {
        let mut c = Chains::new(limits(None));
        for i in 0..1000i64 {
            let k = client_key(&i.to_le_bytes(), None);
            c.miss(k, 0, 1, 5, i);
            whole(&mut c, k, i + 1);
            let (p, cl) = c.table_sizes();
            assert!(p <= 8 && cl <= 4);
        }
        assert_eq!(c.total_chains, c.untracked_chains + 4);
    }
}
