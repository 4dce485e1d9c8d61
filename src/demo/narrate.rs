//! The narration: timestamped lines on stdout that tell what the mirror is
//! doing, the alerts as they start firing, and the summary at the end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::clients::Stats;
use super::mirror::Mirror;
use super::upstream::Upstream;
use crate::rate::human_bytes;

/// Timestamped lines on stdout.
#[derive(Clone)]
pub struct Narrator;

impl Narrator {
    pub fn new() -> Self {
        Self
    }

    pub fn line(&self, text: &str) {
        println!("{} {text}", clock(SystemTime::now()));
    }

    pub fn raw(&self, text: &str) {
        println!("{text}");
    }

    pub fn blank(&self) {
        println!();
    }
}

/// `HH:MM:SS` (UTC): the standard library knows no time zones.
fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Says when an alert starts firing (a real mirror would call its webhook
/// and log a WARN; the demo's log has that line too).
pub fn narrate_alerts(
    observer: &crate::observe::Observer,
    firing: &mut std::collections::BTreeSet<&'static str>,
    say: &Narrator,
) {
    let now: Vec<&'static str> = observer
        .alert_names()
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
    if now.iter().all(|name| firing.contains(name)) {
        firing.retain(|name| now.contains(name));
        return;
    }
    let status: serde_json::Value =
        serde_json::from_str(&observer.status_json_text(false)).unwrap_or_default();
    for name in &now {
        if firing.contains(name) {
            continue;
        }
        let summary = status["alerts"]
            .as_array()
            .and_then(|alerts| alerts.iter().find(|a| a["alert"] == *name))
            .and_then(|a| a["summary"].as_str())
            .unwrap_or("");
        say.line(&format!(
            "alert `{name}` fires: {summary} (the status page shows it; a webhook would be called)"
        ));
    }
    *firing = now.into_iter().collect();
}

pub fn summary(
    say: &Narrator,
    stats: &Stats,
    mirror: &Mirror,
    upstream: &Upstream,
    elapsed: Duration,
) {
    let status: serde_json::Value =
        serde_json::from_str(&mirror.observer.status_json_text(false)).unwrap_or_default();
    let code = |c: &str| status["status_codes"][c].as_u64().unwrap_or(0);
    let published = mirror.status.borrow().published.get("daily").copied();
    let passes = &status["sync"]["passes"];
    say.blank();
    say.raw(&format!("Summary ({} s of scenario)", elapsed.as_secs()));
    say.raw(&format!(
        "  mirror served   {} requests, {} ({} × 200, {} × 206, {} × 404, {} × 429)",
        status["totals"]["requests"].as_u64().unwrap_or(0),
        human_bytes(status["totals"]["bytes"].as_u64().unwrap_or(0)),
        code("200"),
        code("206"),
        code("404"),
        code("429")
    ));
    say.raw(&format!(
        "  clients         {} patched with cdiffs, {} downloaded the whole CVD, {} unfinished; {} refusals honoured",
        Stats::get(&stats.patched),
        Stats::get(&stats.full_downloads),
        Stats::get(&stats.unfinished),
        Stats::get(&stats.refused)
    ));
    say.raw(&format!(
        "  versions        upstream daily {}, mirror publishes {}",
        upstream.first + 2,
        published.map_or_else(|| "nothing".to_owned(), |v| format!("daily {v}"))
    ));
    say.raw(&format!(
        "  sync passes     {} ok, {} failed; {} self-healing requests from clients",
        passes["ok"].as_u64().unwrap_or(0),
        passes["failed"].as_u64().unwrap_or(0),
        status["sync"]["heal_requests"].as_u64().unwrap_or(0)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_hours_minutes_seconds() {
        assert_eq!(
            clock(UNIX_EPOCH + Duration::from_secs(86_400 + 3_723)),
            "01:02:03"
        );
    }
}
