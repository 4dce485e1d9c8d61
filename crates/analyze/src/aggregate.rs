//! The streaming analyzer: every parsed line updates fixed-size aggregates
//! (two timelines, one per meaning of the time stamps until the log says
//! which, top-K tables, fallback chains, missing files and served versions,
//! `.sign` requests, download sizes) and is then forgotten, so memory
//! depends on the configured [`Limits`], never on the length of the logs.
//! [`Analyzer::finish`] turns the aggregates into a
//! [`Report`](super::report::Report).

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::chains::{ChainLimits, Chains, client_key};
use super::classify::{self, Class, Signed};
use super::input::{self, Line, Lines};
use super::parse::{self, LineFormat, ParseError};
use super::share::{Shared, Transfer};
use super::signs::{FollowUp, Signs};
use super::sizes::{self, Sizes};
use super::stamps::{LARGE, Stamp, Stamps};
use super::timeline::Timeline;
use super::topk::{Rank, TopK};
use super::trigger::{self, Triggers};

/// Malformed-line examples kept for the report.
const EXAMPLES: usize = 10;
/// Characters of a malformed line quoted in an example.
const SNIPPET: usize = 100;

/// Bounds of every table (see each module for what happens at the cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Timeline buckets (the width doubles beyond; 14 days of minutes by default).
    pub buckets: usize,
    /// Rows reported per top-K table; each holds at most twice as many keys.
    pub top_capacity: usize,
    /// Open cdiff-404 streaks.
    pub pending_streaks: usize,
    /// Clients with a fallback chain.
    pub fallback_clients: usize,
    /// Recent downloads a `.sign` request may follow, and distinct clients
    /// counted per `.sign` tally.
    pub sign_clients: usize,
    /// Clients whose last request is remembered to read the log's time
    /// stamps and infer durations.
    pub sequence_clients: usize,
    /// Distinct clients counted over all missing files.
    pub missing_clients: usize,
    /// Large transfers kept to place them on the shared link.
    pub shared_transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            buckets: 14 * 24 * 60,
            top_capacity: 1000,
            pending_streaks: 200_000,
            fallback_clients: 100_000,
            sign_clients: 100_000,
            sequence_clients: 100_000,
            missing_clients: 200_000,
            shared_transfers: 262_144,
        }
    }
}

/// Whether a line's timestamp marks the start of the request (Apache `%t`,
/// cvdmirror) or its end (nginx `$time_local`, Caddy `ts`), or is to be
/// read from the log ([`super::stamps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoggedAt {
    /// Detect it from the log (request times, the order of lines); when
    /// the log does not tell, the arrival.
    #[default]
    Auto,
    /// The request's arrival.
    Start,
    /// The response's completion.
    End,
}

impl std::str::FromStr for LoggedAt {
    type Err = String;

    /// `auto`, `start` or `end`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LoggedAt::Auto),
            "start" => Ok(LoggedAt::Start),
            "end" => Ok(LoggedAt::End),
            _ => Err(format!("expected auto, start or end, not {s:?}")),
        }
    }
}

impl std::fmt::Display for LoggedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoggedAt::Auto => "auto",
            LoggedAt::Start => "start",
            LoggedAt::End => "end",
        })
    }
}

impl LoggedAt {
    /// The stamp meaning this fixes, if any.
    pub fn fixed(self) -> Option<Stamp> {
        match self {
            LoggedAt::Auto => None,
            LoggedAt::Start => Some(Stamp::Start),
            LoggedAt::End => Some(Stamp::End),
        }
    }
}

/// What to analyze and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Bucket width in seconds.
    pub bucket_secs: i64,
    /// Ignore lines before this UTC time.
    pub since: Option<i64>,
    /// Ignore lines at or after this UTC time.
    pub until: Option<i64>,
    /// Longest gap from a cdiff 404 to the whole download, seconds; `None`:
    /// the client's next whole download, however long it took.
    pub chain_window_secs: Option<i64>,
    /// Longest gap from a download's end to the `.sign` request that
    /// follows it, seconds.
    pub sign_window_secs: i64,
    /// What a line's timestamp means.
    pub logged_at: LoggedAt,
    /// Smallest rate (bytes per second) that can be a surge.
    pub min_rate: f64,
    /// The link's capacity in bytes per second, to check rates against.
    pub link_capacity: Option<f64>,
    /// Rows per table in the reports.
    pub top: usize,
    /// Zone for times in the reports (seconds east of UTC); default: the
    /// zone of the first line read.
    pub display_offset: Option<i32>,
    /// Table bounds.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bucket_secs: 60,
            since: None,
            until: None,
            chain_window_secs: None,
            sign_window_secs: 600,
            logged_at: LoggedAt::Auto,
            min_rate: 128.0 * 1024.0,
            link_capacity: None,
            top: 10,
            display_offset: None,
            limits: Limits::default(),
        }
    }
}

/// Per-input counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputSummary {
    /// As named on the command line (`-` for standard input).
    pub name: String,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped as malformed.
    pub malformed: u64,
    /// A read error that cut the input short (truncated gzip, I/O error).
    pub error: Option<String>,
}

/// One skipped line, quoted for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MalformedExample {
    /// Input name.
    pub input: String,
    /// 1-based line number in that input.
    pub line: u64,
    /// Why it was skipped.
    pub reason: ParseError,
    /// The start of the line, non-printable bytes escaped.
    pub snippet: String,
}

/// Current and maximum sizes of the bounded tables (for tests and the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableSizes {
    /// Timeline buckets held / cap.
    pub buckets: (usize, usize),
    /// Client table keys / max.
    pub clients: (usize, usize),
    /// User-agent table keys / max.
    pub agents: (usize, usize),
    /// Version table keys / max.
    pub versions: (usize, usize),
    /// File table keys / max.
    pub files: (usize, usize),
    /// Open 404 streaks / cap.
    pub pending_streaks: (usize, usize),
    /// Fallback clients / cap.
    pub fallback_clients: (usize, usize),
    /// Whole-database files with size tallies / cap.
    pub sized_files: (usize, usize),
    /// Downloads a `.sign` may follow / cap.
    pub sign_recent: (usize, usize),
    /// Largest set of distinct `.sign` clients / cap.
    pub sign_clients: (usize, usize),
    /// Clients whose last request is remembered / cap.
    pub sequence_clients: (usize, usize),
    /// Missing files tallied / cap.
    pub missing_files: (usize, usize),
    /// Large transfers kept for the shared-link placement / cap.
    pub shared_transfers: (usize, usize),
}

/// The streaming analyzer.
#[derive(Debug, Clone)]
pub struct Analyzer {
    pub(super) options: Options,
    /// One timeline per stamp meaning ([`Stamp::idx`]).
    pub(super) timelines: [Timeline; 2],
    pub(super) stamps: Stamps,
    pub(super) shared: Shared,
    pub(super) triggers: Triggers,
    pub(super) clients: TopK<String>,
    pub(super) agents: TopK<String>,
    pub(super) versions: TopK<String>,
    pub(super) files: TopK<String>,
    pub(super) statuses: BTreeMap<u16, u64>,
    pub(super) chains: Chains,
    pub(super) signs: Signs,
    pub(super) sizes: Sizes,
    pub(super) inputs: Vec<InputSummary>,
    pub(super) malformed: BTreeMap<ParseError, u64>,
    pub(super) examples: Vec<MalformedExample>,
    pub(super) lines: u64,
    pub(super) parsed: u64,
    pub(super) out_of_range: u64,
    pub(super) first_offset: Option<i32>,
    /// First and last request start under each stamp meaning.
    pub(super) spans: [Option<(i64, i64)>; 2],
    pub(super) json_lines: u64,
    pub(super) class_requests: [u64; Class::COUNT],
    pub(super) class_bytes: [u64; Class::COUNT],
}

impl Analyzer {
    /// An analyzer with nothing read yet.
    pub fn new(options: Options) -> Self {
        let l = options.limits;
        Self {
            timelines: [
                Timeline::new(options.bucket_secs, l.buckets),
                Timeline::new(options.bucket_secs, l.buckets),
            ],
            stamps: Stamps::new(l.sequence_clients),
            shared: Shared::new(l.shared_transfers),
            triggers: Triggers::new(l.missing_clients),
            clients: TopK::new(l.top_capacity, Rank::Bytes),
            agents: TopK::new(l.top_capacity, Rank::Requests),
            versions: TopK::new(l.top_capacity, Rank::Requests),
            files: TopK::new(l.top_capacity, Rank::Bytes),
            statuses: BTreeMap::new(),
            chains: Chains::new(ChainLimits {
                window_secs: options.chain_window_secs,
                pending_cap: l.pending_streaks,
                clients_cap: l.fallback_clients,
            }),
            signs: Signs::new(options.sign_window_secs, l.sign_clients),
            sizes: Sizes::default(),
            inputs: Vec::new(),
            malformed: BTreeMap::new(),
            examples: Vec::new(),
            lines: 0,
            parsed: 0,
            out_of_range: 0,
            first_offset: None,
            spans: [None; 2],
            json_lines: 0,
            class_requests: [0; Class::COUNT],
            class_bytes: [0; Class::COUNT],
            options,
        }
    }

    /// Registers an input and returns its index for [`Analyzer::feed_line`].
    pub fn add_input(&mut self, name: &str) -> usize {
        self.inputs.push(InputSummary {
            name: name.to_owned(),
            ..InputSummary::default()
        });
        self.inputs.len() - 1
    }

    /// Reads a whole log (plain or gzip) named `name`. A read error is
    /// recorded against the input and returned; what was read still counts.
    pub fn feed<R: Read + 'static>(&mut self, name: &str, reader: R) -> io::Result<()> {
        let idx = self.add_input(name);
        let result = input::decompressing(reader).and_then(|r| {
            let mut lines = Lines::new(r);
            while let Some((no, line)) = lines.next_line()? {
                match line {
                    Line::Text(text) => self.feed_line(idx, no, text),
                    Line::TooLong => {
                        self.skip(idx, no, ParseError::TooLong, b"(longer than 64 KiB)")
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = &result {
            self.inputs[idx].error = Some(e.to_string());
        }
        result
    }

    fn skip(&mut self, idx: usize, no: u64, reason: ParseError, line: &[u8]) {
        self.lines += 1;
        self.inputs[idx].lines += 1;
        self.inputs[idx].malformed += 1;
        *self.malformed.entry(reason).or_default() += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(MalformedExample {
                input: self.inputs[idx].name.clone(),
                line: no,
                reason,
                snippet: snippet(line),
            });
        }
    }

    /// Analyzes one line (line number `no`) of input `idx`.
    pub fn feed_line(&mut self, idx: usize, no: u64, line: &[u8]) {
        let e = match parse::parse_line(line) {
            Ok(e) => e,
            Err(reason) => return self.skip(idx, no, reason, line),
        };
        self.lines += 1;
        self.inputs[idx].lines += 1;
        self.parsed += 1;
        if e.format == LineFormat::Json {
            self.json_lines += 1;
        }
        let agent = classify::agent(e.user_agent);
        let key = client_key(e.host, agent.uuid);
        let stamp = e.time;
        let place = self
            .stamps
            .observe(idx, key, stamp, e.request_time, e.bytes);
        // The start as the log states it: the stamp, less the logged
        // request time when stamps are known to be completions.
        let stated = match self.options.logged_at {
            LoggedAt::End => stamp - (place.logged_ms.unwrap_or(0) / 1000) as i64,
            LoggedAt::Start | LoggedAt::Auto => stamp,
        };
        if self.options.since.is_some_and(|s| stated < s)
            || self.options.until.is_some_and(|u| stated >= u)
        {
            self.out_of_range += 1;
            return;
        }
        self.first_offset.get_or_insert(e.offset);

        let name = classify::file_name(e.target);
        let class = classify::classify(e.method, name, e.status, e.bytes);
        let c = class as usize;
        self.class_requests[c] += 1;
        self.class_bytes[c] = self.class_bytes[c].saturating_add(e.bytes);
        // A large transfer that lasted is kept to be placed on the shared
        // link once all are known; its bytes join the timeline then.
        let long = place.dur_ms.iter().any(|&d| d >= 1000);
        let kept = e.bytes >= LARGE
            && long
            && self.shared.push(Transfer {
                start: place.start,
                dur_ms: place.dur_ms.map(|d| d.min(u64::from(u32::MAX)) as u32),
                bytes: e.bytes,
                class,
            });
        for s in Stamp::BOTH {
            let i = s.idx();
            let start = place.start[i];
            let (naive_start, naive_ms) = match place.logged_ms {
                Some(d) => (start, d),
                None => (stamp, 0),
            };
            let bytes = if kept { 0 } else { e.bytes };
            self.timelines[i].add(start, place.dur_ms[i], class, bytes, naive_start, naive_ms);
            if kept {
                self.timelines[i].spread_naive(naive_start, naive_ms, e.bytes);
                let end = start.saturating_add((place.dur_ms[i] / 1000) as i64);
                self.timelines[i].cover_range(start, end);
            }
            self.spans[i] = Some(match self.spans[i] {
                None => (start, start),
                Some((lo, hi)) => (lo.min(start), hi.max(start)),
            });
        }
        *self.statuses.entry(e.status).or_default() += 1;

        self.clients
            .add(String::from_utf8_lossy(e.host).as_ref(), e.bytes);
        self.agents.add(agent.normalized.as_str(), e.bytes);
        self.versions.add(agent.version.as_str(), e.bytes);
        let file_key = if name.is_empty() {
            "/".into()
        } else {
            String::from_utf8_lossy(name)
        };
        self.files.add(file_key.as_ref(), e.bytes);

        // The transfer lies within this envelope whatever the stamps mean.
        let (lo, hi) = place.envelope(stamp);
        if class == Class::Sign {
            // Never a patch: a `.sign` 404 starts no fallback chain.
            let signed = classify::sign(name);
            let follow = self
                .signs
                .sign(key, &file_key, signed, e.status, e.bytes, stamp);
            if let Some(n) = signed
                && follow == FollowUp::AfterCvd
                && n.signed == Signed::Cvd
            {
                let db = self.chains.intern(n.db);
                self.triggers.served_cvd(db, n.version, stamp);
            }
            if e.status == 404 {
                self.each_timeline(&place.start, |b| b.sign_404 += 1);
            }
        } else if let Some((db_name, version)) = classify::cdiff(name) {
            let db = self.chains.intern(db_name);
            match e.status {
                404 => {
                    let patch = self.chains.intern(name);
                    self.chains.miss(key, db, patch, version, stamp);
                    self.triggers.miss(patch, db, Some(version), key, stamp);
                    self.each_timeline(&place.start, |b| b.cdiff_404 += 1);
                }
                200 => {
                    self.chains.patched(key, db, version);
                    self.signs.patch(key, db_name, version, lo, hi);
                    self.triggers.served_patch(db, version, stamp);
                }
                _ => {}
            }
        } else if let Some(db_name) = classify::whole_database(name) {
            if class == Class::HeaderCheck {
                if self.chains.has_pending() {
                    let db = self.chains.intern(db_name);
                    self.chains.check(key, db);
                }
            } else if e.status == 200 {
                let db = self.chains.intern(db_name);
                self.sizes.record(name, e.bytes);
                self.signs.whole(key, db_name, lo, hi);
                let file = self.chains.intern(name);
                if let Some(chain) =
                    self.chains
                        .whole(key, e.host, db, file, stamp, place.start, stated, e.bytes)
                {
                    self.triggers.chain(chain.patch, e.bytes);
                    self.each_timeline(&place.start, |b| b.fallbacks += 1);
                }
            } else if e.status == 404 {
                let db = self.chains.intern(db_name);
                let file = self.chains.intern(name);
                self.triggers.miss(file, db, None, key, stamp);
            }
        }
    }

    /// Applies `f` to the bucket at `start[i]` of each timeline `i`.
    fn each_timeline(&mut self, start: &[i64; 2], f: impl Fn(&mut super::timeline::Bucket)) {
        for (t, &at) in self.timelines.iter_mut().zip(start) {
            f(t.at(at));
        }
    }

    /// Current sizes of the bounded tables and their caps.
    pub fn table_sizes(&self) -> TableSizes {
        let (pending, fallback) = self.chains.table_sizes();
        let cl = self.chains.limits();
        let (signs_recent, signs_clients) = self.signs.table_sizes();
        TableSizes {
            buckets: (
                self.timelines.iter().map(Timeline::len).max().unwrap_or(0),
                self.timelines[0].cap(),
            ),
            clients: (self.clients.len(), self.clients.max_len()),
            agents: (self.agents.len(), self.agents.max_len()),
            versions: (self.versions.len(), self.versions.max_len()),
            files: (self.files.len(), self.files.max_len()),
            pending_streaks: (pending, cl.pending_cap),
            fallback_clients: (fallback, cl.clients_cap),
            sized_files: (self.sizes.len(), sizes::FILES_CAP + 1),
            sign_recent: (signs_recent, self.signs.cap()),
            sign_clients: (signs_clients, self.signs.cap()),
            sequence_clients: self.stamps.table_size(),
            missing_files: (self.triggers.len(), trigger::FILES_CAP),
            shared_transfers: self.shared.table_size(),
        }
    }

    /// Lines that parsed (before `--since`/`--until`).
    pub fn parsed(&self) -> u64 {
        self.parsed
    }
}

/// The first [`SNIPPET`] characters of a line, control bytes escaped.
fn snippet(line: &[u8]) -> String {
    let mut out = String::new();
    for &b in line.iter().take(SNIPPET) {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    if line.len() > SNIPPET {
        out.push('…');
    }
    out
}
