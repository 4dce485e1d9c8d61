//! The flags of `cvdmirror analyze`, for the lead to mount as a subcommand,
//! and their conversion into validated [`Options`].

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::aggregate::{LoggedAt, Options};
use super::time::parse_offset;

/// Read access logs and explain a traffic incident: timeline per file class,
/// surge episodes, cdiff-404 → full-download fallback chains, aborted
/// downloads, top clients, agents and files.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Access logs in combined format (cvdmirror, Apache, nginx), plain or
    /// gzip; `-` reads standard input.
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

    /// Longest time from a client's last cdiff 404 to its whole download
    /// for the two to count as one fallback chain.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_secs)]
    pub chain_window: i64,

    /// Smallest traffic that can be a surge, per second (`128KiB`, `1MB`, `8Mbit`).
    #[arg(long, value_name = "RATE", default_value = "128KiB", value_parser = parse_rate)]
    pub min_rate: f64,

    /// Whether log timestamps mark the start of a request (Apache,
    /// cvdmirror) or its end (nginx).
    #[arg(long, value_enum, default_value_t = LoggedAt::Start)]
    pub logged_at: LoggedAt,

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
            min_rate: self.min_rate,
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

/// Bytes per second: a number with an optional unit (`k`/`KB`, `KiB`,
/// `M`/`MB`, `MiB`, `G`/`GB`, `GiB`; `kbit`, `Mbit`, `Gbit` for bits).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim().trim_end_matches("/s");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a rate: {s:?}"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "kbit" => 125.0,
        "mbit" => 125e3,
        "gbit" => 125e6,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let v = n * factor;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("out of range".into())
    }
}

/// `+0200`, `-0530`, `UTC`.
pub fn parse_zone(s: &str) -> Result<i32, String> {
    parse_offset(s).ok_or_else(|| format!("expected +HHMM, -HHMM or UTC, not {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_secs("1m"), Ok(60));
        assert!(parse_secs("0s").is_err());
        assert_eq!(parse_rate("128KiB"), Ok(131_072.0));
        assert_eq!(parse_rate("8Mbit"), Ok(1e6));
        assert_eq!(
            parse_time("2026-11-29 16:41"),
            parse_time("2026-11-29T16:41:00Z")
        );
        assert_eq!(parse_zone("+0200"), Ok(7200));
    }
}
