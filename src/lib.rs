//! cvdmirror: a ClamAV signature-database mirror.
//!
//! It serves the databases to `freshclam` clients over HTTP exactly as the
//! official CDN does, and is built so that an upstream mishap or a herd of
//! clients can never leave the mirror half-updated or eat the link it shares
//! with other services.
//!
//! The request path is [`pipeline`]; [`server`] runs it on connections;
//! [`hooks`] is where shaping and observation plug in; [`config`] turns
//! flags and the TOML file into one validated [`config::Config`].

pub mod access_log;
pub mod admin;
pub mod analyze;
pub mod atomic_file;
pub mod body;
pub mod calendar;
pub mod cli;
pub mod command;
pub mod config;
pub mod control;
pub mod cvd;
pub mod demo;
pub mod dns;
pub mod hooks;
pub mod html;
pub mod limits;
pub mod observe;
pub mod pipeline;
pub mod sendfile;
pub mod server;
pub mod shape;
pub mod state_file;
pub mod sync;
pub mod tls;
