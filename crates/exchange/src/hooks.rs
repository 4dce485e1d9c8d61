//! The plug-in points of the request pipeline.
//!
//! Shaping and observation are not special cases inside the server: they are
//! [`Hook`]s. Each hook may answer a request instead of the file (admission
//! control: `429`, `503`, redirects), wrap the response body (pacing, byte
//! counting), and is told once when the exchange ends, with the bytes that
//! were actually sent. The access log is the first hook.

use std::sync::Arc;

use http::{Response, StatusCode};

use crate::Exchange;
use crate::body::ResponseBody;

/// How an exchange ended, given to every hook exactly once.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Status sent.
    pub status: StatusCode,
    /// Body bytes handed to the connection.
    pub body_bytes: u64,
    /// Whether the whole body was sent (false: client went away or error).
    pub finished: bool,
    /// From request head received to body done.
    pub duration: std::time::Duration,
}

/// A stage that plugs into every request.
pub trait Hook: Send + Sync + 'static {
    /// Called after the pipeline chose a response, before it is sent. Return
    /// `Some` to send another response instead (e.g. `429` from admission
    /// control). A hook may add headers to `planned` and keep per-exchange
    /// state in `exchange.extensions` for its `wrap_body` and `complete`.
    fn admit(
        &self,
        exchange: &mut Exchange,
        planned: &mut Response<ResponseBody>,
    ) -> Option<Response<ResponseBody>> {
        let _ = (exchange, planned);
        None
    }

    /// Wraps the body that will be sent (pacing, byte accounting).
    fn wrap_body(&self, exchange: &Arc<Exchange>, body: ResponseBody) -> ResponseBody {
        let _ = exchange;
        body
    }

    /// Called exactly once when the exchange is over.
    fn complete(&self, exchange: &Exchange, completion: &Completion) {
        let _ = (exchange, completion);
    }
}

/// The ordered hooks of a server.
#[derive(Clone, Default)]
pub struct Hooks {
    // Cloned per request: one reference count, not a vector copy.
    hooks: Arc<Vec<Arc<dyn Hook>>>,
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hook after the existing ones.
    pub fn push(&mut self, hook: Arc<dyn Hook>) {
        Arc::make_mut(&mut self.hooks).push(hook);
    }

    /// Every hook, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Hook>> {
        self.hooks.iter()
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooks({})", self.hooks.len())
    }
}
