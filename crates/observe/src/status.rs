//! `/status.json`: one document with everything the status page shows, and
//! the headline that says in one sentence whether things are fine.
//!
//! Byte and request counts are since the last reset; rates are from the
//! last one-second tick, in bytes per second (the page shows bits). The
//! public view (`public = true`) leaves out client addresses unless
//! `[observe] public_clients` allows them.
//!
//! The sync section also says, per database, which signatures the published
//! CVD carries (the legacy one in its header, a ClamAV 1.5 `.sign`, or
//! both) and who signed the `.sign`, and lists the upstream files the
//! engine refused recently, newest first.
//!
//! On a fleet node, `fleet` is this node's view of its fleet
//! ([`FleetSnapshot`]: nodes with their versions, link load, sync health,
//! age and flags; the lease; consistent versions; Redis's state) and
//! `fleet.lost`, the nodes that left the view and have not come back.
//! Without a fleet the key is absent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use cvdmirror_fleet::FleetSnapshot;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::alerts::signatures::short_fingerprint;
use super::alerts::{ActiveAlert, bits};
use super::class::RequestClass;
use super::history::BUCKET;
use super::source::{Headline, Level};
use super::{Observer, lock};
use crate::sync::signatures::{DbSignatures, Rejections};

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `sync.signatures`: per database, `{"version", "kinds", "legacy", "sign":
/// {"signer", "issuer", "fingerprint", "fingerprint_short"} or null,
/// "sign_missing_since"}`.
pub fn signatures_json(signatures: &BTreeMap<String, DbSignatures>) -> Value {
    signatures
        .iter()
        .map(|(db, s)| {
            let sign = s.sign.as_ref().map(|by| {
                json!({
                    "signer": by.signer,
                    "issuer": by.issuer,
                    "fingerprint": by.fingerprint,
                    "fingerprint_short": short_fingerprint(&by.fingerprint),
                })
            });
            (
                db.clone(),
                json!({
                    "version": s.version,
                    "kinds": s.kinds(),
                    "legacy": s.legacy,
                    "sign": sign,
                    "sign_missing_since": s.sign_missing_since,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `sync.rejections`: every rejection kept, newest first.
pub fn rejections_json(rejections: &Rejections) -> Value {
    let mut all: Vec<Value> = rejections
        .iter()
        .map(|r| json!({"at": r.at, "file": r.file, "reason": r.reason}))
        .collect();
    all.reverse();
    Value::Array(all)
}

/// `fleet`: `snapshot` as `/fleet.json` has it, and `lost`: the nodes
/// that left the view and are not back in it, `[{"node", "since"}]` (Unix
/// time first missed).
pub fn fleet_json(snapshot: &FleetSnapshot, lost: &[(String, u64)]) -> Value {
    let mut fleet = serde_json::to_value(snapshot).unwrap_or_else(|_| json!({}));
    fleet["lost"] = lost
        .iter()
        .filter(|(node, _)| !snapshot.nodes.iter().any(|n| &n.node == node))
        .map(|(node, since)| json!({"node": node, "since": since}))
        .collect();
    fleet
}

/// Builds the document.
pub fn build(observer: &Observer, public: bool) -> Value {
    let since = observer.traffic.since_reset();
    let rates = observer.rates();
    let now = SystemTime::now();
    let show_clients = !public || observer.config().public_clients;

    let mut class_bytes = [0u64; RequestClass::COUNT];
    let mut class_requests = [0u64; RequestClass::COUNT];
    let sites: Vec<Value> = since
        .sites
        .iter()
        .map(|(name, bytes, requests)| {
            for i in 0..RequestClass::COUNT {
                class_bytes[i] += bytes[i];
                class_requests[i] += requests[i];
            }
            json!({
                "site": name.as_ref(),
                "bytes_per_s": rates.site.get(name).copied().unwrap_or(0.0),
                "bytes": bytes.iter().sum::<u64>(),
                "requests": requests.iter().sum::<u64>(),
                "classes": RequestClass::ALL.iter().map(|c| (c.as_str().to_owned(), json!({
                    "bytes": bytes[c.index()], "requests": requests[c.index()],
                }))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let classes: Vec<Value> = RequestClass::ALL
        .iter()
        .map(|c| {
            json!({
                "class": c.as_str(),
                "requests": class_requests[c.index()],
                "bytes": class_bytes[c.index()],
                "bytes_per_s": rates.class[c.index()],
                "requests_per_s": rates.class_requests[c.index()],
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for ((_, _, code), n) in &since.codes {
        *codes.entry(code.to_string()).or_default() += n;
    }

    let top = observer.traffic.top(observer.config().top);
    let (live, history, window5) = {
        let live = lock(&observer.live).1.clone();
        let history = lock(&observer.history);
        let window5 = history.window(Instant::now(), Duration::from_secs(300));
        (live, history.buckets(), window5)
    };
    let (distinct5, refused5) = observer
        .traffic
        .distinct_clients_since(now - Duration::from_secs(300));
    let clients = if show_clients {
        json!({
            "live": live.iter().map(|r| json!({
                "client": r.client.to_string(), "bytes_per_s": r.bytes_per_s, "transfers": r.transfers,
            })).collect::<Vec<_>>(),
            "top": top.clients.iter().map(|row| json!({
                "client": row.key.to_string(), "bytes": row.usage.bytes,
                "requests": row.usage.requests, "running": row.running,
            })).collect::<Vec<_>>(),
        })
    } else {
        Value::Null
    };
    let capacity = observer.link_capacity();
    let fleet = observer
        .fleet()
        .map(|view| fleet_json(&view.snapshot(), &observer.lost_fleet_nodes()));
    let active_alerts = lock(&observer.alerts).active();
    let sources: Vec<_> = observer
        .sources
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let sync = observer.sync().map(|s| {
        let status = s.status.borrow().clone();
        let tally = s.tally();
        json!({
            "running": status.running,
            "published": status.published,
            "advertised": status.advertised,
            "behind": status.behind(),
            "last_pass": status.last_pass,
            "passes": {"ok": tally.ok, "failed": tally.failed},
            "consecutive_failures": tally.consecutive_failures,
            "last_success": tally.last_success,
            "last_error": tally.last_error,
            "heal_requests": s.trigger.heal_requests(),
            "signatures": signatures_json(&status.signatures),
            "rejections": rejections_json(&status.rejections),
            "unusable_signs": rejections_json(&status.unusable_signs),
            "rejections_total": tally.rejections.values().sum::<u64>(),
        })
    });

    let facts = Facts {
        rate: rates.total,
        capacity,
        threshold: observer.config().alerts.link_threshold,
        refused_5m: window5.requests[RequestClass::Refused.index()],
        refused_clients_5m: refused5,
        herd_5m: window5.requests[RequestClass::Cvd.index()] + window5.cdiff_not_found,
        transfers: observer.traffic.active_transfers(),
        alerts: &active_alerts,
        behind: observer.sync().map_or(0, |s| {
            s.status
                .borrow()
                .behind()
                .values()
                .copied()
                .max()
                .unwrap_or(0)
        }),
        sync_failures: observer
            .sync()
            .map_or(0, |s| s.tally().consecutive_failures),
        extra: sources.iter().filter_map(|s| s.headline()).collect(),
    };

    let mut doc = json!({
        "generated": unix(now),
        "started": unix(observer.started),
        "since_reset": since.at.map(unix),
        "public": public,
        "headline": headline(&facts),
        "link": {
            "bytes_per_s": rates.total,
            "capacity_bytes_per_s": capacity,
            "share": capacity.filter(|&c| c > 0).map(|c| rates.total / c as f64),
        },
        "connections": observer.connections(),
        "active_transfers": facts.transfers,
        "totals": {
            "requests": class_requests.iter().sum::<u64>(),
            "bytes": class_bytes.iter().sum::<u64>(),
        },
        "classes": classes,
        "status_codes": codes,
        "cdiff_not_found": since.cdiff_not_found,
        "sign_not_found": since.sign_not_found,
        "sites": sites,
        "clients": clients,
        "distinct_clients_5m": distinct5,
        "refused_clients_5m": refused5,
        "files": top.files.iter().map(|row| json!({
            "file": row.key.as_ref(), "bytes": row.usage.bytes,
            "requests": row.usage.requests, "running": row.running,
        })).collect::<Vec<_>>(),
        "history": {
            "bucket_seconds": BUCKET.as_secs(),
            "classes": RequestClass::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "buckets": history,
        },
        "sync": sync,
        "alerts": active_alerts,
        "sources": sources.iter().map(|s| (s.name().to_owned(), s.status())).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(fleet) = fleet {
        doc["fleet"] = fleet;
    }
    doc
}

/// What the headline is made of.
struct Facts<'a> {
    rate: f64,
    capacity: Option<u64>,
    threshold: f64,
    refused_5m: u64,
    refused_clients_5m: u64,
    herd_5m: u64,
    transfers: usize,
    alerts: &'a [ActiveAlert],
    behind: u32,
    sync_failures: u32,
    extra: Vec<Headline>,
}

/// One sentence, most severe first, e.g. "Link 94 % of cap — herd: 412
/// clients refused in the last 5 min".
fn headline(f: &Facts<'_>) -> Headline {
    let mut parts: Vec<Headline> = Vec::new();
    let firing = |name: &str| f.alerts.iter().any(|a| a.alert == name);
    let mut part = |level, text: String| parts.push(Headline { level, text });
    match f.capacity.filter(|&c| c > 0) {
        Some(cap) => {
            let share = f.rate / cap as f64;
            let level = if firing("link_saturated") {
                Level::Critical
            } else if share >= f.threshold {
                Level::Warn
            } else {
                Level::Ok
            };
            part(
                level,
                format!(
                    "Link {:.0} % of cap ({} of {})",
                    share * 100.0,
                    bits(f.rate),
                    bits(cap as f64)
                ),
            );
        }
        None => part(Level::Ok, format!("Sending {}", bits(f.rate))),
    }
    if firing("herd") {
        part(
            Level::Critical,
            format!(
                "herd: {} whole-CVD downloads and cdiff 404s in the last 5 min",
                f.herd_5m
            ),
        );
    }
    if f.refused_5m > 0 {
        part(
            Level::Warn,
            format!(
                "{} clients refused in the last 5 min ({} requests)",
                f.refused_clients_5m, f.refused_5m
            ),
        );
    }
    if f.sync_failures > 0 {
        let level = if firing("sync_failing") {
            Level::Critical
        } else {
            Level::Warn
        };
        part(
            level,
            format!("{} sync passes failed in a row", f.sync_failures),
        );
    }
    if f.behind > 0 {
        let level = if firing("mirror_behind") {
            Level::Critical
        } else {
            Level::Warn
        };
        part(level, format!("{} version(s) behind upstream", f.behind));
    }
    if firing("quota_exhausted") {
        part(Level::Critical, "a quota is exhausted".into());
    }
    // The signature and fleet alerts say it best themselves.
    let own_words = ["sign_missing", "signer_changed", "upstream_rejected"];
    for name in own_words.into_iter().chain(super::alerts::FLEET_NAMES) {
        if let Some(a) = f.alerts.iter().find(|a| a.alert == name) {
            part(Level::Warn, a.summary.clone());
        }
    }
    parts.extend(f.extra.iter().cloned());
    let level = parts.iter().map(|p| p.level).max().unwrap_or(Level::Ok);
    if level == Level::Ok {
        parts.push(Headline {
            level: Level::Ok,
            text: format!("all quiet, {} transfers running", f.transfers),
        });
    }
    // The link sentence stays first; the rest by severity.
    let (first, rest) = parts.split_at_mut(1);
    rest.sort_by_key(|p| std::cmp::Reverse(p.level));
    let text = first
        .iter()
        .chain(rest.iter())
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(" — ");
    Headline { level, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(rate: f64, alerts: &[ActiveAlert]) -> Facts<'_> {
        Facts {
            rate,
            capacity: Some(12_500_000),
            threshold: 0.9,
            refused_5m: 0,
            refused_clients_5m: 0,
            herd_5m: 0,
            transfers: 3,
            alerts,
            behind: 0,
            sync_failures: 0,
            extra: Vec::new(),
        }
    }

    #[test]
    fn a_quiet_mirror_says_so() {
        let h = headline(&facts(1_250_000.0, &[]));
        assert_eq!(h.level, Level::Ok);
        assert_eq!(
            h.text,
            "Link 10 % of cap (10.0 Mbit/s of 100.0 Mbit/s) — all quiet, 3 transfers running"
        );
    }

    #[test]
    fn signature_alerts_are_in_the_headline() {
        let alerts = [ActiveAlert {
            alert: "sign_missing",
            summary: "upstream stopped providing .sign files: published without one: daily 27781 (last signed 27780)".into(),
            since: 0,
        }];
        let h = headline(&facts(1_250_000.0, &alerts));
        assert_eq!(h.level, Level::Warn);
        assert!(
            h.text
                .ends_with(" — upstream stopped providing .sign files: published without one: daily 27781 (last signed 27780)"),
            "{}",
            h.text
        );
    }

    #[test]
    fn a_bad_sunday_reads_like_one() {
        let alerts = [ActiveAlert {
            alert: "link_saturated",
            summary: String::new(),
            since: 0,
        }];
        let mut f = facts(11_750_000.0, &alerts);
        f.refused_5m = 900;
        f.refused_clients_5m = 412;
        let h = headline(&f);
        assert_eq!(h.level, Level::Critical);
        assert_eq!(
            h.text,
            "Link 94 % of cap (94.0 Mbit/s of 100.0 Mbit/s) — 412 clients refused in the last 5 min (900 requests)"
        );
    }
}
