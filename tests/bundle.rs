//! Integration tests of air-gapped mirrors on the real binary: `cvdmirror
//! export` writes a bundle of a mirror the fake upstream filled, `cvdmirror
//! import` (and `sync --upstream file:///…`) brings it into another root,
//! real freshclam updates from that root, and a damaged or lying bundle
//! changes nothing.
//!
//! The fake upstream and the mirror fixtures are the sync suite's
//! (`tests/support/world.rs`).

// A test crate: a panic with context *is* the failure report, and deadlines
// use real time (the children run on the wall clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

#[path = "bundle/damaged.rs"]
mod damaged;
#[path = "bundle/freshclam.rs"]
mod freshclam;
#[path = "bundle/kit.rs"]
mod kit;
#[path = "bundle/roundtrip.rs"]
mod roundtrip;
