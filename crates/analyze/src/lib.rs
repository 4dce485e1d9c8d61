//! The analysis behind `cvdmirror analyze LOG...`: reads access logs and
//! explains a traffic incident — the command the operator of the 16:41–18:17 saturation never
//! had. It answers *why* first: the file the mirror did not have (the
//! trigger), from which minute, for how many clients, at what cost, and
//! which version the mirror served meanwhile; then *when* (surge episodes
//! against a robust baseline, dated apart from the trigger), *what*
//! (traffic per file class: whole databases, patches, header checks,
//! ClamAV 1.5's `.sign` files), *who* (top clients, agents, freshclam
//! versions), and how clients that missed a patch (`404`) fell back to
//! downloading the whole database, linked by each client's own sequence of
//! requests however long the download took. Nothing has to be told: the
//! log format (combined or JSON), what its time stamps mean, and how long
//! transfers took are read from the log, and the report says how sure its
//! rates are.
//!
//! Logs are streamed line by line into bounded aggregates, so a multi-GB log
//! costs a fixed amount of memory; see `docs/analyze.md` for the bounds and
//! the approximations they imply.
//!
//! Pipeline: [`input`] (files, stdin, gzip, bounded lines) → [`parse`]
//! (combined, JSON) → [`classify`] → [`stamps`] (what the time stamps mean,
//! durations) → [`aggregate`] ([`timeline`], [`topk`], [`chains`],
//! [`trigger`], [`signs`], [`sizes`], [`share`]) → [`episodes`] →
//! [`report`] (text, HTML, JSON). [`generate`] makes incident logs with
//! known ground truth for the tests and the benchmark.

use cvdmirror_formats::calendar;
use cvdmirror_formats::html;

pub mod aggregate;
pub mod chains;
pub mod classify;
pub mod episodes;
pub mod generate;
pub mod input;
pub mod parse;
pub mod report;
pub mod share;
pub mod signs;
pub mod sizes;
pub mod stamps;
pub mod time;
pub mod timeline;
pub use cvdmirror_formats::topk;
pub mod trigger;

pub use aggregate::{Analyzer, Limits, LoggedAt, Options, TableSizes};
pub use report::Report;
