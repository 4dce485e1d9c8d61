//! HTTPS: `cvdmirror serve --tls-listen` against real clients.
//!
//! Debian's freshclam updates over HTTPS with a test CA (found through
//! `CURL_CA_BUNDLE` and `SSL_CERT_FILE`, as an operator's private CA would
//! be); curl is refused at the TLS layer without a client certificate where
//! a site requires one, and served with one; a certificate rotated with
//! `SIGHUP` reaches new connections while an older download finishes on
//! the old one; and TLS connections are counted, limited, shaped and logged
//! as plain ones are. Every certificate is made here (`TestPki`), the
//! server is the real binary, and the clients are curl, freshclam and
//! rustls on loopback.
//!
//! ClamAV 1.5.3's freshclam also applies a cdiff fetched over HTTPS.
//!
//! Needs `freshclam`, `sigtool`, `curl` (scripts/install-test-deps) and
//! ClamAV 1.5.3 (scripts/build-clamav15); fails, never skips, without them.

// Tests and their helpers panic on purpose (`allow-unwrap-in-tests` states
// the intent, but clippy only applies it inside `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

// The access-log reader's check of tests/freshclam.rs: the TLS suite
// matches freshclam's requests against the access log the same way.
#[path = "freshclam/access_log.rs"]
mod access_log;

mod tls {
    mod cdiff15;
    mod client_auth;
    mod freshclam;
    mod parity;
    mod reload;
    mod util;
}
