//! The analysis result as data: what the terminal summary, the HTML page and
//! the JSON file all show, computed once from the aggregates. It also writes
//! the plain-language explanation, because the point of `analyze` is to say
//! *why* the link was full, not only that it was.
//!
//! This file is the shape of the result (and of the JSON file); the
//! submodules compute it (`build`, `fallback`, `cause` for the trigger and
//! the time stamps, `explain`), word numbers for people (`format`) and
//! render it (`text`, `html`, `svg`).

mod build;
mod cause;
mod explain;
mod fallback;
mod format;
pub mod html;
pub mod svg;
pub mod text;

use std::collections::HashMap;

pub use format::{human_bytes, mbit, pct, percent};

use super::aggregate::{InputSummary, Limits, MalformedExample, TableSizes};
use super::classify::Class;
use super::episodes::Baseline;
use super::parse::ParseError;
use super::sizes::FileVerdict;
use super::stamps::{Certainty, Evidence, Stamp};
use super::timeline::Bucket;

/// Everything the analysis found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Each input read.
    pub inputs: Vec<InputSummary>,
    /// Lines read in all.
    pub lines: u64,
    /// Lines that parsed.
    pub parsed: u64,
    /// Parsed lines outside `--since`/`--until`.
    pub out_of_range: u64,
    /// Skipped lines.
    pub malformed: Malformed,
    /// Zone of the times shown to people (seconds east of UTC).
    pub utc_offset: i32,
    /// The same as `+hhmm`.
    pub utc_offset_text: String,
    /// First request (UTC seconds).
    pub first: Option<i64>,
    /// Last request (UTC seconds).
    pub last: Option<i64>,
    /// Bucket width in seconds (wider than asked if the span needed it).
    pub bucket_secs: i64,
    /// Lines that were JSON objects (nginx `escape=json`, Caddy); the others
    /// were in combined format.
    pub json_lines: u64,
    /// What the time stamps mean, how sure the rates are.
    pub time: TimeReport,
    /// The cause: the missing file whose fallback chains cost most.
    pub trigger: Option<Trigger>,
    /// Totals by class.
    pub totals: Totals,
    /// Every bucket from first to last.
    pub timeline: Vec<Point>,
    /// Normal level and thresholds, in bytes per bucket.
    pub baseline: Baseline,
    /// The surges.
    pub episodes: Vec<EpisodeReport>,
    /// cdiff 404 → whole download chains.
    pub fallback: Fallback,
    /// ClamAV 1.5 `.sign` requests.
    pub sign: SignReport,
    /// Whole-database downloads per file, with aborted ones.
    pub downloads: Vec<FileVerdict>,
    /// Bytes of aborted whole-database downloads.
    pub wasted_bytes: u64,
    /// Clients by bytes.
    pub top_clients: Vec<Row>,
    /// User agents (UUID removed) by requests.
    pub top_agents: Vec<Row>,
    /// freshclam versions (or other products) by requests.
    pub top_versions: Vec<Row>,
    /// Files by bytes.
    pub top_files: Vec<Row>,
    /// Requests per status code.
    pub statuses: Vec<(u16, u64)>,
    /// Plain-language explanation, one paragraph per entry.
    pub explanation: Vec<String>,
    /// Table bounds and how much approximation happened.
    pub bounds: Bounds,
}

/// Skipped lines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Malformed {
    /// How many.
    pub count: u64,
    /// Per reason.
    pub by_reason: Vec<(ParseError, u64)>,
    /// The first few.
    pub examples: Vec<MalformedExample>,
}

/// Totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Per class.
    pub classes: Vec<ClassTotal>,
}

/// Totals of one class.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassTotal {
    /// The class.
    pub class: Class,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One timeline bucket.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Point {
    /// Bucket start, UTC seconds.
    pub start: i64,
    /// Counts (indexed by class: cvd, cdiff, header checks, sign, other).
    #[serde(flatten)]
    pub counts: Bucket,
}

/// One row of a top table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Client, agent, version or file.
    pub name: String,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Possible undercount of the ranked value (0 = exact).
    pub error: u64,
}

/// One episode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpisodeReport {
    /// Onset, UTC seconds.
    pub start: i64,
    /// Back to normal, UTC seconds.
    pub end: i64,
    /// Onset, RFC 3339.
    pub start_rfc3339: String,
    /// End, RFC 3339.
    pub end_rfc3339: String,
    /// Whether the log ended first.
    pub ongoing: bool,
    /// Length in minutes.
    pub minutes: i64,
    /// Bytes during the episode.
    pub bytes: u64,
    /// Bytes per class during the episode.
    pub class_bytes: [u64; Class::COUNT],
    /// Share of all bytes in the log, percent.
    pub share_percent: f64,
    /// Busiest bucket start.
    pub peak_time: i64,
    /// Rate in the busiest bucket.
    pub peak_bits_per_sec: f64,
    /// The busiest bucket's rate if every transfer without a logged request
    /// time were booked at its stamp (what a timestamp-only reading says).
    pub naive_peak_bits_per_sec: f64,
    /// The fallback herd inside it, if any.
    pub fallback: Option<EpisodeFallback>,
    /// What happened, in one paragraph.
    pub explanation: String,
}

/// Fallback chains that started within an episode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpisodeFallback {
    /// The patch most clients missed.
    pub patch: String,
    /// The whole database they fetched instead.
    pub file: String,
    /// Distinct clients that missed that patch and fell back.
    pub clients: u64,
    /// Distinct clients that fell back from any patch.
    pub all_clients: u64,
    /// Whole downloads by them in the episode.
    pub downloads: u64,
    /// Bytes of those downloads.
    pub bytes: u64,
    /// Of which aborted.
    pub aborted: u64,
    /// Bytes of the aborted ones.
    pub wasted_bytes: u64,
}

/// All fallback chains.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fallback {
    /// Distinct clients with at least one chain.
    pub clients: u64,
    /// True when the client table overflowed: `clients` is a lower bound.
    pub at_least: bool,
    /// Chains.
    pub chains: u64,
    /// Bytes of the whole downloads that ended the chains.
    pub bytes: u64,
    /// Per missed patch.
    pub patches: Vec<PatchRow>,
    /// Clients with most chains: (client, chains, bytes of remembered chains).
    pub top_clients: Vec<(String, u64, u64)>,
    /// Cap from the last 404 to the download, seconds (`None`: the
    /// client's next download, however long it took).
    pub window_secs: Option<i64>,
}

/// The trigger: the first request for a file the mirror did not have, of
/// the file whose fallback chains cost most.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trigger {
    /// The missing file (`daily-27654.cdiff`).
    pub file: String,
    /// Its first `404` (UTC seconds).
    pub first: i64,
    /// Its last `404`.
    pub last: i64,
    /// First, RFC 3339.
    pub first_rfc3339: String,
    /// Last, RFC 3339.
    pub last_rfc3339: String,
    /// `404` answers for it.
    pub requests: u64,
    /// Distinct clients that got one.
    pub clients: u64,
    /// True when the client count is a lower bound.
    pub clients_at_least: bool,
    /// Whole downloads that followed (fallback chains).
    pub chains: u64,
    /// Distinct clients that fell back (from the remembered chains).
    pub fallback_clients: u64,
    /// The whole database they downloaded instead.
    pub fallback_file: String,
    /// What it cost: bytes of those downloads.
    pub bytes: u64,
    /// Their share of all bytes, percent.
    pub share_percent: f64,
    /// The version the mirror served meanwhile, when the log shows it.
    pub mirror: Option<MirrorVersion>,
    /// When the mirror first served the file (`200`) after its 404s.
    pub resolved: Option<i64>,
    /// Start of the first surge episode from the trigger on.
    pub surge_start: Option<i64>,
}

/// What the log says about the version the mirror served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MirrorVersion {
    /// The database (`daily`).
    pub db: String,
    /// Its version.
    pub version: u32,
    /// The newest patch the mirror answered `200` by then
    /// (`daily-27653.cdiff`), if any.
    pub newest_patch: Option<String>,
    /// The CVD version ClamAV 1.5 clients named in the `.sign` they asked
    /// for right after downloading the CVD in that time, and how often.
    pub cvd_sign: Option<(u32, u64)>,
}

/// What the log's time stamps mean and how sure the rates are.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimeReport {
    /// What the stamps were taken to mark: the request's arrival or its
    /// completion.
    pub stamps: Stamp,
    /// How that was decided.
    pub decided_by: Decided,
    /// What the log itself says (`None`: it does not tell).
    pub detected: Option<Stamp>,
    /// The numbers behind it.
    pub evidence: Evidence,
    /// How bare-integer request times were read, if the log had any.
    pub integer_unit: Option<&'static str>,
    /// How sure the per-bucket rates are.
    pub certainty: Certainty,
    /// Highest rate of a bucket, as placed.
    pub peak_bits_per_sec: f64,
    /// When (bucket start).
    pub peak_time: i64,
    /// Highest rate if transfers without a logged request time were booked
    /// at their stamp.
    pub naive_peak_bits_per_sec: f64,
    /// The link's capacity given with `--link-capacity`.
    pub link_capacity_bits_per_sec: Option<f64>,
    /// Whether the placed peak exceeds that capacity.
    pub above_capacity: bool,
    /// Whether the reported peak is one the log supports: durations known
    /// or inferred, and within the capacity when one was given.
    pub peak_supported: bool,
    /// The same in sentences, for people.
    pub summary: Vec<String>,
}

/// How the meaning of the time stamps was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decided {
    /// `--logged-at start|end`.
    Flag,
    /// Consecutive requests of clients with their request times.
    RequestTimes,
    /// The order of the lines.
    LogOrder,
    /// The log does not tell; arrival assumed.
    Default,
}

/// Detached signatures (`.sign`) requested, as ClamAV 1.5 clients ask for
/// them after a CVD or patch.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SignReport {
    /// `.sign` requests.
    pub requests: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// Of which answered `404`.
    pub not_found: u64,
    /// Distinct clients (address and freshclam UUID) that asked for one.
    pub clients: u64,
    /// Distinct clients that got a `404` for one.
    pub clients_not_found: u64,
    /// Distinct clients that asked for one right after the file it signs
    /// (the ClamAV 1.5 chain).
    pub chain_clients: u64,
    /// True when a client set overflowed: the client counts are lower bounds.
    pub at_least: bool,
    /// Requests that followed the client's download of the CVD they sign.
    pub after_cvd: u64,
    /// Requests that followed the client's download of the patch they sign.
    pub after_cdiff: u64,
    /// Other requests (a current CVD's missing `.sign` fetched alone, or a
    /// name outside ClamAV's naming).
    pub standalone: u64,
    /// The `.sign` files answered `404` most often.
    pub missing: Vec<MissingSign>,
    /// Longest gap from the end of a download to its `.sign` request, seconds.
    pub window_secs: i64,
}

/// One `.sign` file the mirror did not have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingSign {
    /// File name.
    pub file: String,
    /// `404` answers for it.
    pub requests: u64,
}

/// Chains that started with one missing patch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchRow {
    /// The patch that got 404.
    pub patch: String,
    /// The whole database then fetched.
    pub file: String,
    /// Distinct clients.
    pub clients: u64,
    /// Remembered chains.
    pub downloads: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Bounds and approximation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bounds {
    /// Configured limits.
    pub limits: Limits,
    /// Table sizes at the end.
    pub tables: TableSizes,
    /// Keys forgotten per table (0 = exact).
    pub evicted: HashMap<&'static str, u64>,
    /// Chains counted but not attributed to a client.
    pub untracked_chains: u64,
    /// 404 streaks not followed because the table was full.
    pub dropped_streaks: u64,
    /// Times the table of clients' last requests was cleared (durations of
    /// the next transfers of those clients could not be inferred).
    pub sequence_resets: u64,
    /// `404`s of missing files beyond the table's cap.
    pub dropped_missing: u64,
    /// Large transfers spread evenly, not on the shared link, because the
    /// table was full.
    pub unshared_transfers: u64,
    /// Whether buckets were widened to fit the span.
    pub coarsened: bool,
}
