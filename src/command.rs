//! The subcommands, one module each; `main` only parses and dispatches.

pub mod serve;
pub mod sync;
