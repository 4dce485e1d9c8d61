//! When each transfer happened. A log line carries one time stamp, and
//! servers disagree on what it means: Apache's `%t` and cvdmirror stamp the
//! request's arrival, nginx's `$time_local`, `$msec` and Caddy's `ts` its
//! completion. On a saturated link a 60 MB download lasts 5–40 minutes, so
//! the difference decides which minutes were full, and booking a whole
//! download in the minute it was logged draws a peak the link never carried.
//!
//! So the meaning is detected from the log itself, and every line is placed
//! under both hypotheses (the caller keeps both timelines until the verdict):
//!
//! - **request times** (Apache `%D`/`%T`, nginx `$request_time`, cvdmirror,
//!   JSON `request_time`/`duration`): a freshclam client asks one thing at a
//!   time, so of two consecutive requests of one client the second starts
//!   after the first ends. With stamps at arrival that reads `b ≥ a + da`,
//!   with stamps at completion `b − db ≥ a`; a pair that fits only one of
//!   them is a vote (two seconds' tolerance, as stamps are whole seconds).
//!   The log's order is a second witness: servers write a line when the
//!   response completes, so completion stamps never go backwards in a file,
//!   and arrival stamps plus request times do not either.
//! - **no request times**: a log stamped at arrival but written at
//!   completion shows each long transfer *behind* lines written before it
//!   (its stamp lags the latest stamp by about its duration), while small
//!   requests never lag; a completion-stamped log stays in order however
//!   many large transfers it holds.
//!
//! Durations the log does not record are inferred where it allows: under
//! arrival stamps a lagging line lasted at least its lag (it was written
//! after the latest stamp before it); under completion stamps a transfer
//! started after the same client's previous request, the widest interval a
//! one-thing-at-a-time client allows. Anything else stays unknown and is
//! booked at its stamp, and the report says so.
//!
//! A bare integer request time is Apache's `%D` (microseconds) or `%T`
//! (seconds); large transfers tell which (60 MB in 40 µs is no transfer),
//! decided per input.
//!
//! Bounds: the last request of at most `cap` clients is remembered, in 12
//! bytes each (a 32-bit digest of the client, whose rare collisions only
//! mix two clients' sequences; the stamp relative to the first one; the
//! request time). Entries older than [`MAX_SPREAD_SECS`] are purged when it
//! is full, at most once per `cap / 8` new clients; if that is not enough
//! the table is cleared and counted in `resets`. Plus a few numbers per
//! input.

use std::collections::hash_map::Entry;

use super::chains::{ClientKey, KeyMap};
use super::parse::RequestTime;
use super::timeline::MAX_SPREAD_SECS;

/// Transfers at least this large are the ones whose timing matters.
pub const LARGE: u64 = 1 << 20;
/// Slack for whole-second stamps and truncated request times.
const TOLERANCE_MS: i64 = 2_000;
/// A stamp this far behind the latest starts a new segment (a second log
/// appended to the first), not a lagging line.
const SEGMENT_BREAK_SECS: i64 = 6 * 3600;
/// Bytes at which a bare integer request time is told apart.
const UNIT_EVIDENCE_BYTES: u64 = 64 * 1024;

/// What a line's time stamp marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stamp {
    /// The request's arrival (Apache `%t`, cvdmirror).
    Start = 0,
    /// The response's completion (nginx `$time_local`, Caddy `ts`).
    End = 1,
}

impl Stamp {
    /// Both, in index order.
    pub const BOTH: [Stamp; 2] = [Stamp::Start, Stamp::End];

    /// Index into per-hypothesis arrays.
    pub fn idx(self) -> usize {
        self as usize
    }

    /// `arrival` or `completion`.
    pub fn word(self) -> &'static str {
        match self {
            Stamp::Start => "arrival",
            Stamp::End => "completion",
        }
    }
}

/// What the log says about its stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Consecutive requests of one client with their request times.
    RequestTimes,
    /// The order the server wrote the lines in.
    LogOrder,
}

/// Where one line's transfer is placed under each hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Start (UTC seconds) if the stamp is the arrival / the completion.
    pub start: [i64; 2],
    /// Duration in milliseconds under each (0 when unknown).
    pub dur_ms: [u64; 2],
    /// The request time as logged (after `%D`/`%T` were told apart).
    pub logged_ms: Option<u64>,
}

impl Placement {
    /// The earliest and latest second the transfer may have touched.
    pub fn envelope(&self, stamp: i64) -> (i64, i64) {
        let ms = |d: u64| (d / 1000) as i64;
        (
            self.start[Stamp::End.idx()].min(stamp),
            stamp.saturating_add(ms(self.dur_ms[Stamp::Start.idx()])),
        )
    }
}

/// The evidence, in numbers (all exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    /// Lines seen.
    pub lines: u64,
    /// Of which with a request time.
    pub timed: u64,
    /// Consecutive request pairs of a client that fit only arrival stamps.
    pub pairs_start: u64,
    /// ... only completion stamps.
    pub pairs_end: u64,
    /// ... neither (parallel requests, clients sharing an address).
    pub pairs_neither: u64,
    /// Lines stamped more than 2 s before an earlier line of the same input.
    pub stamp_regressions: u64,
    /// Of which large transfers.
    pub large_regressions: u64,
    /// Timed lines whose stamp plus request time goes backwards by more
    /// than 2 s (what arrival stamps in a log written at completion never do).
    pub completion_regressions: u64,
    /// Transfers of at least 1 MiB.
    pub large: u64,
    /// Their bytes.
    pub large_bytes: u64,
    /// Bytes of those with a logged request time.
    pub large_bytes_logged: u64,
    /// Bytes of those without one whose duration was inferred, per
    /// hypothesis (arrival, completion).
    pub large_bytes_inferred: [u64; 2],
    /// Bare-integer request times read as seconds (`%T`) rather than
    /// microseconds (`%D`).
    pub integer_seconds: u64,
    /// Bare-integer request times read as microseconds.
    pub integer_micros: u64,
}

/// How sure the placement of bytes in time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Certainty {
    /// The log records how long (nearly) every large transfer took.
    Measured,
    /// Inferred for most large-transfer bytes from the log's order or each
    /// client's sequence of requests.
    Estimated,
    /// Most large-transfer bytes have no known duration and are booked at
    /// their stamp: per-minute rates are upper bounds.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Prev {
    /// Seconds since [`Stamps::base`].
    stamp: i32,
    /// Logged request time in ms, `u32::MAX` when none.
    dur_ms: u32,
}

/// A client's previous request, in absolute time.
#[derive(Debug, Clone, Copy)]
struct PrevAt {
    stamp: i64,
    dur_ms: u32,
}

impl std::ops::AddAssign for Evidence {
    fn add_assign(&mut self, o: Self) {
        self.lines += o.lines;
        self.timed += o.timed;
        self.pairs_start += o.pairs_start;
        self.pairs_end += o.pairs_end;
        self.pairs_neither += o.pairs_neither;
        self.stamp_regressions += o.stamp_regressions;
        self.large_regressions += o.large_regressions;
        self.completion_regressions += o.completion_regressions;
        self.large += o.large;
        self.large_bytes = self.large_bytes.saturating_add(o.large_bytes);
        self.large_bytes_logged = self.large_bytes_logged.saturating_add(o.large_bytes_logged);
        for i in 0..2 {
            self.large_bytes_inferred[i] =
                self.large_bytes_inferred[i].saturating_add(o.large_bytes_inferred[i]);
        }
        self.integer_seconds += o.integer_seconds;
        self.integer_micros += o.integer_micros;
    }
}

impl Evidence {
    /// What this evidence says the stamps mean, and from what; `None` when
    /// it does not tell.
    pub fn detected(&self) -> Option<(Stamp, Source)> {
        let e = self;
        let (s, n) = (e.pairs_start, e.pairs_end);
        if s + n >= 2 && (s >= 4 * n || n >= 4 * s) {
            let stamp = if s > n { Stamp::Start } else { Stamp::End };
            return Some((stamp, Source::RequestTimes));
        }
        if e.timed * 2 >= e.lines && e.lines > 0 {
            let (sr, cr) = (e.stamp_regressions, e.completion_regressions);
            if sr >= 3 && sr >= 4 * cr {
                return Some((Stamp::Start, Source::LogOrder));
            }
            if cr >= 3 && cr >= 4 * sr {
                return Some((Stamp::End, Source::LogOrder));
            }
            return None;
        }
        let small = e.lines - e.large;
        let small_regressions = e.stamp_regressions - e.large_regressions;
        if e.large_regressions >= 3
            && e.large_regressions * 20 >= e.large
            && small_regressions * 100 <= small + 100
        {
            return Some((Stamp::Start, Source::LogOrder));
        }
        if e.large >= 3 && e.stamp_regressions * 1000 <= e.lines {
            return Some((Stamp::End, Source::LogOrder));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct InputOrder {
    max_stamp: Option<i64>,
    max_completion_ms: Option<i64>,
    integer_seconds: u64,
    integer_micros: u64,
    evidence: Evidence,
}

/// The detector and placer.
#[derive(Debug, Clone)]
pub struct Stamps {
    inputs: Vec<InputOrder>,
    clients: KeyMap<u32, Prev>,
    cap: usize,
    /// The first stamp seen: client entries keep stamps relative to it.
    base: Option<i64>,
    latest: i64,
    inserts_since_purge: usize,
    /// Times the client table was cleared because it stayed full.
    pub resets: u64,
}

impl Stamps {
    /// A detector remembering the last request of at most `cap` clients.
    pub fn new(cap: usize) -> Self {
        Self {
            inputs: Vec::new(),
            clients: KeyMap::default(),
            cap: cap.max(8),
            base: None,
            latest: i64::MIN,
            inserts_since_purge: 0,
            resets: 0,
        }
    }

    /// Clients remembered now, and the cap.
    pub fn table_size(&self) -> (usize, usize) {
        (self.clients.len(), self.cap)
    }

    /// Reads one line of input `input` by `client`, stamped `stamp`, of
    /// `bytes`, with the request time `time` if logged.
    pub fn observe(
        &mut self,
        input: usize,
        client: ClientKey,
        stamp: i64,
        time: Option<RequestTime>,
        bytes: u64,
    ) -> Placement {
        if self.inputs.len() <= input {
            self.inputs.resize(input + 1, InputOrder::default());
        }
        let logged_ms = time.map(|t| resolve(&mut self.inputs[input], t, bytes));
        let prev = self.remember(client, stamp, logged_ms);
        let order = &mut self.inputs[input];
        let ev = &mut order.evidence;
        ev.lines += 1;
        let large = bytes >= LARGE;
        if large {
            ev.large += 1;
            ev.large_bytes = ev.large_bytes.saturating_add(bytes);
            if logged_ms.is_some() {
                ev.large_bytes_logged = ev.large_bytes_logged.saturating_add(bytes);
            }
        }

        // The log's order.
        let lag = match order.max_stamp {
            Some(m) if stamp < m - SEGMENT_BREAK_SECS => {
                order.max_stamp = Some(stamp);
                order.max_completion_ms = None;
                0
            }
            Some(m) => (m - stamp).max(0),
            None => 0,
        };
        order.max_stamp = Some(order.max_stamp.map_or(stamp, |m| m.max(stamp)));
        if lag * 1000 > TOLERANCE_MS {
            ev.stamp_regressions += 1;
            if large {
                ev.large_regressions += 1;
            }
        }
        if let Some(d) = logged_ms {
            ev.timed += 1;
            let done = stamp.saturating_mul(1000).saturating_add(d as i64);
            if order
                .max_completion_ms
                .is_some_and(|m| m - done > TOLERANCE_MS)
            {
                ev.completion_regressions += 1;
            }
            order.max_completion_ms = Some(order.max_completion_ms.map_or(done, |m| m.max(done)));
        }

        // The client's sequence.
        if let (Some(p), Some(db)) = (prev, logged_ms)
            && p.dur_ms != u32::MAX
            && (stamp - p.stamp).abs() <= MAX_SPREAD_SECS
        {
            let (a, b) = (p.stamp.saturating_mul(1000), stamp.saturating_mul(1000));
            let start_fits = b + TOLERANCE_MS >= a + i64::from(p.dur_ms);
            let end_fits = b - db as i64 + TOLERANCE_MS >= a;
            match (start_fits, end_fits) {
                (true, false) => ev.pairs_start += 1,
                (false, true) => ev.pairs_end += 1,
                (false, false) => ev.pairs_neither += 1,
                (true, true) => {}
            }
        }

        // Durations under each hypothesis.
        let (dur_s, dur_e) = match logged_ms {
            Some(d) => (d, d),
            None if large => {
                let s = if lag * 1000 > TOLERANCE_MS {
                    ev.large_bytes_inferred[0] = ev.large_bytes_inferred[0].saturating_add(bytes);
                    lag as u64 * 1000
                } else {
                    0
                };
                let e = match prev.map(|p| stamp - p.stamp) {
                    Some(gap) if (0..=MAX_SPREAD_SECS).contains(&gap) => {
                        ev.large_bytes_inferred[1] =
                            ev.large_bytes_inferred[1].saturating_add(bytes);
                        gap as u64 * 1000
                    }
                    _ => 0,
                };
                (s, e)
            }
            None => (0, 0),
        };
        Placement {
            start: [stamp, stamp - (dur_e / 1000) as i64],
            dur_ms: [dur_s, dur_e],
            logged_ms,
        }
    }

    /// Records `client`'s request and returns its previous one (stamp in
    /// UTC seconds, request time in ms or `u32::MAX`).
    fn remember(&mut self, client: ClientKey, stamp: i64, dur: Option<u64>) -> Option<PrevAt> {
        self.latest = self.latest.max(stamp);
        let base = *self.base.get_or_insert(stamp);
        let offset = (stamp - base).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let now = Prev {
            stamp: offset,
            dur_ms: dur.map_or(u32::MAX, |d| d.min(u64::from(u32::MAX - 1)) as u32),
        };
        let full = self.clients.len() >= self.cap;
        let key = (client ^ (client >> 32)) as u32;
        let at = |p: Prev| PrevAt {
            stamp: base + i64::from(p.stamp),
            dur_ms: p.dur_ms,
        };
        match self.clients.entry(key) {
            Entry::Occupied(mut o) => return Some(at(std::mem::replace(o.get_mut(), now))),
            Entry::Vacant(v) if !full => {
                v.insert(now);
                self.inserts_since_purge += 1;
                return None;
            }
            Entry::Vacant(_) => {}
        }
        if self.inserts_since_purge >= self.cap / 8 {
            self.inserts_since_purge = 0;
            let horizon = self.latest.saturating_sub(MAX_SPREAD_SECS) - base;
            self.clients.retain(|_, p| i64::from(p.stamp) >= horizon);
            if self.clients.len() >= self.cap * 3 / 4 {
                self.clients.clear();
                self.resets += 1;
            }
            self.clients.insert(key, now);
            self.inserts_since_purge += 1;
        }
        None
    }

    /// The evidence of all inputs.
    pub fn evidence(&self) -> Evidence {
        let mut e = Evidence::default();
        for i in &self.inputs {
            e += i.evidence;
        }
        e
    }

    /// The evidence of each input, in the order they were read.
    pub fn per_input(&self) -> impl Iterator<Item = &Evidence> {
        self.inputs.iter().map(|i| &i.evidence)
    }

    /// What the logs say their stamps mean, and from what; `None` when they
    /// do not tell.
    pub fn detected(&self) -> Option<(Stamp, Source)> {
        self.evidence().detected()
    }

    /// How sure the placement is under `stamp`.
    pub fn certainty(&self, stamp: Stamp) -> Certainty {
        let e = &self.evidence();
        if e.large_bytes == 0 || e.large_bytes_logged as f64 >= 0.95 * e.large_bytes as f64 {
            return Certainty::Measured;
        }
        // Under arrival stamps, a log that never lags holds no witness of
        // how long anything took (a sorted log, or one not written at
        // completion): unlagged transfers are not known to be short.
        let inferred = match stamp {
            Stamp::Start if e.large_regressions > 0 => e.large_bytes - e.large_bytes_logged,
            s => e.large_bytes_inferred[s.idx()],
        };
        if (e.large_bytes_logged.saturating_add(inferred)) as f64 >= 0.95 * e.large_bytes as f64 {
            Certainty::Estimated
        } else {
            Certainty::Unknown
        }
    }

    /// Whether bare-integer request times were read as seconds (`%T`) in
    /// any input.
    pub fn integer_unit(&self) -> Option<&'static str> {
        let e = &self.evidence();
        if e.integer_seconds > 0 {
            Some("seconds (Apache %T)")
        } else if e.integer_micros > 0 {
            Some("microseconds (Apache %D)")
        } else {
            None
        }
    }
}

/// A logged request time in milliseconds, telling `%T` from `%D` by the
/// input's large transfers.
fn resolve(order: &mut InputOrder, t: RequestTime, bytes: u64) -> u64 {
    let RequestTime::Integer(v) = t else {
        return t.millis(false);
    };
    let mut decided = None;
    if bytes >= UNIT_EVIDENCE_BYTES {
        let as_micros_rate = bytes as f64 * 1e6 / v.max(1) as f64;
        if v == 0 || as_micros_rate > 1.25e9 {
            order.integer_seconds += 1;
            decided = Some(true);
        } else if (bytes as f64) < 100.0 * v as f64 {
            order.integer_micros += 1;
            decided = Some(false);
        }
    }
    let secs = decided.unwrap_or(order.integer_seconds > order.integer_micros);
    if secs {
        order.evidence.integer_seconds += 1;
    } else {
        order.evidence.integer_micros += 1;
    }
    t.millis(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> ClientKey {
        u64::from(n)
    }

    #[test]
    fn request_times_tell_arrival_from_completion() {
        // A client: 404 at 100, then a 40-minute download.
        let mut arrival = Stamps::new(100);
        for c in 1..=2 {
            arrival.observe(0, k(c), 100, Some(RequestTime::Millis(2)), 0);
            arrival.observe(
                0,
                k(c),
                101,
                Some(RequestTime::Millis(2_400_000)),
                60_000_000,
            );
        }
        assert_eq!(arrival.evidence().pairs_start, 2);
        assert_eq!(
            arrival.detected(),
            Some((Stamp::Start, Source::RequestTimes))
        );
        // The same, logged at completion, each followed by its .sign.
        let mut completion = Stamps::new(100);
        for c in 1..=2 {
            completion.observe(0, k(c), 100, Some(RequestTime::Millis(2)), 0);
            let p = completion.observe(
                0,
                k(c),
                2501,
                Some(RequestTime::Millis(2_400_000)),
                60_000_000,
            );
            assert_eq!(p.start, [2501, 101]);
            completion.observe(0, k(c), 2502, Some(RequestTime::Millis(1)), 9000);
        }
        assert_eq!(completion.evidence().pairs_end, 2);
        assert_eq!(
            completion.detected(),
            Some((Stamp::End, Source::RequestTimes))
        );
        assert_eq!(completion.certainty(Stamp::End), Certainty::Measured);
    }

    #[test]
    fn order_without_request_times() {
        // Arrival stamps written at completion: the long transfer lags.
        let mut s = Stamps::new(100);
        for i in 0..10u8 {
            s.observe(0, k(i), 1000 + i64::from(i) * 60, None, 100);
            let p = s.observe(0, k(i), 950 + i64::from(i) * 60, None, 60_000_000);
            assert_eq!(p.dur_ms[0], 50_000, "it lasted at least its lag");
        }
        assert_eq!(s.detected(), Some((Stamp::Start, Source::LogOrder)));
        assert_eq!(s.certainty(Stamp::Start), Certainty::Estimated);
        // Completion stamps: in order; each download spread back to the
        // client's previous request.
        let mut s = Stamps::new(100);
        for i in 0..10u8 {
            let t = 1000 + i64::from(i) * 60;
            s.observe(0, k(i), t, None, 0);
            let p = s.observe(0, k(i), t + 45, None, 60_000_000);
            assert_eq!((p.start[1], p.dur_ms[1]), (t, 45_000));
        }
        assert_eq!(s.detected(), Some((Stamp::End, Source::LogOrder)));
        assert_eq!(s.certainty(Stamp::End), Certainty::Estimated);
        assert_eq!(s.certainty(Stamp::Start), Certainty::Unknown);
    }

    #[test]
    fn apache_t_and_d_are_told_apart_by_size() {
        let mut s = Stamps::new(100);
        let p = s.observe(0, k(1), 100, Some(RequestTime::Integer(40)), 60_000_000);
        assert_eq!(p.logged_ms, Some(40_000));
        // Small ones follow the input's verdict.
        let p = s.observe(0, k(2), 100, Some(RequestTime::Integer(1)), 300);
        assert_eq!(p.logged_ms, Some(1_000));
        let mut s = Stamps::new(100);
        let p = s.observe(
            1,
            k(1),
            100,
            Some(RequestTime::Integer(40_000_000)),
            60_000_000,
        );
        assert_eq!(p.logged_ms, Some(40_000));
        let p = s.observe(1, k(2), 100, Some(RequestTime::Integer(1_500)), 300);
        assert_eq!(p.logged_ms, Some(2));
        assert_eq!(s.integer_unit(), Some("microseconds (Apache %D)"));
    }

    #[test]
    fn the_client_table_stays_bounded() {
        let mut s = Stamps::new(64);
        for i in 0..10_000u64 {
            s.observe(0, i, i as i64 * 600, None, 10);
            assert!(s.table_size().0 <= 64);
        }
        assert!(s.resets == 0, "old entries were purged, not cleared");
    }
}
