//! Black-box tests of `cvdmirror serve`: HTTP conformance and hostile input.
//!
//! Everything here starts the real binary on loopback (through the shared
//! harness) and speaks raw HTTP to it, so the tests pin the bytes freshclam
//! and other clients actually see, not what a library thinks it sent. One
//! test binary, one module per concern.

// Tests and their helpers panic on purpose (`allow-unwrap-in-tests` states
// the intent, but clippy only applies it inside `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod serve {
    mod access_log;
    mod cache_control;
    mod conditional;
    mod config;
    mod content;
    mod lifecycle;
    mod limits;
    mod paths;
    mod protocol;
    mod ranges;
    mod reload;
    mod util;
    mod vhosts;
}
