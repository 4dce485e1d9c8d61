//! The command line: every flag, its environment variable and its help text.
//!
//! Flags are only the first stage of configuration: `config::Config::resolve`
//! merges them over the TOML file and the built-in defaults, then validates
//! the result. Keeping the raw flags separate lets `SIGHUP` re-read the file
//! and re-apply the same flags on top.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Flags of `cvdmirror serve`. Each overrides the same setting in the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (flags given here override it).
    /// See docs/configuration.md for every option.
    #[arg(long, short = 'c', env = "CVDMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; repeat for several (default: [::]:8080 and 0.0.0.0:8080).
    /// In the environment variable, separate addresses with commas.
    #[arg(
        long,
        short = 'l',
        env = "CVDMIRROR_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Directory served to clients whose Host matches no [[site]] (default: ./mirror, created if missing).
    #[arg(long, short = 'r', env = "CVDMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Where to write the access log in combined format: a file path, `-` for
    /// standard output, or `off` (default: -).
    #[arg(long, env = "CVDMIRROR_ACCESS_LOG", value_name = "PATH|-|off")]
    pub access_log: Option<String>,

    /// Maximum concurrent client connections; beyond it clients get 503 with
    /// Retry-After (default: 10000).
    #[arg(long, env = "CVDMIRROR_MAX_CONNS", value_name = "N")]
    pub max_conns: Option<usize>,

    /// List directory contents as HTML for the default site (default: off; a
    /// mirror needs no listings).
    #[arg(long, env = "CVDMIRROR_DIRECTORY_LISTING")]
    pub directory_listing: bool,

    /// Format of the diagnostic log on standard error.
    #[arg(long, env = "CVDMIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How diagnostic (tracing) output is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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
