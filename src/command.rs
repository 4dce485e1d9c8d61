//! The subcommands, one module each; `main` only parses and dispatches.

pub mod bundle;
pub mod serve;
pub mod sync;
