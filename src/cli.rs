//! The command line: the subcommands, each with its flags. The flags that
//! configure the mirror (`serve`, `sync`, …) are the first stage of the
//! configuration and live with it, in `config::flags`; they are
//! re-exported here.
//!
//! Flags are only the first stage of configuration: `config::Config::resolve`
//! merges them over the TOML file and the built-in defaults, then validates
//! the result. Keeping the raw flags separate lets `SIGHUP` re-read the file
//! and re-apply the same flags on top.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use crate::config::flags::{
    LogFormat, ServeArgs, SyncArgs, SyncCommandArgs, TrustArgs, VersionCheck,
};

/// A ClamAV signature-database mirror that verifies, publishes atomically and
/// never eats the link it shares.
#[derive(Debug, Parser)]
#[command(name = "cvdmirror", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mirror over HTTP (defaults: ./mirror on port 8080, IPv4 and IPv6).
    Serve(Box<ServeArgs>),
    /// Bring the mirror up to date from upstream once: verify every file,
    /// publish atomically. Exits 0 only when the served set is complete,
    /// verified and at the newest version upstream advertises.
    Sync(SyncCommandArgs),
    /// Write the published set (CVDs, retained cdiffs, `.sign` files and a
    /// manifest) into one bundle file, for a mirror behind an air gap.
    Export(crate::command::bundle::ExportArgs),
    /// Check a bundle from `export`, verify every file as `sync` does, and
    /// publish it only if all of it passes (`--dry-run`: show and verify).
    Import(crate::command::bundle::ImportArgs),
    /// Explain a traffic incident from access logs (combined format from
    /// cvdmirror, Apache or nginx, or JSON from nginx or Caddy; plain or
    /// gzip): the cause and its minute, timeline, episodes, fallback chains,
    /// top clients and files, and a plain-language summary.
    Analyze(crate::command::analyze::AnalyzeArgs),
    /// Start a local test upstream, a mirror and a small herd on loopback,
    /// narrate what happens, and stop: watch the status page react.
    Demo(crate::demo::DemoArgs),
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) generated from this command line; the
    /// Debian package is built with it (scripts/build-deb).
    #[command(hide = true)]
    Man {
        /// Write cvdmirror.1 and a page per subcommand (cvdmirror-serve.1, …)
        /// into this directory instead of printing cvdmirror.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_no_arguments() {
        let cli = Cli::try_parse_from(["cvdmirror", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.listen.is_empty());
        assert!(args.root.is_none());
    }
}
