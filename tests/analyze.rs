//! Integration tests of `cvdmirror analyze`: the seed incident replayed as
//! cvdmirror, Apache and nginx logs (one gzipped, one split across files)
//! must be explained correctly and exactly; hostile input is skipped and
//! counted, never a panic; a 2-million-line stream stays inside the bounded
//! tables.
//!
//! One module per concern: `dialects` (the incident in every log format),
//! `clamav15` (ClamAV 1.5 `.sign` traffic), `options` (the window, bad
//! input, the exit status), `bounds` (floods stay inside the tables),
//! `parser` (properties of the line parser) and `incidents` (the library's
//! generated incident), with `generator` replaying the seed incident.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on broken fixtures"
)]

mod analyze {
    mod bounds;
    mod clamav15;
    mod dialects;
    mod generator;
    mod incidents;
    mod options;
    mod parser;
}
