//! Black-box tests of traffic control (`[shape]` pacing and `[limits]`
//! admission) against the real `cvdmirror serve` binary, over loopback.
//!
//! What an operator is promised: the link cap holds second by second; the
//! link is shared fairly per client (not per connection); header checks,
//! 304s and cdiffs stay fast while whole-CVD downloads fill the cap; the
//! herd gate admits only what it can serve at the minimum rate and spreads
//! the others with `Retry-After`; quota actions do what they say; quota
//! usage survives a restart; SIGHUP applies new limits to transfers in
//! flight; real freshclam honours the herd gate's 429; and a trusted proxy's
//! forwarded address is the client.
//!
//! Distinct clients are distinct loopback sources (127.0.0.N). Rates are
//! measured on the receiving side in one-second windows, skipping the first
//! and last second (`/work/shared/docs/bandwidth-prior-art.md`).
//!
//! One module per promise: `shape` (the cap, fair shares, small requests,
//! a new rate on SIGHUP), `herd` (the gate, and real freshclam meeting
//! it), `quota` (quota actions and usage across restarts) and `proxy`
//! (a trusted proxy's client).

// A test crate: a panic with context *is* the failure report. Rates are
// measured in real time against another process (the server), where a
// paused tokio clock cannot apply, so `std::time::Instant` is the right
// clock here (as in `support`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

mod control {
    mod herd;
    mod measure;
    mod net;
    mod proxy;
    mod quota;
    mod shape;
}
