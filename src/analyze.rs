//! `cvdmirror analyze LOG...`: reads access logs and explains a traffic
//! incident — the command the operator of the 16:41–18:17 saturation never
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

pub mod aggregate;
pub mod args;
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
pub mod topk;
pub mod trigger;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

pub use aggregate::{Analyzer, Limits, LoggedAt, Options, TableSizes};
pub use args::AnalyzeArgs;
pub use report::Report;

/// Runs `cvdmirror analyze`: reads every log, prints the summary to
/// standard output and writes the HTML (and JSON) reports.
///
/// Fails when an input cannot be opened or when no line could be parsed;
/// skipped lines alone are not a failure.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let report = analyze(&args)?;
    let mut out = std::io::stdout().lock();
    out.write_all(report::text::render(&report).as_bytes())?;
    if !args.no_html {
        write_file(&args.html, report::html::render(&report).as_bytes())?;
        writeln!(out, "\nHTML report: {}", args.html.display())?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        if path.as_os_str() == "-" {
            out.write_all(&json)?;
            writeln!(out)?;
        } else {
            write_file(path, &json)?;
            writeln!(out, "JSON report: {}", path.display())?;
        }
    }
    Ok(())
}

/// Reads the logs named in `args` and returns the report without printing
/// or writing anything.
pub fn analyze(args: &AnalyzeArgs) -> anyhow::Result<Report> {
    if let (Some(s), Some(u)) = (args.since, args.until)
        && s >= u
    {
        bail!("--since must be before --until");
    }
    if args.logs.iter().filter(|l| *l == "-").count() > 1 {
        bail!("standard input (-) can be read only once");
    }
    // Open everything first: a typo in the last name should fail in a
    // second, not after an hour of reading the first file.
    let mut readers = Vec::with_capacity(args.logs.len());
    for name in &args.logs {
        let reader: Box<dyn std::io::Read> = if name == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(name).with_context(|| format!("cannot read {name}"))?)
        };
        if name != "-" && Path::new(name).is_dir() {
            bail!("cannot read {name}: is a directory");
        }
        readers.push((name, reader));
    }
    let mut analyzer = Analyzer::new(args.options());
    for (name, reader) in readers {
        if let Err(e) = analyzer.feed(name, reader) {
            eprintln!("cvdmirror analyze: warning: {name}: {e}; the rest of this input is skipped");
        }
    }
    let report = analyzer.finish();
    if report.parsed == 0 {
        let why = report
            .malformed
            .examples
            .first()
            .map(|e| format!("; first: {}:{}: {}", e.input, e.line, e.reason.describe()))
            .unwrap_or_default();
        bail!(
            "no line of {} is an access-log line in combined format ({} lines read){why}",
            args.logs.join(", "),
            report.lines
        );
    }
    if report.totals.requests == 0 {
        bail!(
            "none of the {} parsed lines falls between --since and --until",
            report.parsed
        );
    }
    Ok(report)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
