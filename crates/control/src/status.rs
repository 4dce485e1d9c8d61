//! Traffic control as a status source: its section of the status page and
//! `/status.json` (the shaper's tree and the limits), the metrics it
//! registers, and the headline while the herd gate is closed.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::Control;
use crate::metrics::HerdCollector;
use crate::observe::{Headline, Level, StatusSource};
use crate::shape::Rate;

/// Traffic control on the status page and in metrics: the shaper's tree
/// (link, sites, classes, clients: rates, caps, waiting flows) and the
/// limits (herd gate, quotas, request rates, connection slots).
impl StatusSource for Control {
    fn name(&self) -> &str {
        "traffic_control"
    }

    fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let limits = self.limits().status();
        let snapshot = self.shaper.snapshot();
        let cap = |c: Option<Rate>| c.map(|r| r.bytes_per_sec());
        // Flat fields and arrays of rows: the page renders them as cards and tables.
        let mut classes = Vec::new();
        let mut clients = Vec::new();
        for site in &snapshot.sites {
            for class in &site.classes {
                classes.push(json!({
                    "site": site.node.name, "class": class.node.name, "priority": class.priority,
                    "now_bytes_per_s": class.node.rate, "cap_bytes_per_s": cap(class.node.cap),
                    "flows": class.node.active_flows, "waiting": class.node.waiting_flows, "sent_bytes": class.node.bytes,
                }));
                for client in &class.clients {
                    clients.push(json!({
                        "client": client.name, "class": class.node.name, "now_bytes_per_s": client.rate,
                        "cap_bytes_per_s": cap(client.cap), "flows": client.active_flows, "waiting": client.waiting_flows,
                    }));
                }
            }
        }
        clients.sort_by(|a, b| {
            b["now_bytes_per_s"]
                .as_f64()
                .partial_cmp(&a["now_bytes_per_s"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        clients.truncate(20);
        let herd = limits.herd.as_ref().map_or_else(
            || "off".to_owned(),
            |h| {
                format!(
                    "{} ({} running of {} allowed; {} admitted, {} refused; {} waiting, queue {} s)",
                    if h.open { "open" } else { "closed" },
                    h.active,
                    h.capacity,
                    h.admitted,
                    h.denied,
                    h.waiting,
                    h.queue_secs
                )
            },
        );
        let refused: Vec<_> = limits
            .refused
            .iter()
            .map(|(limit, n)| json!({ "limit": limit, "refused": n }))
            .collect();
        let quotas: Vec<_> = limits
            .top_client_quotas
            .iter()
            .map(|(site, client, q)| {
                json!({ "site": site, "client": client, "used_bytes": q.used, "allowed_now_bytes": q.allowed_now, "limit_bytes": q.limit })
            })
            .collect();
        json!({
            "active": self.is_active(),
            "link_cap_bytes_per_s": cap(snapshot.link.cap),
            "link_now_bytes_per_s": snapshot.link.rate,
            "link_guard_cap_bytes_per_s": cap(snapshot.guard_link_rate),
            "waiting_flows": self.shaper.waiting_flows(),
            "herd_gate": herd,
            "classes": classes,
            "busiest_clients": clients,
            "refused_by_limit": refused,
            "client_quotas": quotas,
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Admission decisions: admitted, slowed, or refused by which limit; slowed_running: a running transfer slowed by a quota that ran out",
            self.decisions.clone(),
        );
        registry.register_collector(Box::new(HerdCollector {
            limits: Arc::clone(&self.limits),
        }));
    }

    fn headline(&self) -> Option<Headline> {
        let herd = self.limits().herd_stats()?;
        (!herd.open).then(|| Headline {
            level: Level::Warn,
            text: format!(
                "herd gate closed: {} whole-database downloads running, {} refused so far, {} waiting for a slot",
                herd.active, herd.denied, herd.waiting
            ),
        })
    }
}
