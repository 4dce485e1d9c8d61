//! ClamAV 1.5's detached signatures in the logs: how many `.sign` requests
//! there were, how many the mirror could not answer, and whether they came
//! as a 1.5 client sends them, right after the file they sign.
//!
//! freshclam 1.5 downloads `daily.cvd`, reads the version from its header and
//! then asks for `daily-<version>.cvd.sign`; after each `daily-N.cdiff` it
//! asks for `daily-N.cdiff.sign`; and a client whose local CVD is current but
//! has no `.sign` beside it asks for that `.sign` alone. A `.sign` request
//! that follows (within the chain window) the same client's download of the
//! CVD or patch it signs is a *follow-up*; any other is *standalone*.
//!
//! A `404` for a `.sign` is harmless to a normal client (it falls back to the
//! signature in the file), but a client with `FIPSCryptoHashLimits yes`
//! cannot update a CVD without a valid `.sign`. It is never a missing patch:
//! the fallback-chain detector never sees it (see
//! [`classify::cdiff`](super::classify::cdiff)).
//!
//! Bounds: the recent downloads a `.sign` can follow live in a table of at
//! most `cap` entries (expired ones purged when it is full; beyond that new
//! ones are not remembered and their follow-ups count as standalone, counted
//! in `dropped`); each set of distinct clients holds at most `cap` clients
//! and then reports "at least".

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use super::chains::ClientKey;
use super::classify::{SignName, Signed};
use super::topk::{Rank, TopK};

/// `.sign` files that got `404`, remembered for the report.
const MISSING_CAP: usize = 64;

/// A bounded set of distinct clients: exact up to `cap`, then a lower bound.
#[derive(Debug, Clone)]
pub struct ClientSet {
    set: HashSet<ClientKey>,
    cap: usize,
    full: bool,
}

impl ClientSet {
    /// A set that holds at most `cap` clients.
    pub fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            cap: cap.max(1),
            full: false,
        }
    }

    /// Adds `client` (forgotten, and the count marked "at least", when full).
    pub fn insert(&mut self, client: ClientKey) {
        if self.set.len() < self.cap {
            self.set.insert(client);
        } else if !self.set.contains(&client) {
            self.full = true;
        }
    }

    /// Distinct clients held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no client was added.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether a client was turned away: [`ClientSet::len`] is a lower bound.
    pub fn at_least(&self) -> bool {
        self.full
    }
}

/// A client's latest download of one database's CVD and patch.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    /// (start, end) of the last whole CVD download.
    cvd: Option<(i64, i64)>,
    /// (patch number, start, end) of the last patch served.
    cdiff: Option<(u32, i64, i64)>,
}

impl Recent {
    fn latest(&self) -> i64 {
        let cvd = self.cvd.map_or(i64::MIN, |c| c.1);
        let cdiff = self.cdiff.map_or(i64::MIN, |c| c.2);
        cvd.max(cdiff)
    }
}

/// How a `.sign` request relates to the client's downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// It followed the same client's download of the CVD it signs.
    AfterCvd,
    /// It followed the same client's download of the patch it signs.
    AfterCdiff,
    /// Anything else (a client fetching a missing `.sign` for the CVD it
    /// already has, or a name not in ClamAV's naming).
    Standalone,
}

/// The `.sign` tally.
#[derive(Debug, Clone)]
pub struct Signs {
    window: i64,
    cap: usize,
    recent: HashMap<u64, Recent>,
    latest: i64,
    inserts_since_purge: usize,
    clients: ClientSet,
    missing_clients: ClientSet,
    chain_clients: ClientSet,
    missing: TopK<String>,
    /// `.sign` requests.
    pub requests: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// Of which answered `404`.
    pub not_found: u64,
    /// Follow-ups of a whole CVD download.
    pub after_cvd: u64,
    /// Follow-ups of a patch.
    pub after_cdiff: u64,
    /// The others.
    pub standalone: u64,
    /// Downloads not remembered because the table was full.
    pub dropped: u64,
}

fn recent_key(client: ClientKey, db: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    client.hash(&mut h);
    db.hash(&mut h);
    h.finish()
}

impl Signs {
    /// A tally matching follow-ups within `window_secs` of the download's
    /// end, holding at most `cap` downloads and `cap` clients per set.
    pub fn new(window_secs: i64, cap: usize) -> Self {
        Self {
            window: window_secs,
            cap: cap.max(1),
            recent: HashMap::new(),
            latest: i64::MIN,
            inserts_since_purge: 0,
            clients: ClientSet::new(cap),
            missing_clients: ClientSet::new(cap),
            chain_clients: ClientSet::new(cap),
            missing: TopK::new(MISSING_CAP, Rank::Requests),
            requests: 0,
            bytes: 0,
            not_found: 0,
            after_cvd: 0,
            after_cdiff: 0,
            standalone: 0,
            dropped: 0,
        }
    }

    /// `client` downloaded the whole CVD of `db` from `start` to `end`.
    pub fn whole(&mut self, client: ClientKey, db: &[u8], start: i64, end: i64) {
        if let Some(r) = self.slot(client, db, end) {
            r.cvd = Some((start, end));
        }
    }

    /// `client` was served patch `n` of `db` from `start` to `end`.
    pub fn patch(&mut self, client: ClientKey, db: &[u8], n: u32, start: i64, end: i64) {
        if let Some(r) = self.slot(client, db, end) {
            r.cdiff = Some((n, start, end));
        }
    }

    fn slot(&mut self, client: ClientKey, db: &[u8], end: i64) -> Option<&mut Recent> {
        self.latest = self.latest.max(end);
        let key = recent_key(client, db);
        if !self.recent.contains_key(&key) {
            if self.recent.len() >= self.cap && !self.purge() {
                self.dropped += 1;
                return None;
            }
            self.inserts_since_purge += 1;
        }
        Some(self.recent.entry(key).or_default())
    }

    /// Drops downloads too old to be followed; false when still full. At
    /// most once per `cap / 8` inserts, so a flood costs amortised O(1).
    fn purge(&mut self) -> bool {
        if self.inserts_since_purge >= self.cap / 8 {
            self.inserts_since_purge = 0;
            let horizon = self.latest.saturating_sub(self.window);
            self.recent.retain(|_, r| r.latest() >= horizon);
        }
        self.recent.len() < self.cap
    }

    /// A request by `client` at `t` for the `.sign` file `file` (taken apart
    /// in `name` when it follows ClamAV's naming), answered `status` with
    /// `bytes`. Returns how it relates to the client's downloads.
    pub fn sign(
        &mut self,
        client: ClientKey,
        file: &str,
        name: Option<SignName<'_>>,
        status: u16,
        bytes: u64,
        t: i64,
    ) -> FollowUp {
        self.requests += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.clients.insert(client);
        if status == 404 {
            self.not_found += 1;
            self.missing_clients.insert(client);
            self.missing.add(file, bytes);
        }
        let recent = name.and_then(|n| self.recent.get(&recent_key(client, n.db)).map(|r| (n, *r)));
        let within = |start: i64, end: i64| t >= start && t <= end.saturating_add(self.window);
        let follow = match recent {
            Some((n, r)) if n.signed == Signed::Cvd && r.cvd.is_some_and(|(s, e)| within(s, e)) => {
                FollowUp::AfterCvd
            }
            Some((n, r))
                if n.signed == Signed::Cdiff
                    && r.cdiff
                        .is_some_and(|(p, s, e)| p == n.version && within(s, e)) =>
            {
                FollowUp::AfterCdiff
            }
            _ => FollowUp::Standalone,
        };
        match follow {
            FollowUp::AfterCvd => self.after_cvd += 1,
            FollowUp::AfterCdiff => self.after_cdiff += 1,
            FollowUp::Standalone => self.standalone += 1,
        }
        if follow != FollowUp::Standalone {
            self.chain_clients.insert(client);
        }
        follow
    }

    /// Distinct clients that asked for a `.sign`.
    pub fn clients(&self) -> &ClientSet {
        &self.clients
    }

    /// Distinct clients that got a `404` for one.
    pub fn missing_clients(&self) -> &ClientSet {
        &self.missing_clients
    }

    /// Distinct clients that asked for one right after the file it signs.
    pub fn chain_clients(&self) -> &ClientSet {
        &self.chain_clients
    }

    /// The `.sign` files answered `404` most often: (file, requests), most
    /// first, then by name.
    pub fn missing(&self, n: usize) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self
            .missing
            .top(MISSING_CAP)
            .into_iter()
            .map(|(f, c)| (f, c.requests))
            .collect();
        rows.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(n);
        rows
    }

    /// Sizes of the bounded tables: (remembered downloads, largest client set).
    pub fn table_sizes(&self) -> (usize, usize) {
        let clients = self
            .clients
            .len()
            .max(self.missing_clients.len())
            .max(self.chain_clients.len());
        (self.recent.len(), clients)
    }

    /// The bound of each table.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The follow-up window in seconds.
    pub fn window_secs(&self) -> i64 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::client_key;
    use crate::classify::sign;

    fn ask(s: &mut Signs, client: ClientKey, file: &str, status: u16, t: i64) -> FollowUp {
        s.sign(client, file, sign(file.as_bytes()), status, 100, t)
    }

    #[test]
    fn a_sign_after_its_cvd_or_patch_is_a_follow_up() {
        let mut s = Signs::new(600, 100);
        let a = client_key(b"192.0.2.1", Some(b"a"));
        s.whole(a, b"daily", 100, 160);
        // The version in the name comes from the CVD header: any one matches.
        assert_eq!(
            ask(&mut s, a, "daily-27780.cvd.sign", 404, 161),
            FollowUp::AfterCvd
        );
        s.patch(a, b"daily", 27781, 200, 201);
        assert_eq!(
            ask(&mut s, a, "daily-27781.cdiff.sign", 200, 201),
            FollowUp::AfterCdiff
        );
        // Another patch's signature, another database, another client.
        assert_eq!(
            ask(&mut s, a, "daily-27782.cdiff.sign", 200, 202),
            FollowUp::Standalone
        );
        assert_eq!(
            ask(&mut s, a, "main-62.cvd.sign", 200, 202),
            FollowUp::Standalone
        );
        let b = client_key(b"192.0.2.1", Some(b"b"));
        assert_eq!(
            ask(&mut s, b, "daily-27780.cvd.sign", 200, 203),
            FollowUp::Standalone
        );
        assert_eq!(
            (
                s.requests,
                s.not_found,
                s.after_cvd,
                s.after_cdiff,
                s.standalone
            ),
            (5, 1, 1, 1, 3)
        );
        assert_eq!(s.clients().len(), 2);
        assert_eq!(s.missing_clients().len(), 1);
        assert_eq!(s.chain_clients().len(), 1);
        assert_eq!(s.missing(5), vec![("daily-27780.cvd.sign".to_owned(), 1)]);
    }

    #[test]
    fn no_follow_up_outside_the_window_or_before_the_download() {
        let mut s = Signs::new(600, 100);
        let a = client_key(b"h", None);
        s.whole(a, b"daily", 1000, 1100);
        assert_eq!(
            ask(&mut s, a, "daily-1.cvd.sign", 200, 999),
            FollowUp::Standalone
        );
        assert_eq!(
            ask(&mut s, a, "daily-1.cvd.sign", 200, 1701),
            FollowUp::Standalone
        );
        assert_eq!(
            ask(&mut s, a, "daily-1.cvd.sign", 200, 1700),
            FollowUp::AfterCvd
        );
    }

    #[test]
    fn tables_stay_bounded() {
        let mut s = Signs::new(10, 16);
        for i in 0..1000i64 {
            let k = client_key(&i.to_le_bytes(), None);
            s.whole(k, b"daily", i, i);
            ask(&mut s, k, "daily-1.cvd.sign", 404, i);
            let (recent, clients) = s.table_sizes();
            assert!(recent <= 16 && clients <= 16, "{recent} {clients}");
        }
        assert!(s.clients().at_least() && s.missing_clients().at_least());
        assert_eq!(s.requests, 1000);
        // Expired downloads were purged, so every follow-up was still seen.
        assert_eq!((s.after_cvd, s.dropped), (1000, 0));
    }
}
