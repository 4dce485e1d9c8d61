//! The streaming analyzer: every parsed line updates fixed-size aggregates
//! (timeline, top-K tables, fallback chains, `.sign` requests, download
//! sizes) and is then
//! forgotten, so memory depends on the configured [`Limits`], never on the
//! length of the logs. [`Analyzer::finish`] turns the aggregates into a
//! [`Report`](super::report::Report).

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::chains::{ChainLimits, Chains, client_key};
use super::classify::{self, Class};
use super::input::{self, Line, Lines};
use super::parse::{self, ParseError};
use super::signs::Signs;
use super::sizes::{self, Sizes};
use super::timeline::Timeline;
use super::topk::{Rank, TopK};

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            buckets: 14 * 24 * 60,
            top_capacity: 1000,
            pending_streaks: 200_000,
            fallback_clients: 100_000,
            sign_clients: 100_000,
        }
    }
}

/// Whether a line's timestamp marks the start of the request (Apache `%t`,
/// cvdmirror) or its end (nginx `$time_local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoggedAt {
    /// The request's arrival.
    #[default]
    Start,
    /// The response's completion.
    End,
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
    /// Longest gap from a cdiff 404 to the whole download, seconds.
    pub chain_window_secs: i64,
    /// What a line's timestamp means.
    pub logged_at: LoggedAt,
    /// Smallest rate (bytes per second) that can be a surge.
    pub min_rate: f64,
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
            chain_window_secs: 600,
            logged_at: LoggedAt::Start,
            min_rate: 128.0 * 1024.0,
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
}

/// The streaming analyzer.
#[derive(Debug, Clone)]
pub struct Analyzer {
    pub(super) options: Options,
    pub(super) timeline: Timeline,
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
    pub(super) span: Option<(i64, i64)>,
    pub(super) class_requests: [u64; Class::COUNT],
    pub(super) class_bytes: [u64; Class::COUNT],
}

impl Analyzer {
    /// An analyzer with nothing read yet.
    pub fn new(options: Options) -> Self {
        let l = options.limits;
        Self {
            timeline: Timeline::new(options.bucket_secs, l.buckets),
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
            signs: Signs::new(options.chain_window_secs, l.sign_clients),
            sizes: Sizes::default(),
            inputs: Vec::new(),
            malformed: BTreeMap::new(),
            examples: Vec::new(),
            lines: 0,
            parsed: 0,
            out_of_range: 0,
            first_offset: None,
            span: None,
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
        let dur = e.duration_ms.unwrap_or(0);
        let start = match self.options.logged_at {
            LoggedAt::Start => e.time,
            LoggedAt::End => e.time - (dur / 1000) as i64,
        };
        if self.options.since.is_some_and(|s| start < s)
            || self.options.until.is_some_and(|u| start >= u)
        {
            self.out_of_range += 1;
            return;
        }
        self.first_offset.get_or_insert(e.offset);
        self.span = Some(match self.span {
            None => (start, start),
            Some((lo, hi)) => (lo.min(start), hi.max(start)),
        });

        let name = classify::file_name(e.target);
        let class = classify::classify(e.method, name, e.status, e.bytes);
        let c = class as usize;
        self.class_requests[c] += 1;
        self.class_bytes[c] = self.class_bytes[c].saturating_add(e.bytes);
        self.timeline.at(start).requests[c] += 1;
        self.timeline.spread(start, dur, class, e.bytes);
        *self.statuses.entry(e.status).or_default() += 1;

        let agent = classify::agent(e.user_agent);
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

        let key = client_key(e.host, agent.uuid);
        let end = start.saturating_add((dur / 1000) as i64);
        if class == Class::Sign {
            // Never a patch: a `.sign` 404 starts no fallback chain.
            self.signs.sign(
                key,
                &file_key,
                classify::sign(name),
                e.status,
                e.bytes,
                start,
            );
            if e.status == 404 {
                self.timeline.at(start).sign_404 += 1;
            }
        } else if let Some((db_name, version)) = classify::cdiff(name) {
            let db = self.chains.intern(db_name);
            match e.status {
                404 => {
                    let patch = self.chains.intern(name);
                    self.chains.miss(key, db, patch, version, start);
                    self.timeline.at(start).cdiff_404 += 1;
                }
                200 => {
                    self.chains.patched(key, db, version);
                    self.signs.patch(key, db_name, version, start, end);
                }
                _ => {}
            }
        } else if let Some(db_name) = classify::whole_database(name)
            && class == Class::Cvd
            && e.status == 200
        {
            self.sizes.record(name, e.bytes);
            self.signs.whole(key, db_name, start, end);
            let (db, file) = (self.chains.intern(db_name), self.chains.intern(name));
            if self.chains.whole(key, e.host, db, file, start, e.bytes) {
                self.timeline.at(start).fallbacks += 1;
            }
        }
    }

    /// Current sizes of the bounded tables and their caps.
    pub fn table_sizes(&self) -> TableSizes {
        let (pending, fallback) = self.chains.table_sizes();
        let cl = self.chains.limits();
        let (signs_recent, signs_clients) = self.signs.table_sizes();
        TableSizes {
            buckets: (self.timeline.len(), self.timeline.cap()),
            clients: (self.clients.len(), self.clients.max_len()),
            agents: (self.agents.len(), self.agents.max_len()),
            versions: (self.versions.len(), self.versions.max_len()),
            files: (self.files.len(), self.files.max_len()),
            pending_streaks: (pending, cl.pending_cap),
            fallback_clients: (fallback, cl.clients_cap),
            sized_files: (self.sizes.len(), sizes::FILES_CAP + 1),
            sign_recent: (signs_recent, self.signs.cap()),
            sign_clients: (signs_clients, self.signs.cap()),
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
