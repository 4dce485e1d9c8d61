//! cvdmirror: a ClamAV signature-database mirror.
//!
//! It serves the databases to `freshclam` clients over HTTP exactly as the
//! official CDN does, and is built so that an upstream mishap or a herd of
//! clients can never leave the mirror half-updated or eat the link it shares
//! with other services.
//!
//! This crate is the application: the [`config`] file and flags, the
//! [`cli`], the [`command`]s and the [`demo`]. Everything else lives in the
//! layered crates below it, re-exported here under their short names (see
//! `docs/architecture.md`):
//!
//! 1. formats and primitives: [`cvd`], [`rate`], [`calendar`],
//!    [`atomic_file`], [`state_file`], [`backoff`], [`html`]
//!    (`cvdmirror-formats`);
//! 2. the request-exchange vocabulary: [`exchange`], [`hooks`], [`body`],
//!    [`sendfile`] (`cvdmirror-exchange`);
//! 3. components, each built from its own configuration: [`pipeline`],
//!    [`server`], [`tls`], [`shape`], [`limits`], [`control`], [`sync`],
//!    [`dns`], [`observe`], [`admin`], [`access_log`], [`analyze`], [`fleet`].

pub mod cli;
pub mod command;
pub mod config;
pub mod demo;

pub use cvdmirror_access_log as access_log;
pub use cvdmirror_admin as admin;
pub use cvdmirror_control as control;
pub use cvdmirror_dns as dns;
pub use cvdmirror_exchange as exchange;
pub use cvdmirror_exchange::{body, hooks, sendfile};
pub use cvdmirror_fleet as fleet;
pub use cvdmirror_formats::{atomic_file, backoff, calendar, cvd, html, rate, state_file};
pub use cvdmirror_limits as limits;
pub use cvdmirror_observe as observe;
pub use cvdmirror_pipeline as pipeline;
pub use cvdmirror_server as server;
pub use cvdmirror_shape as shape;
pub use cvdmirror_sync as sync;
pub use cvdmirror_tls as tls;

/// Access-log analysis: the `cvdmirror-analyze` library and the command
/// that runs it on files ([`command::analyze`]).
pub mod analyze {
    pub use crate::command::analyze::{AnalyzeArgs, analyze, run};
    pub use cvdmirror_analyze::*;
}
