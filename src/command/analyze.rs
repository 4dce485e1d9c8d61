//! `cvdmirror analyze`: its flags, their conversion into validated
//! [`Options`], and the command that reads the logs and writes the reports
//! (the analysis itself is the `cvdmirror-analyze` library).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};

use cvdmirror_analyze::aggregate::{LoggedAt, Options};
use cvdmirror_analyze::time::parse_offset;
use cvdmirror_analyze::{Analyzer, Report, report};

/// Read access logs and explain a traffic incident: its cause (the file the
/// mirror did not have) and minute, timeline per file class, surge episodes,
/// cdiff-404 → full-download fallback chains, aborted downloads, top
/// clients, agents and files.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Access logs in combined format (cvdmirror, Apache, nginx) or JSON
    /// lines (nginx `escape=json`, Caddy), plain or gzip; `-` reads
    /// standard input.
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<String>,

    /// Where to write the self-contained HTML report.
    #[arg(
        long,
        env = "CVDMIRROR_ANALYZE_HTML",
        value_name = "PATH",
        default_value = "cvdmirror-report.html"
    )]
    pub html: PathBuf,

    /// Do not write the HTML report.
    #[arg(long, conflicts_with = "html")]
    pub no_html: bool,

    /// Also write the whole analysis as JSON to this file (`-` for standard output).
    #[arg(long, env = "CVDMIRROR_ANALYZE_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Ignore requests before this UTC time (`2026-11-29 16:00:00` or RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,

    /// Ignore requests at or after this UTC time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,

    /// Width of the timeline buckets (`1m`, `30s`, `5m`).
    #[arg(long, env = "CVDMIRROR_ANALYZE_BUCKET", value_name = "DURATION", default_value = "1m", value_parser = parse_secs)]
    pub bucket: i64,

    /// Cap on the time from a client's last cdiff 404 to the start of its
    /// whole download for the two to count as one fallback chain. Without
    /// it a 404 is linked to the client's next whole download, however long
    /// that took, unless the client checked for updates again in between.
    #[arg(long, value_name = "DURATION", value_parser = parse_secs)]
    pub chain_window: Option<i64>,

    /// Smallest traffic that can be a surge, a rate with units like every
    /// other (`128KiB/s`, `1MB/s`, `8Mbit`).
    #[arg(long, value_name = "RATE", default_value = "128KiB/s")]
    pub min_rate: crate::rate::Rate,

    /// Whether log timestamps mark the start of a request (Apache,
    /// cvdmirror) or its end (nginx, Caddy); `auto` reads it from the log.
    #[arg(
        long,
        value_name = "WHEN",
        default_value_t = LoggedAt::Auto,
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(["auto", "start", "end"]),
            |s| s.parse::<LoggedAt>()
        )
    )]
    pub logged_at: LoggedAt,

    /// The link's capacity (`100Mbit`), to check the reported rates against:
    /// a rate above it is flagged as one the log cannot support.
    #[arg(long, env = "CVDMIRROR_ANALYZE_LINK_CAPACITY", value_name = "RATE")]
    pub link_capacity: Option<crate::rate::Rate>,

    /// Zone for times in the reports (`+0200`, `UTC`); default: the zone
    /// of the first log line.
    #[arg(long, value_name = "+HHMM", value_parser = parse_zone)]
    pub utc_offset: Option<i32>,

    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

impl AnalyzeArgs {
    /// The analysis options these flags ask for.
    pub fn options(&self) -> Options {
        Options {
            bucket_secs: self.bucket,
            since: self.since,
            until: self.until,
            chain_window_secs: self.chain_window,
            logged_at: self.logged_at,
            min_rate: self.min_rate.bytes_per_sec_f64(),
            link_capacity: self.link_capacity.map(crate::rate::Rate::bytes_per_sec_f64),
            top: self.top.max(1),
            display_offset: self.utc_offset,
            ..Options::default()
        }
    }
}

/// A positive duration in whole seconds (`1m`, `90s`).
pub fn parse_secs(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    let secs = d.as_secs();
    if secs == 0 || secs > 366 * 86_400 {
        return Err("must be between 1 s and a year".into());
    }
    Ok(secs as i64)
}

/// A UTC time: `2026-11-29 16:00`, `2026-11-29 16:00:00`, `2026-11-29T16:00:00Z`.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let full = if s.len() == 16 {
        format!("{s}:00")
    } else {
        s.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("{e} (expected e.g. 2026-11-29 16:00:00, UTC)"))?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| "before 1970".into())
}

/// `+0200`, `-0530`, `UTC`.
pub fn parse_zone(s: &str) -> Result<i32, String> {
    parse_offset(s).ok_or_else(|| format!("expected +HHMM, -HHMM or UTC, not {s:?}"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_secs("1m"), Ok(60));
        assert!(parse_secs("0s").is_err());
        assert_eq!(
            parse_time("2026-11-29 16:41"),
            parse_time("2026-11-29T16:41:00Z")
        );
        assert_eq!(parse_zone("+0200"), Ok(7200));
    }

    /// `cvdmirror analyze` on its own.
    #[derive(clap::Parser)]
    struct Analyze {
        #[command(flatten)]
        args: AnalyzeArgs,
    }

    #[test]
    fn min_rate_is_written_like_every_other_rate() {
        use clap::Parser;
        let min_rate = |flag: Option<&str>| {
            let mut argv = vec!["analyze", "access.log"];
            if let Some(v) = flag {
                argv.extend(["--min-rate", v]);
            }
            Analyze::try_parse_from(argv)
                .map(|cli| cli.args.options().min_rate)
                .map_err(|e| e.to_string())
        };
        assert_eq!(min_rate(None), Ok(131_072.0));
        assert_eq!(min_rate(Some("8Mbit")), Ok(1e6));
        assert_eq!(min_rate(Some("1MB/s")), Ok(1e6));
        let bare = min_rate(Some("100")).unwrap_err();
        assert!(bare.contains("no unit"), "{bare}");
        assert!(min_rate(Some("8kbps")).is_err());
    }

    #[test]
    fn defaults_read_the_log_and_link_by_sequence() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["analyze", "access.log"];
            argv.extend(extra);
            Analyze::try_parse_from(argv)
                .ok()
                .map(|cli| cli.args.options())
        };
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.chain_window_secs, o.logged_at, o.link_capacity),
            (None, LoggedAt::Auto, None)
        );
        let o = parse(&["--chain-window", "60m", "--link-capacity", "100Mbit"]).unwrap();
        assert_eq!(
            (o.chain_window_secs, o.link_capacity),
            (Some(3600), Some(12_500_000.0))
        );
        assert!(
            parse(&["--link-capacity", "100"]).is_none(),
            "a rate needs a unit"
        );
    }
}
