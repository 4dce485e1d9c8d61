//! `steal`: records the CPU time the hypervisor took from this machine, for
//! `bench/incident.sh`.
//!
//! On a virtual machine the host may leave a virtual CPU unscheduled for tens
//! of milliseconds (`steal` in `/proc/stat`). Everything on that CPU stops
//! meanwhile: the server, the probe, the kernel's packet scheduler. This mode
//! reads the machine's steal counter every `--interval-ms` (5) and writes a
//! line to `--out` whenever it moved: the Unix time in ms and the clock ticks
//! (`USER_HZ`, normally 100 per second, summed over all CPUs) stolen since the
//! previous line. The first line, with 0 ticks, marks the start. The bench
//! uses it to tell which probe requests overlapped such a stall, which no
//! server can prevent. Runs for `--duration-secs` or until killed.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use crate::herd::unix_ms;

const MAX_DURATION: Duration = Duration::from_secs(3600);

/// The machine's total steal ticks (the 8th value of the `cpu` line).
fn steal_ticks() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat.lines().next().unwrap_or_default();
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some("cpu") {
        return Err("/proc/stat: no aggregate cpu line".into());
    }
    fields
        .nth(7)
        .ok_or("/proc/stat: no steal column")?
        .parse()
        .map_err(|e| format!("/proc/stat steal: {e}"))
}

/// Runs the sampler; returns the `RESULT` line.
pub fn run(args: &[String]) -> Result<String, String> {
    let (mut out, mut interval, mut duration) =
        (String::new(), Duration::from_millis(5), MAX_DURATION);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--out" => out.clone_from(val),
            "--interval-ms" => interval = Duration::from_millis(num(val)?),
            "--duration-secs" => duration = Duration::from_secs(num(val)?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if out.is_empty() || interval.is_zero() || duration > MAX_DURATION {
        return Err("--out is required; --interval-ms > 0; --duration-secs <= 3600".into());
    }
    let mut file = std::fs::File::create(&out).map_err(|e| format!("{out}: {e}"))?;
    let write = |file: &mut std::fs::File, line: String| {
        file.write_all(line.as_bytes())
            .map_err(|e| format!("{out}: {e}"))
    };
    let start = Instant::now();
    let mut last = steal_ticks()?;
    let (first, mut total) = (last, 0u64);
    write(&mut file, format!("{}\t0\n", unix_ms()))?;
    while start.elapsed() < duration {
        std::thread::sleep(interval);
        let now = steal_ticks()?;
        if now > last {
            write(&mut file, format!("{}\t{}\n", unix_ms(), now - last))?;
            total = now - first;
            last = now;
        }
    }
    Ok(format!("RESULT mode=steal ticks={total}"))
}
