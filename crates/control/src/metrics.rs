//! What traffic control adds to the metrics beside the status source's own:
//! the labels its admission decisions are counted by, and the herd gate's
//! gauges, read at scrape time.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::limits::Limits;

/// Labels of `cvdmirror_traffic_control_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) decision: &'static str,
    pub(crate) limit: &'static str,
}

/// The herd gate's waiting list, read at scrape time from the limits in
/// force (nothing while no gate is configured).
#[derive(Debug)]
pub(crate) struct HerdCollector {
    pub(crate) limits: Arc<ArcSwap<Limits>>,
}

impl Collector for HerdCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(herd) = self.limits.load().herd_stats() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "herd_active_transfers",
                "Whole-database downloads the herd gate has admitted that are still running.",
                herd.active,
            ),
            (
                "herd_capacity_transfers",
                "Downloads the gate admits at the class's available rate (available / bulk_min_rate).",
                herd.capacity,
            ),
            (
                "herd_open",
                "1 while the herd gate would admit one more download, else 0.",
                u64::from(herd.open),
            ),
            (
                "herd_waiting_clients",
                "Clients the herd gate refused whose Retry-After appointment is still ahead.",
                herd.waiting,
            ),
            (
                "herd_queue_seconds",
                "Seconds until the latest appointment the herd gate handed out (0: nobody waits).",
                herd.queue_secs,
            ),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
