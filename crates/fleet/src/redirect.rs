//! Sends whole-CVD downloads to a node with headroom when this node's link
//! is busy: the fleet's answer to a herd. Only a `200` for a whole `.cvd`
//! is ever redirected; header checks (`206` of the first 512 bytes),
//! `304`s, cdiffs and `.sign` files are small and always answered here. A
//! redirected request carries `?via=NODE`, and a request that already came
//! by way of another node is never redirected again, so freshclam (which
//! follows up to three redirects) meets at most one and never a loop. The
//! target is a node whose published file has the same SHA-256 and whose
//! own link has headroom ([`FleetView::redirect_target`]), the node a
//! client's prefix is assigned to when it qualifies; when none does,
//! or the view is stale, the request is served here as it would be alone.

use std::sync::Arc;

use cvdmirror_exchange::body::ResponseBody;
use cvdmirror_exchange::hooks::Hook;
use cvdmirror_exchange::{Exchange, FileKind};
use http::header::{CACHE_CONTROL, HeaderValue, LOCATION};
use http::{Method, Response, StatusCode};
use ipnet::IpNet;

use crate::{Fleet, FleetView, LinkLoad};

/// The query parameter that marks a redirected request.
pub const VIA: &str = "via";

/// This node's link right now, as the fleet hook needs it.
pub type LocalLink = Arc<dyn Fn() -> LinkLoad + Send + Sync>;

/// The pipeline hook that redirects whole-CVD downloads off a busy node.
pub struct RedirectHook {
    fleet: Fleet,
    node: String,
    link: LocalLink,
    redirect_above: f64,
    affinity: Vec<(IpNet, String)>,
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
        }
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
        let whole_cvd = planned.status() == StatusCode::OK
            && exchange.method == Method::GET
            && exchange
                .file
                .as_ref()
                .is_some_and(|file| file.kind == FileKind::Cvd);
        if !whole_cvd || came_via_fleet(exchange) || !self.busy() {
            return None;
        }
        let path = exchange.target.path();
        let name = path.rsplit('/').next().unwrap_or(path);
        let view = self.fleet.view();
        let preferred = self
            .affinity
            .iter()
            .find(|(clients, _)| clients.contains(&exchange.client))
            .map(|(_, node)| node.as_str());
        let target = target_for(&view, &self.node, name, rand::random(), preferred)?;
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
