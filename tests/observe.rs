//! Black-box tests of observation: traffic accounting in `/status.json` and
//! `/metrics`, the live status page in a real headless browser, and alert
//! webhooks delivered to a local receiver.
//!
//! Like `tests/serve.rs`, everything starts the real binary on loopback.
//! The shared harness only reports the public listener, so
//! `observe/spawn.rs` starts the server itself and also reads the
//! `admin on http://ADDR/` line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

mod observe {
    mod alerts;
    mod counts;
    mod layout;
    mod page;
    mod spawn;
}
