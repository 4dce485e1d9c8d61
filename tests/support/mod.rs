//! The integration tests' one harness, included by every test crate that
//! starts a process with `mod support;`. Tests talk to the real binary
//! only through loopback and its files, and wait for it only with a
//! deadline ([`wait`]), never with a fixed sleep.
//!
//! - [`process`]: every start of `cvdmirror` (and of other programs):
//!   a clean environment, output collected, killed on drop, bounded runs.
//! - [`server`]: `cvdmirror serve` on a free port with a temporary root.
//! - [`http`]: raw HTTP/1.1 requests and responses as the client sees them.
//! - [`access_log`]: the access log, read with the library's own parser.
//! - [`beacon`]: the DNS beacon of a running server, as a client asks it.
//! - [`wait`]: the deadline and the one polling helper.
//! - [`fixtures`]: the genuine ClamAV files the tests check against.
//! - [`clamav`] and [`freshclam`]: ClamAV's own tools (freshclam 1.4 and
//!   1.5.3, sigtool) run against a mirror.
//! - [`redis`]: a real `redis-server` of the test's own (the fleet tests).
//! - [`upstream`] and [`world`]: a fake ClamAV upstream with fault
//!   injection and DNS, and a mirror root `cvdmirror sync` brings up to date.

// Test support panics on failure by design, and measures real elapsed time
// for its deadlines (a paused tokio clock does not apply to a child
// process). Each test crate uses the part of it that it needs.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types
)]

pub mod access_log;
pub mod beacon;
pub mod clamav;
pub mod fixtures;
pub mod freshclam;
pub mod http;
pub mod process;
pub mod redis;
pub mod server;
pub mod upstream;
pub mod wait;
pub mod world;

// What most tests use, at `support::` (each crate uses some of it).
#[allow(unused_imports)]
pub use fixtures::{fixture, fixtures_dir};
#[allow(unused_imports)]
pub use http::{Response, raw_exchange};
#[allow(unused_imports)]
pub use server::{ServerBuilder, TestServer};
#[allow(unused_imports)]
pub use wait::DEADLINE;
