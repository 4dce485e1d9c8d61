//! Inline SVG charts for the HTML report: stacked areas per traffic class
//! over time, with the detected episodes shaded. Hand-written so the page
//! needs no script, no library and no network to render.

use std::fmt::Write as _;

use super::html::escape;
use crate::classify::Class;
use crate::time::format_clock;

const W: f64 = 960.0;
const H: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;

/// Fill colours of the classes (cvd, cdiff, header checks, sign, other).
pub const COLOURS: [&str; Class::COUNT] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c8c8c"];

/// A chart to draw.
pub struct Chart<'a> {
    /// Accessible title.
    pub title: &'a str,
    /// Unit shown on the y axis (`Mbit/s`).
    pub unit: &'a str,
    /// Bucket starts (UTC seconds), in order.
    pub times: &'a [i64],
    /// Per bucket, the stacked values, one per class.
    pub values: &'a [[f64; Class::COUNT]],
    /// Bucket width in seconds.
    pub width_secs: i64,
    /// Shaded spans (start, end) in UTC seconds.
    pub shaded: &'a [(i64, i64)],
    /// Horizontal reference lines (value, label).
    pub lines: &'a [(f64, &'a str)],
    /// Zone for axis labels.
    pub offset: i32,
}

/// Renders a stacked-area chart as an `<svg>` element.
pub fn stacked(c: &Chart<'_>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}"><title>{}</title>"#,
        escape(c.title),
        escape(c.title)
    );
    let (Some(&t0), Some(&tn)) = (c.times.first(), c.times.last()) else {
        s.push_str("</svg>");
        return s;
    };
    let t1 = tn + c.width_secs;
    let ymax = nice(
        c.values
            .iter()
            .map(|v| v.iter().sum::<f64>())
            .fold(0.0, f64::max)
            .max(c.lines.iter().map(|l| l.0).fold(0.0, f64::max))
            .max(1e-9),
    );
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0).max(1) as f64 * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / ymax * (H - TOP - BOTTOM);

    for &(a, b) in c.shaded {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#fff3b0"><title>episode {}–{}</title></rect>"##,
            x(a),
            (x(b) - x(a)).max(1.0),
            H - TOP - BOTTOM,
            format_clock(a, c.offset),
            format_clock(b, c.offset)
        );
    }
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{} {}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            short(v),
            escape(c.unit),
            y = y(v)
        );
    }
    // Stacked areas, one polygon per class; each bucket is a flat step.
    let mut lower = vec![0.0f64; c.values.len()];
    for (k, colour) in COLOURS.iter().enumerate() {
        let upper: Vec<f64> = lower.iter().zip(c.values).map(|(l, v)| l + v[k]).collect();
        let mut pts = String::new();
        for (i, &t) in c.times.iter().enumerate() {
            let _ = write!(
                pts,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(t),
                y(upper[i]),
                x(t + c.width_secs),
                y(upper[i])
            );
        }
        for (i, &t) in c.times.iter().enumerate().rev() {
            let _ = write!(
                pts,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(t + c.width_secs),
                y(lower[i]),
                x(t),
                y(lower[i])
            );
        }
        let _ = write!(
            s,
            r#"<polygon points="{}" fill="{colour}" fill-opacity="0.85"/>"#,
            pts.trim_end()
        );
        lower = upper;
    }
    for &(v, label) in c.lines {
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#333" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            W - RIGHT,
            W - RIGHT - 2.0,
            y(v) - 3.0,
            escape(label),
            yy = y(v)
        );
    }
    let ticks = 8;
    for i in 0..=ticks {
        let t = t0 + (t1 - t0) * i / ticks;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            x(t),
            H - 8.0,
            format_clock(t, c.offset)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#555"/></svg>"##,
        H - BOTTOM
    );
    s
}

/// A round axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
