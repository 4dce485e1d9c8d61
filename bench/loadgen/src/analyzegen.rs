//! Helper for `bench/analyze.sh` (cvdmirror analyze vs goaccess): writes an
//! access log of a lagging-mirror incident with `cvdmirror::analyze::generate`
//! — freshclam clients checking every 30–90 minutes over two days, a
//! missing patch from 16:41 to 18:17 on the first, a herd of whole
//! downloads sharing a 100 Mbit/s link — in any dialect the analyzer reads,
//! and prints the ground truth to standard error.
//!
//! Writes a file or standard output only; every loop is bounded by the
//! requested size.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use cvdmirror::analyze::generate::{self, Dialect, Scenario};
use cvdmirror::analyze::stamps::Stamp;

const USAGE: &str = "\
usage: cvdmirror-analyzegen [--requests 2000000] [--dialect nginx] \\
           [--stamp default|start|end] [--seed 1] [--out FILE]

Writes about --requests requests (freshclam checks, a missing-patch herd,
some web traffic) as an access log in --dialect (cvdmirror, apache,
apache-D, apache-T, nginx, nginx-timed, nginx-json, caddy), stamped at the
request's arrival or completion (default: as that server does), to --out
or standard output, in the order a server writes them. Prints the ground
truth (lines, bytes, trigger, chains) to standard error.";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvdmirror-analyzegen: {e}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut requests, mut dialect, mut stamp, mut seed, mut out) =
        (2_000_000u64, Dialect::Nginx, None, 1u64, None);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--requests" => requests = value.parse().map_err(|e| format!("--requests: {e}"))?,
            "--dialect" => {
                dialect = Dialect::from_name(&value).ok_or(format!("unknown dialect {value}"))?
            }
            "--stamp" => {
                stamp = match value.as_str() {
                    "start" => Some(Stamp::Start),
                    "end" => Some(Stamp::End),
                    "default" => None,
                    _ => return Err(format!("--stamp {value}: start, end or default")),
                }
            }
            "--seed" => seed = value.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => out = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if requests == 0 || requests > 100_000_000 {
        return Err("--requests must be between 1 and 100000000".into());
    }
    let stamp = stamp.unwrap_or(dialect.default_stamp());
    let inc = generate::generate(&Scenario::bench(seed, requests));
    let lines = match &out {
        Some(path) => {
            let f = File::create(path).map_err(|e| format!("{path}: {e}"))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let n = generate::write_log(&mut w, &inc.requests, dialect, stamp);
            w.flush().map_err(|e| format!("{path}: {e}"))?;
            n
        }
        None => {
            let mut w = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            let n = generate::write_log(&mut w, &inc.requests, dialect, stamp);
            w.flush().map_err(|e| e.to_string())?;
            n
        }
    }
    .map_err(|e| e.to_string())?;
    let t = &inc.truth;
    eprintln!(
        "lines={lines} bytes={} dialect={} stamp={} trigger={} trigger_first={} trigger_last={} trigger_clients={} chains={} fallback_clients={} chain_bytes={} longest_ms={} true_peak_mbit={:.1}",
        t.total_bytes,
        dialect.name(),
        stamp.word(),
        t.trigger_file,
        t.trigger_first,
        t.trigger_last,
        t.trigger_clients,
        t.chains,
        t.fallback_clients,
        t.chain_bytes,
        t.longest_ms,
        t.peak_bits_per_sec() / 1e6
    );
    Ok(())
}
