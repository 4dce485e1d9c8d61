//! The `cvdmirror` command: parses the command line, sets up diagnostics,
//! and dispatches to a subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cvdmirror::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "cvdmirror",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { out_dir } => {
            // `help` is not a command of its own in the pages (each page lists the options).
            let command = Cli::command().disable_help_subcommand(true);
            let written = match &out_dir {
                Some(dir) => clap_mangen::generate_to(command, dir),
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cvdmirror: cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            init_tracing(args.log_format);
            run(cvdmirror::command::serve::run(*args))
        }
        Command::Analyze(args) => match cvdmirror::command::analyze::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cvdmirror: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => {
            init_tracing(LogFormat::Text);
            run(cvdmirror::demo::run(args))
        }
        Command::Sync(args) => {
            init_tracing(args.log_format);
            run(cvdmirror::command::sync::run(args))
        }
        Command::Export(args) => {
            init_tracing(args.log_format);
            run(cvdmirror::command::bundle::export(args))
        }
        Command::Import(args) => {
            init_tracing(args.log_format);
            run(cvdmirror::command::bundle::import(args))
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cvdmirror: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvdmirror: {e:#}");
            ExitCode::FAILURE
        }
    }
}
