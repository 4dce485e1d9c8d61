//! Integration tests of `cvdmirror sync` against a fake upstream with fault
//! injection: the engine's promises (verified, atomic, polite, crash-safe)
//! checked from outside, on the real binary, plus the real clients that
//! consume what it publishes (freshclam) and its peer (cvdupdate).
//!
//! One test binary; see docs/testing-sync.md for what each module proves.

// A test crate: a panic with context *is* the failure report, so helpers
// unwrap like `#[test]` bodies do, and deadlines use real time (the children
// run on the wall clock, not a paused tokio one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

#[path = "sync/crash.rs"]
mod crash;
#[path = "sync/cvdupdate.rs"]
mod cvdupdate;
#[path = "sync/etiquette.rs"]
mod etiquette;
#[path = "sync/faults.rs"]
mod faults;
#[path = "sync/freshclam.rs"]
mod freshclam;
#[path = "sync/freshclam15.rs"]
mod freshclam15;
#[path = "sync/genuine.rs"]
mod genuine;
#[path = "sync/proxy.rs"]
mod proxy;
#[path = "sync/serve.rs"]
mod serve;
#[path = "sync/signs.rs"]
mod signs;
