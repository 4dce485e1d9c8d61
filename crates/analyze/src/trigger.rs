//! The cause and its minute: which file the mirror did not have when the
//! herd began, from when to when clients asked for it, how many, and what
//! it cost (the whole downloads that followed) — told apart from when the
//! traffic surged, which on a saturated link is minutes later. The operator
//! of the 16:41 incident could see the surge; what he needed was its cause.
//!
//! Every `404` for a ClamAV patch or database is tallied per file (first and
//! last time, requests, distinct clients); every fallback chain adds its
//! download to the patch that started it. The *trigger* is the missing file
//! whose chains cost most. Alongside, the versions the mirror did serve:
//! patches answered `200`, and the CVD versions ClamAV 1.5 clients named in
//! the `.cvd.sign` they asked for right after downloading a CVD (the version
//! comes from the CVD's header, so it is the version the mirror handed out).
//!
//! Bounds: at most [`FILES_CAP`] missing files (later ones are counted in
//! `dropped`); the distinct clients of all of them share a budget of
//! `client_budget` entries (beyond it counts become "at least"); served
//! versions are kept for [`DBS_CAP`] databases, the newest
//! [`VERSIONS_CAP`] each.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::chains::ClientKey;

/// Missing files tracked.
pub const FILES_CAP: usize = 256;
/// Databases whose served versions are tracked.
pub const DBS_CAP: usize = 16;
/// Versions kept per database (the newest).
pub const VERSIONS_CAP: usize = 256;

/// One file the mirror answered `404` for.
#[derive(Debug, Clone, Default)]
pub struct Missing {
    /// Interned database name.
    pub db: u32,
    /// The patch number, for a `.cdiff`.
    pub version: Option<u32>,
    /// First `404` (UTC seconds, as stamped).
    pub first: i64,
    /// Last `404`.
    pub last: i64,
    /// `404` answers.
    pub requests: u64,
    clients: HashSet<ClientKey>,
    /// True when the client budget ran out: `clients` is a lower bound.
    pub clients_at_least: bool,
    /// Fallback chains that started with this file.
    pub chains: u64,
    /// Bytes of their whole downloads.
    pub chain_bytes: u64,
}

impl Missing {
    /// Distinct clients that got the `404`.
    pub fn clients(&self) -> u64 {
        self.clients.len() as u64
    }
}

/// When one version was served: (first, last, answers).
pub type Seen = (i64, i64, u64);

/// The tally of missing files and served versions.
#[derive(Debug, Clone)]
pub struct Triggers {
    files: HashMap<u32, Missing>,
    client_budget: usize,
    clients_used: usize,
    patches: HashMap<u32, BTreeMap<u32, Seen>>,
    cvds: HashMap<u32, BTreeMap<u32, Seen>>,
    /// `404`s of files beyond [`FILES_CAP`].
    pub dropped: u64,
}

impl Triggers {
    /// An empty tally whose client sets share `client_budget` entries.
    pub fn new(client_budget: usize) -> Self {
        Self {
            files: HashMap::new(),
            client_budget,
            clients_used: 0,
            patches: HashMap::new(),
            cvds: HashMap::new(),
            dropped: 0,
        }
    }

    /// `client` got `404` at `t` for the file interned as `file`, of
    /// database `db` (patch number `version` for a `.cdiff`).
    pub fn miss(&mut self, file: u32, db: u32, version: Option<u32>, client: ClientKey, t: i64) {
        if !self.files.contains_key(&file) && self.files.len() >= FILES_CAP {
            self.dropped += 1;
            return;
        }
        let m = self.files.entry(file).or_insert_with(|| Missing {
            db,
            version,
            first: t,
            last: t,
            ..Missing::default()
        });
        m.first = m.first.min(t);
        m.last = m.last.max(t);
        m.requests += 1;
        if self.clients_used < self.client_budget {
            if m.clients.insert(client) {
                self.clients_used += 1;
            }
        } else if !m.clients.contains(&client) {
            m.clients_at_least = true;
        }
    }

    /// A fallback chain that started with `file` downloaded `bytes`.
    pub fn chain(&mut self, file: u32, bytes: u64) {
        if let Some(m) = self.files.get_mut(&file) {
            m.chains += 1;
            m.chain_bytes = m.chain_bytes.saturating_add(bytes);
        }
    }

    /// Patch `version` of `db` was served (`200`) at `t`.
    pub fn served_patch(&mut self, db: u32, version: u32, t: i64) {
        seen(&mut self.patches, db, version, t);
    }

    /// A client asked for `<db>-<version>.cvd.sign` right after downloading
    /// `db`'s CVD at `t`: the mirror served CVD `version`.
    pub fn served_cvd(&mut self, db: u32, version: u32, t: i64) {
        seen(&mut self.cvds, db, version, t);
    }

    /// Every missing file: (interned name, tally).
    pub fn files(&self) -> impl Iterator<Item = (u32, &Missing)> {
        self.files.iter().map(|(&k, m)| (k, m))
    }

    /// The missing file whose fallback chains cost most (ties: more
    /// clients, then earlier).
    pub fn costliest(&self) -> Option<(u32, &Missing)> {
        self.files().filter(|(_, m)| m.chains > 0).max_by(|a, b| {
            (a.1.chain_bytes, a.1.clients(), -a.1.first)
                .cmp(&(b.1.chain_bytes, b.1.clients(), -b.1.first))
                .then(b.0.cmp(&a.0))
        })
    }

    /// The newest patch of `db` older than `below` that was served at some
    /// time up to `until`: the version the mirror was at.
    pub fn newest_patch(&self, db: u32, below: u32, until: i64) -> Option<(u32, Seen)> {
        self.patches
            .get(&db)?
            .range(..below)
            .rev()
            .find(|(_, s)| s.0 <= until)
            .map(|(&v, &s)| (v, s))
    }

    /// When patch `version` of `db` was served.
    pub fn patch_served(&self, db: u32, version: u32) -> Option<Seen> {
        self.patches.get(&db)?.get(&version).copied()
    }

    /// The CVD version of `db` most often named by `.cvd.sign` requests
    /// that followed a download between `from` and `to`.
    pub fn cvd_between(&self, db: u32, from: i64, to: i64) -> Option<(u32, u64)> {
        self.cvds
            .get(&db)?
            .iter()
            .filter(|(_, s)| s.1 >= from && s.0 <= to)
            .max_by_key(|(v, s)| (s.2, **v))
            .map(|(&v, s)| (v, s.2))
    }

    /// Missing files tracked now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no `404` was seen.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn seen(map: &mut HashMap<u32, BTreeMap<u32, Seen>>, db: u32, version: u32, t: i64) {
    if !map.contains_key(&db) && map.len() >= DBS_CAP {
        return;
    }
    let versions = map.entry(db).or_default();
    let s = versions.entry(version).or_insert((t, t, 0));
    s.0 = s.0.min(t);
    s.1 = s.1.max(t);
    s.2 += 1;
    if versions.len() > VERSIONS_CAP {
        versions.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costliest_missing_file_and_what_was_served() {
        let mut t = Triggers::new(100);
        let (daily, p54, p60, web) = (0, 1, 2, 3);
        for c in 0..10 {
            t.miss(p54, daily, Some(27654), c, 1000 + c as i64);
            t.miss(p54, daily, Some(27654), c, 1000 + c as i64);
            t.chain(p54, 60_000_000);
        }
        t.miss(p60, daily, Some(27660), 99, 900);
        t.miss(web, 9, None, 98, 800);
        t.served_patch(daily, 27653, 500);
        t.served_patch(daily, 27652, 400);
        t.served_patch(daily, 27654, 5000);
        t.served_cvd(daily, 27653, 1100);
        let (file, m) = t.costliest().unwrap();
        assert_eq!(file, p54);
        assert_eq!(
            (m.first, m.last, m.requests, m.clients()),
            (1000, 1009, 20, 10)
        );
        assert_eq!((m.chains, m.chain_bytes), (10, 600_000_000));
        assert_eq!(t.newest_patch(daily, 27654, 1009).map(|v| v.0), Some(27653));
        assert_eq!(t.patch_served(daily, 27654).map(|s| s.0), Some(5000));
        assert_eq!(t.cvd_between(daily, 1000, 1009), None);
        assert_eq!(t.cvd_between(daily, 1000, 2000), Some((27653, 1)));
    }

    #[test]
    fn bounded() {
        let mut t = Triggers::new(10);
        for f in 0..1000u32 {
            for c in 0..5u64 {
                t.miss(f, 0, Some(f), c, 1);
            }
            t.served_patch(f % 40, f, 1);
        }
        assert_eq!(t.len(), FILES_CAP);
        assert_eq!(t.dropped, 5 * (1000 - FILES_CAP as u64));
        assert_eq!(t.files().map(|(_, m)| m.clients()).sum::<u64>(), 10);
        assert!(t.files().any(|(_, m)| m.clients_at_least));
        assert!(t.patches.len() <= DBS_CAP);
    }
}
