//! `/metrics`: the observer's state in the Prometheus text format.
//!
//! Everything the observer counts is read at scrape time by one
//! [`Collector`], from the lifetime counters (so the admin reset of the
//! status page never makes a Prometheus counter go backwards). Sources
//! added with [`Observer::add_source`] register their own metrics in a
//! sub-registry of the same registry, so one scrape sees all of them.
//!
//! On a fleet node, `cvdmirror_fleet_*` gauges give this node's view of
//! its fleet: which nodes are up and lagging, their link load and
//! capacity, the consistent versions, Redis's state and the lease holder.
//!
//! Cardinality is bounded on purpose: labels are sites (from the config),
//! classes (nine), status codes, database names, signature kinds, the one
//! current signer per database and fleet node names; never clients or
//! files, whose tables live on the status page instead.

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Observer;
use super::class::RequestClass;

/// Reads the observer at scrape time.
#[derive(Debug)]
pub struct ObserverCollector {
    observer: Weak<Observer>,
}

impl ObserverCollector {
    /// Collects from `observer` while it lives.
    pub fn new(observer: Weak<Observer>) -> Self {
        Self { observer }
    }
}

type Labels<'a> = Vec<(&'static str, String)>;

fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ObserverCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(observer) = self.observer.upgrade() else {
            return Ok(());
        };
        let traffic = observer.traffic();
        traffic.flush();
        let e = &mut encoder;

        family(
            e,
            "cvdmirror_requests",
            "Requests completed, by site, request class and status code.",
            MetricType::Counter,
            traffic.codes().into_iter().map(|((site, class, code), n)| {
                (
                    vec![
                        ("site", site.to_string()),
                        ("class", class.as_str().to_owned()),
                        ("code", code.to_string()),
                    ],
                    ConstCounter::new(n),
                )
            }),
        )?;
        ConstCounter::new(traffic.sign_not_found()).encode(e.encode_descriptor(
            "cvdmirror_sign_not_found",
            "404 answers to requests for .sign files (ClamAV 1.5 clients; those in FIPS mode cannot update a CVD without its .sign).",
            None,
            MetricType::Counter,
        )?)?;
        let sites = traffic.sites();
        family(
            e,
            "cvdmirror_sent_bytes",
            "Response body bytes handed to client connections, counted as they are sent.",
            MetricType::Counter,
            sites.iter().flat_map(|(site, counters)| {
                let (bytes, _) = counters.load();
                RequestClass::ALL.into_iter().map(move |class| {
                    (
                        vec![
                            ("site", site.to_string()),
                            ("class", class.as_str().to_owned()),
                        ],
                        ConstCounter::new(bytes[class.index()]),
                    )
                })
            }),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "cvdmirror_request_duration_seconds",
                "Time from request head to the last body byte, by request class.",
                None,
                MetricType::Histogram,
            )?;
            for class in RequestClass::ALL {
                let labels = vec![("class", class.as_str().to_owned())];
                traffic.durations()[class.index()].encode(metric.encode_family(&labels)?)?;
            }
        }
        gauge(
            e,
            "cvdmirror_active_transfers",
            "Responses being sent right now.",
            traffic.active_transfers() as f64,
        )?;
        if let Some(connections) = observer.connections() {
            gauge(
                e,
                "cvdmirror_connections",
                "Client connections open right now.",
                connections as f64,
            )?;
        }
        let rates = observer.rates();
        gauge(
            e,
            "cvdmirror_throughput_bytes_per_second",
            "Bytes sent per second over the last sampler tick (1 s).",
            rates.total,
        )?;
        if let Some(capacity) = observer.link_capacity() {
            gauge(
                e,
                "cvdmirror_link_capacity_bytes_per_second",
                "The link capacity alerts compare against (from shaping or [alerts] link_capacity).",
                capacity as f64,
            )?;
        }
        family(
            e,
            "cvdmirror_alert_firing",
            "1 while an alert is firing.",
            MetricType::Gauge,
            observer.alert_names().into_iter().map(|(name, firing)| {
                (
                    vec![("alert", name.to_owned())],
                    ConstGauge::new(i64::from(firing)),
                )
            }),
        )?;
        self.encode_sync(e, &observer)?;
        encode_fleet(e, &observer)
    }
}

/// A gauge's value from a count that may, in theory, not fit.
fn int(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The `cvdmirror_fleet_*` families, on a fleet node only.
fn encode_fleet(e: &mut DescriptorEncoder, observer: &Observer) -> Result<(), std::fmt::Error> {
    let Some(view) = observer.fleet() else {
        return Ok(());
    };
    let view = view.snapshot();
    let lost = observer.lost_fleet_nodes();
    let node = |name: &str| vec![("node", name.to_owned())];
    gauge(
        e,
        "cvdmirror_fleet_nodes",
        "Fleet nodes whose report is fresh in this node's view (this one included).",
        view.nodes.iter().filter(|n| n.fresh).count() as f64,
    )?;
    family(
        e,
        "cvdmirror_fleet_node_up",
        "1 per fleet node whose report is fresh in this node's view; 0 for one whose report is old or that left the view and has not come back.",
        MetricType::Gauge,
        view.nodes
            .iter()
            .map(|n| (node(&n.node), ConstGauge::new(i64::from(n.fresh))))
            .chain(
                lost.iter()
                    .filter(|(name, _)| !view.nodes.iter().any(|n| &n.node == name))
                    .map(|(name, _)| (node(name), ConstGauge::new(0))),
            ),
    )?;
    family(
        e,
        "cvdmirror_fleet_node_lagging",
        "1 per fleet node that has been behind the fleet's newest version of a database for longer than the lag grace.",
        MetricType::Gauge,
        view.nodes
            .iter()
            .map(|n| (node(&n.node), ConstGauge::new(i64::from(n.lagging)))),
    )?;
    family(
        e,
        "cvdmirror_fleet_node_link_load_bytes_per_second",
        "What each fleet node reported sending, in bytes per second.",
        MetricType::Gauge,
        view.nodes.iter().map(|n| (node(&n.node), int(n.link.load))),
    )?;
    family(
        e,
        "cvdmirror_fleet_node_link_capacity_bytes_per_second",
        "Each fleet node's link capacity in bytes per second, where it knows one.",
        MetricType::Gauge,
        view.nodes
            .iter()
            .filter_map(|n| Some((node(&n.node), int(n.link.capacity?)))),
    )?;
    family(
        e,
        "cvdmirror_fleet_consistent_version",
        "Per database, the newest version every fresh, non-lagging fleet node publishes.",
        MetricType::Gauge,
        view.consistent_versions.iter().map(|(db, &v)| {
            (
                vec![("database", db.clone())],
                ConstGauge::new(i64::from(v)),
            )
        }),
    )?;
    gauge(
        e,
        "cvdmirror_fleet_redis_up",
        "1 while this node's heartbeats reach the fleet's Redis.",
        f64::from(u8::from(view.redis_ok)),
    )?;
    let holder = view.lease.holder.as_deref();
    let mut names: Vec<&str> = view.nodes.iter().map(|n| n.node.as_str()).collect();
    if let Some(holder) = holder
        && !names.contains(&holder)
    {
        names.push(holder);
    }
    family(
        e,
        "cvdmirror_fleet_lease_holder",
        "1 for the fleet node that holds the upstream lease (pulls from upstream), 0 for the other nodes in the view.",
        MetricType::Gauge,
        names
            .into_iter()
            .map(|name| (node(name), ConstGauge::new(i64::from(Some(name) == holder)))),
    )?;
    ConstCounter::new(view.lease.changes).encode(e.encode_descriptor(
        "cvdmirror_fleet_lease_changes",
        "New upstream lease holders (or fencing tokens) this node has seen since it started, the first included.",
        None,
        MetricType::Counter,
    )?)
}

impl ObserverCollector {
    fn encode_sync(
        &self,
        e: &mut DescriptorEncoder,
        observer: &Observer,
    ) -> Result<(), std::fmt::Error> {
        let Some(sync) = observer.sync() else {
            return Ok(());
        };
        let status = sync.status.borrow().clone();
        let tally = sync.tally();
        family(
            e,
            "cvdmirror_sync_passes",
            "Sync passes seen since start, by result.",
            MetricType::Counter,
            [("ok", tally.ok), ("failed", tally.failed)]
                .into_iter()
                .map(|(result, n)| (vec![("result", result.to_owned())], ConstCounter::new(n))),
        )?;
        gauge(
            e,
            "cvdmirror_sync_consecutive_failures",
            "Failed sync passes since the last success.",
            f64::from(tally.consecutive_failures),
        )?;
        if let Some(t) = tally.last_success {
            gauge(
                e,
                "cvdmirror_sync_last_success_timestamp_seconds",
                "Unix time the last successful sync pass finished.",
                t as f64,
            )?;
        }
        gauge(
            e,
            "cvdmirror_sync_running",
            "1 while a sync pass runs.",
            f64::from(u8::from(status.running)),
        )?;
        let behind = status.behind();
        let databases: Vec<&String> = status
            .published
            .keys()
            .chain(status.advertised.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let per_db = |values: &dyn Fn(&str) -> Option<u32>| {
            databases
                .iter()
                .filter_map(|db| {
                    values(db).map(|v| {
                        (
                            vec![("database", (*db).clone())],
                            ConstGauge::new(i64::from(v)),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        family(
            e,
            "cvdmirror_database_published_version",
            "Version of each database this mirror serves.",
            MetricType::Gauge,
            per_db(&|db| status.published.get(db).copied()),
        )?;
        family(
            e,
            "cvdmirror_database_advertised_version",
            "Version upstream advertised at the last pass.",
            MetricType::Gauge,
            per_db(&|db| status.advertised.get(db).copied()),
        )?;
        family(
            e,
            "cvdmirror_database_versions_behind",
            "Versions each database lags upstream by.",
            MetricType::Gauge,
            per_db(&|db| {
                status
                    .advertised
                    .contains_key(db)
                    .then(|| behind.get(db).copied().unwrap_or(0))
            }),
        )?;
        ConstCounter::new(sync.trigger.heal_requests()).encode(e.encode_descriptor(
            "cvdmirror_sync_heal_requests",
            "Sync passes requested because clients asked for cdiffs past the published version.",
            None,
            MetricType::Counter,
        )?)?;
        Self::encode_signatures(e, &status, &tally)
    }

    fn encode_signatures(
        e: &mut DescriptorEncoder,
        status: &crate::sync::SyncStatus,
        tally: &super::sync_view::PassTally,
    ) -> Result<(), std::fmt::Error> {
        let signatures = &status.signatures;
        family(
            e,
            "cvdmirror_database_signature",
            "1 when the published CVD carries a verified signature of this kind: legacy (in the CVD header) or sign (a ClamAV 1.5 .sign file, published beside it).",
            MetricType::Gauge,
            signatures.iter().flat_map(|(db, s)| {
                [("legacy", s.legacy), ("sign", s.sign.is_some())]
                    .into_iter()
                    .map(move |(kind, has)| {
                        (
                            vec![("database", db.clone()), ("kind", kind.to_owned())],
                            ConstGauge::new(i64::from(has)),
                        )
                    })
            }),
        )?;
        family(
            e,
            "cvdmirror_database_sign_missing_since_timestamp_seconds",
            "Unix time since which upstream has offered no usable .sign for the published versions; 0 while it does.",
            MetricType::Gauge,
            signatures.iter().map(|(db, s)| {
                (
                    vec![("database", db.clone())],
                    ConstGauge::new(s.sign_missing_since.unwrap_or(0) as i64),
                )
            }),
        )?;
        family(
            e,
            "cvdmirror_database_signer_info",
            "1 per database whose published .sign verified, labelled with its signer certificate's common name, issuer and SHA-256 fingerprint.",
            MetricType::Gauge,
            signatures.iter().filter_map(|(db, s)| {
                s.sign.as_ref().map(|by| {
                    (
                        vec![
                            ("database", db.clone()),
                            ("signer", by.signer.clone()),
                            ("issuer", by.issuer.clone()),
                            ("fingerprint", by.fingerprint.clone()),
                        ],
                        ConstGauge::new(1),
                    )
                })
            }),
        )?;
        family(
            e,
            "cvdmirror_sync_rejections",
            "Upstream files the sync engine refused to publish since start, by file kind.",
            MetricType::Counter,
            ["cvd", "cdiff", "sign", "cld", "other"]
                .into_iter()
                .map(|kind| {
                    (
                        vec![("kind", kind.to_owned())],
                        ConstCounter::new(tally.rejections.get(kind).copied().unwrap_or(0)),
                    )
                }),
        )?;
        if let Some(last) = status.rejections.iter().map(|r| r.at).max() {
            gauge(
                e,
                "cvdmirror_sync_last_rejection_timestamp_seconds",
                "Unix time of the most recent upstream file the sync engine refused.",
                last as f64,
            )?;
        }
        Ok(())
    }
}
