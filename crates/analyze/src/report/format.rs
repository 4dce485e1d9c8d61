//! Numbers worded for people, the same in the terminal summary and the
//! HTML page: percentages, decimal byte sizes and link rates.

/// Percentage of `part` in `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `88 %`.
pub fn pct(p: f64) -> String {
    // One decimal where rounding would claim "0 %" or "100 %" falsely.
    if (p > 0.0 && p < 1.0) || (99.5..100.0).contains(&p) {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

pub use cvdmirror_formats::rate::human_bytes;

/// `93.4 Mbit/s`.
pub fn mbit(bits_per_sec: f64) -> String {
    let m = bits_per_sec / 1e6;
    if m >= 10.0 {
        format!("{m:.0} Mbit/s")
    } else if m >= 0.01 {
        format!("{m:.2} Mbit/s")
    } else {
        format!("{:.1} kbit/s", bits_per_sec / 1e3)
    }
}
