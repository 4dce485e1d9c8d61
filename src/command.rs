//! The subcommands, one module each; `main` only parses and dispatches.

pub mod analyze;
pub mod bundle;
pub mod serve;
pub mod sync;
