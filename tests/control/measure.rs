//! Measurements the way `bandwidth-prior-art.md` defines them: bytes per
//! one-second window on the receiving side, accuracy against the configured
//! rate, and Jain's fairness index.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::net::Trace;

/// A big whole-CVD body: nobody finishes it within a measurement.
pub const BIG: usize = 20_000_000;
/// A whole CVD just above the default bulk threshold (1 MiB).
pub const MID: usize = 1_200_000;

/// `s` seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Bytes as megabytes, for reports.
pub fn mb(bytes: f64) -> String {
    format!("{:.3} MB", bytes / 1e6)
}

/// Held by a test for as long as it measures rates or latency, so two
/// measurements never share this machine's cores: a test binary runs its
/// tests in parallel, and a neighbour's server and clients competing for
/// the CPU stall the one measured (the cap under test is the server's, not
/// the machine's). A failed test poisons nothing that matters here.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static MEASURING: Mutex<()> = Mutex::new(());
    MEASURING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes all `traces` received in each whole second `[t0 + k s, t0 + (k+1) s)`
/// for `k` in `windows`.
pub fn per_window(traces: &[&Trace], t0: Instant, windows: std::ops::Range<u32>) -> Vec<u64> {
    windows
        .map(|k| {
            let from = t0 + Duration::from_secs(u64::from(k));
            let to = from + Duration::from_secs(1);
            traces.iter().map(|t| t.bytes_between(from, to)).sum()
        })
        .collect()
}

/// `(achieved − target) / target` for each value.
pub fn errors(values: &[u64], target: f64) -> Vec<f64> {
    values
        .iter()
        .map(|&v| (v as f64 - target) / target)
        .collect()
}

/// The largest absolute relative error.
pub fn worst(errors: &[f64]) -> f64 {
    errors.iter().fold(0.0, |m: f64, e| m.max(e.abs()))
}

/// Jain's index `(Σx)² / (n·Σx²)`: 1 is perfectly fair.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible enough
/// and fast even unoptimized.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sleeps until `t` (measurement periods, never readiness).
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
