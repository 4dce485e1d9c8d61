//! The fleet's redirects, two kinds, both a single `302` that carries
//! `?via=NODE`; a request that already came by way of another node is never
//! redirected again, so freshclam (which follows up to three redirects)
//! meets at most one and never a loop.
//!
//! - **Headroom**: when this node's link is busy, a `200` for a whole `.cvd`
//!   goes to a node whose published file has the same SHA-256 and whose own
//!   link has headroom ([`FleetView::redirect_target`]), the node a client's
//!   prefix is assigned to when it qualifies. Header checks (`206` of the
//!   first 512 bytes), `304`s, cdiffs and `.sign` files are small and
//!   always answered here. A download this node's herd gate would refuse
//!   goes to a node with headroom as well (slow clients can hold every
//!   slot while the link has room); with no such node, the herd gate here
//!   answers as on a single node.
//! - **Fill-in**: a file this node lacks (a `404`) that another counting
//!   node publishes, and, while this node is lagging (drained: the beacon
//!   no longer waits for it), a whole `.cvd` older than another counting
//!   node's, go to that node ([`FleetView::fill_in_target`]). A client told
//!   of the fleet's version by the beacon thus gets it even from a node
//!   that has not caught up. Header checks stay local: an old header only
//!   makes a client wait for the next check.
//!
//! A request carrying the fleet's peer token (`Authorization: Bearer
//! TOKEN`, [`Fleet::is_peer`]) is another node syncing from this one: it is
//! never redirected, and marked [`TrustedPeer`] so that admission control
//! lets it through.
//!
//! Only the site whose root the node reports to the fleet takes part; when
//! the view is stale or no node qualifies, the request is answered here as
//! it would be alone.

use std::sync::Arc;

use cvdmirror_exchange::body::ResponseBody;
use cvdmirror_exchange::hooks::Hook;
use cvdmirror_exchange::{Exchange, FileKind, MissingHere, TrustedPeer};
use http::header::{CACHE_CONTROL, HeaderValue, LOCATION};
use http::{Method, Response, StatusCode};
use ipnet::IpNet;

use crate::{Fleet, FleetView, LinkLoad};

/// The query parameter that marks a redirected request.
pub const VIA: &str = "via";

/// This node's link right now, as the fleet hook needs it.
pub type LocalLink = Arc<dyn Fn() -> LinkLoad + Send + Sync>;

/// Whether this node's herd gate would refuse the next whole download now.
pub type LocalGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// The pipeline hook that redirects whole-CVD downloads off a busy node.
pub struct RedirectHook {
    fleet: Fleet,
    node: String,
    link: LocalLink,
    redirect_above: f64,
    affinity: Vec<(IpNet, String)>,
    site: Option<String>,
    gate: Option<LocalGate>,
}

impl RedirectHook {
    /// A hook for the node called `node`, redirecting when its link load
    /// (from `link`) is above `redirect_above` of its capacity.
    pub fn new(fleet: Fleet, node: String, link: LocalLink, redirect_above: f64) -> Self {
        Self {
            fleet,
            node,
            link,
            redirect_above,
            affinity: Vec::new(),
            site: None,
            gate: None,
        }
    }

    /// Also sends a whole download elsewhere when this node's herd gate
    /// would refuse it (slow clients can hold every slot while the link
    /// has room): to a node with headroom, as when the link is busy.
    pub fn with_gate(mut self, gate: LocalGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Redirects requests of the site called `site` only (the one whose
    /// root the node reports); without it, of every site.
    pub fn for_site(mut self, site: impl Into<String>) -> Self {
        self.site = Some(site.into());
        self
    }

    /// Sends clients in each prefix to its node whenever that node can take
    /// them (the first matching prefix counts); others as before.
    pub fn with_affinity(mut self, affinity: Vec<(IpNet, String)>) -> Self {
        self.affinity = affinity;
        self
    }

    /// Whether this node is too busy to start another whole download.
    fn busy(&self) -> bool {
        let link = (self.link)();
        match link.capacity {
            Some(capacity) => link.load as f64 >= self.redirect_above * capacity as f64,
            None => false,
        }
    }
}

impl Hook for RedirectHook {
    fn admit(
        &self,
        exchange: &mut Exchange,
        planned: &mut Response<ResponseBody>,
    ) -> Option<Response<ResponseBody>> {
        if exchange
            .authorization
            .as_deref()
            .is_some_and(|authorization| self.fleet.is_peer(authorization))
        {
            // Another node syncing from this one: served here, past the
            // limits meant for clients.
            exchange.extensions.insert(TrustedPeer);
            return None;
        }
        if !matches!(exchange.method, Method::GET | Method::HEAD)
            || came_via_fleet(exchange)
            || self
                .site
                .as_deref()
                .is_some_and(|site| site != &*exchange.site)
        {
            return None;
        }
        let path = exchange.target.path();
        let name = path.strip_prefix('/').filter(|name| !name.contains('/'))?;
        // A `HEAD` is as small as a header check: answered here.
        let whole_cvd = planned.status() == StatusCode::OK
            && exchange.method == Method::GET
            && exchange
                .file
                .as_ref()
                .is_some_and(|file| file.kind == FileKind::Cvd);
        let missing = planned.status() == StatusCode::NOT_FOUND;
        if !whole_cvd && !missing {
            return None;
        }
        let view = self.fleet.view();
        let preferred = self
            .affinity
            .iter()
            .find(|(clients, _)| clients.contains(&exchange.client))
            .map(|(_, node)| node.as_str());
        let target = if missing {
            let target = view.fill_in_target(name, &self.node, None, rand::random(), preferred)?;
            exchange.extensions.insert(MissingHere);
            target
        } else {
            let own = view.node(&self.node)?;
            let behind = own
                .lagging
                .then(|| own.report.files.get(name).and_then(|file| file.version))
                .flatten()
                .and_then(|ours| {
                    view.fill_in_target(name, &self.node, Some(ours), rand::random(), preferred)
                });
            if let Some(target) = behind {
                target
            } else {
                let refusing = || self.gate.as_ref().is_some_and(|gate| gate());
                if !self.busy() && !refusing() {
                    return None;
                }
                target_for(&view, &self.node, name, rand::random(), preferred)?
            }
        };
        let location = format!("{}?{VIA}={}", target.location(path), self.node);
        let location = HeaderValue::try_from(location).ok()?;
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(LOCATION, location);
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

/// Where `file` may go from `node`: the target for this node's own copy's
/// digest, as this node last reported it.
fn target_for(
    view: &FleetView,
    node: &str,
    file: &str,
    random: u64,
    preferred: Option<&str>,
) -> Option<crate::NodeTarget> {
    let own = view.node(node)?.report.files.get(file)?;
    view.redirect_target_preferring(file, &own.sha256, node, random, preferred)
}

/// Whether the request already came from another node's redirect.
fn came_via_fleet(exchange: &Exchange) -> bool {
    exchange.target.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(VIA))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirected_request_is_recognized_by_its_query() {
        let get = |target: &str| Exchange::get("192.0.2.1:1".parse().unwrap(), target);
        assert!(came_via_fleet(&get("/daily.cvd?via=a")));
        assert!(came_via_fleet(&get("/daily.cvd?x=1&via=b")));
        assert!(!came_via_fleet(&get("/daily.cvd")));
        assert!(!came_via_fleet(&get("/daily.cvd?viaduct=1")));
    }
}
