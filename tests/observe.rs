//! Black-box tests of observation: traffic accounting in `/status.json` and
//! `/metrics`, the live status page in a real headless browser (with a
//! fleet section drawn from a stubbed fleet view), and alert webhooks
//! delivered to a local receiver.
//!
//! Like `tests/serve.rs`, everything starts the real binary on loopback,
//! here with its admin listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod observe {
    mod alerts;
    mod counts;
    mod fleet;
    mod layout;
    mod page;

    use crate::support::TestServer;

    /// A server serving `files`, with `config` as its config file, an admin
    /// listener and no access log.
    fn start(files: &[(&str, &[u8])], config: &str) -> TestServer {
        files
            .iter()
            .fold(TestServer::builder(), |b, (name, bytes)| {
                b.file(name, bytes)
            })
            .config(config)
            .admin()
            .no_access_log()
            .start()
    }
}
