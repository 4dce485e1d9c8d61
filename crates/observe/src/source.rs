//! The plug-in point for other subsystems' live state: shaping, limits, and
//! whatever comes next show up on the status page, in `/status.json` and in
//! `/metrics` by implementing [`StatusSource`] and registering it with
//! [`Observer::add_source`](super::Observer::add_source).
//!
//! A source is asked for its state only when someone looks (a page refresh
//! or a scrape), never on the request path, so it may take a lock or build
//! a small JSON value. Its Prometheus metrics are registered once, in a
//! sub-registry prefixed `cvdmirror_<name>_`, with prometheus-client's own
//! types (counters and gauges it keeps updating itself, or a `Collector`
//! that reads its state at scrape time).

use prometheus_client::registry::Registry;
use serde::Serialize;

/// How worried the page should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// All is well.
    Ok,
    /// Worth a look.
    Warn,
    /// Act now.
    Critical,
}

/// One sentence for the page's headline, with its severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Headline {
    /// Severity.
    pub level: Level,
    /// E.g. "herd gate closed: 412 clients denied in the last 5 min".
    pub text: String,
}

/// A subsystem that reports its state on the status page and in metrics.
///
/// `status()` is rendered generically by the page (unless the page has a
/// card of its own for the source, as for `traffic_control`): an object
/// becomes a card of labelled rows; a field holding an array of objects
/// becomes a table (one column per key of the first row). Names are shown
/// in words (`link_now_bytes_per_s` → "Link now"), numbers whose key ends
/// in `_bytes_per_s` as bit rates, `_bytes` as sizes, booleans as yes/no.
pub trait StatusSource: Send + Sync + 'static {
    /// Section name and metric prefix: lower-case, `[a-z0-9_]`, e.g. `shaping`.
    fn name(&self) -> &str;

    /// The section's JSON (`/status.json` → `sources.<name>`).
    fn status(&self) -> serde_json::Value;

    /// Registers the source's metrics; called once, when the source is
    /// added, with a registry already prefixed `cvdmirror_<name>`.
    fn register_metrics(&self, registry: &mut Registry) {
        let _ = registry;
    }

    /// A sentence for the headline when something needs attention (the
    /// page shows the most severe one first).
    fn headline(&self) -> Option<Headline> {
        None
    }
}
