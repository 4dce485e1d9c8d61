//! Finds the traffic episodes in a timeline: when bytes per bucket surged
//! above normal, and when they came back.
//!
//! Method (robust to an incident that fills most of the log):
//! - *baseline* = the 25th percentile of bytes per bucket over the whole
//!   span, empty buckets included: the level of the quieter quarter;
//! - *spread* σ = 1.4826 × the median absolute deviation from the baseline
//!   over the buckets at or below the median (a robust standard deviation of
//!   the quiet half, blind to the surge itself);
//! - *onset threshold* = max(baseline + 6σ, 3 × baseline, `min_rate` × bucket
//!   width); the floor keeps a single download on an idle mirror from being
//!   an "incident";
//! - *end threshold* = halfway between baseline and onset threshold
//!   (hysteresis, so an episode does not flicker on and off at its edge);
//! - an episode *starts* at the first of [`ONSET_RUN`] consecutive buckets
//!   above the onset threshold and *ends* at the first of [`QUIET_RUN`]
//!   consecutive buckets at or below the end threshold (that bucket's start
//!   is when traffic was back to normal). An episode still running at the
//!   end of the log ends with the log and is marked `ongoing`.

/// Consecutive buckets above the onset threshold that start an episode.
pub const ONSET_RUN: usize = 2;
/// Consecutive buckets at or below the end threshold that end one.
pub const QUIET_RUN: usize = 3;
const K_SIGMA: f64 = 6.0;
const RATIO: f64 = 3.0;

/// The normal level and the thresholds derived from it (bytes per bucket).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Baseline {
    /// Normal bytes per bucket.
    pub level: f64,
    /// Robust spread of the quiet half.
    pub spread: f64,
    /// A bucket above this is surging.
    pub onset_threshold: f64,
    /// A bucket at or below this is back to normal.
    pub end_threshold: f64,
}

/// One surge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Episode {
    /// Start of the first surging bucket (UTC seconds).
    pub start: i64,
    /// Start of the first bucket back at normal (exclusive end).
    pub end: i64,
    /// Whether the log ended before traffic went back to normal.
    pub ongoing: bool,
    /// Start of the busiest bucket.
    pub peak_time: i64,
    /// Bytes in the busiest bucket.
    pub peak_bytes: u64,
}

/// Computes the baseline of `bytes` (one value per bucket, in time order).
pub fn baseline(bytes: &[u64], width_secs: i64, min_rate: f64) -> Baseline {
    if bytes.is_empty() {
        return Baseline::default();
    }
    let mut sorted: Vec<u64> = bytes.to_vec();
    sorted.sort_unstable();
    let level = quantile(&sorted, 0.25);
    let median = quantile(&sorted, 0.5);
    let mut dev: Vec<f64> = sorted
        .iter()
        .map(|&v| v as f64)
        .filter(|&v| v <= median)
        .map(|v| (v - level).abs())
        .collect();
    dev.sort_unstable_by(f64::total_cmp);
    let spread = 1.4826 * dev.get(dev.len() / 2).copied().unwrap_or(0.0);
    let floor = min_rate * width_secs as f64;
    let onset = (level + K_SIGMA * spread).max(RATIO * level).max(floor);
    Baseline {
        level,
        spread,
        onset_threshold: onset,
        end_threshold: level + (onset - level) / 2.0,
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

/// The episodes in a dense series of (bucket start, bytes).
pub fn detect(series: &[(i64, u64)], width_secs: i64, base: &Baseline) -> Vec<Episode> {
    let above = |i: usize| {
        series
            .get(i)
            .is_some_and(|&(_, v)| v as f64 > base.onset_threshold)
    };
    let quiet = |i: usize| {
        series
            .get(i)
            .is_some_and(|&(_, v)| v as f64 <= base.end_threshold)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < series.len() {
        if !(0..ONSET_RUN).all(|k| above(i + k)) {
            i += 1;
            continue;
        }
        let start = i;
        let (mut peak_time, mut peak_bytes) = series[i];
        let mut j = i;
        let end = loop {
            if j >= series.len() {
                break None;
            }
            if (0..QUIET_RUN).all(|k| quiet(j + k)) {
                break Some(j);
            }
            if series[j].1 > peak_bytes {
                (peak_time, peak_bytes) = series[j];
            }
            j += 1;
        };
        let last = series.len() - 1;
        out.push(Episode {
            start: series[start].0,
            end: match end {
                Some(e) => series[e].0,
                None => series[last].0 + width_secs,
            },
            ongoing: end.is_none() && !(last.saturating_sub(QUIET_RUN - 1)..=last).all(quiet),
            peak_time,
            peak_bytes,
        });
        i = end.unwrap_or(series.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[u64]) -> Vec<(i64, u64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 * 60, v))
            .collect()
    }

    #[test]
    fn finds_a_surge_and_its_end() {
        let mut v = vec![1000u64; 100];
        for x in v.iter_mut().skip(40).take(30) {
            *x = 500_000_000;
        }
        v[55] = 900; // a dip inside does not end it
        let s = series(&v);
        let bytes: Vec<u64> = v.clone();
        let b = baseline(&bytes, 60, 1000.0);
        assert_eq!(b.level, 1000.0);
        let e = detect(&s, 60, &b);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].start, e[0].end, e[0].ongoing),
            (40 * 60, 70 * 60, false)
        );
    }

    #[test]
    fn a_lone_download_on_an_idle_mirror_is_not_an_episode() {
        let mut v = vec![0u64; 60];
        v[10] = 60_000_000;
        let b = baseline(&v, 60, 131_072.0);
        assert!(detect(&series(&v), 60, &b).is_empty());
    }

    #[test]
    fn a_surge_at_the_end_is_ongoing() {
        let mut v = vec![10u64; 50];
        v.extend([10_000_000; 5]);
        let b = baseline(&v, 60, 1.0);
        let e = detect(&series(&v), 60, &b);
        assert!(e[0].ongoing);
        assert_eq!(e[0].end, 55 * 60);
    }
}
