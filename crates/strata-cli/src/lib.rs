//! The `strata` command line: parsing, wiring the library crates together,
//! output and exit codes. The libraries never print; this crate does.

pub mod commands;
pub mod exit;
pub mod options;
pub mod output;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::options::RegistryArgs;
use crate::output::Output;

/// Pull OCI and Docker images into root filesystems
///
/// strata fetches an image from a registry, an OCI layout or a `docker save`
/// archive, verifies every digest, and turns its layers into root filesystems.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true, after_help = exit::HELP)]
pub struct Cli {
    /// Print less (errors only)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub quiet: u8,

    /// Print more (repeat for debug output)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an image's manifest or index
    Manifest(commands::manifest::ManifestArgs),
    /// Print an image's config
    Config(commands::config::ConfigArgs),
}

fn init_logging(quiet: u8, verbose: u8) {
    let default = match (quiet, verbose) {
        (q, _) if q > 0 => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Runs a parsed command line.
///
/// # Errors
/// The command's failure, with context naming the image.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let mut out = Output::new();
    match &cli.command {
        Command::Manifest(args) => commands::manifest::run(args, &cli.registry, &mut out),
        Command::Config(args) => commands::config::run(args, &cli.registry, &mut out),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Parses `args`, runs, prints an error chain to stderr, and picks the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(cli.quiet, cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            let mut stderr = io::stderr().lock();
            let mut chain = e.chain();
            if let Some(top) = chain.next() {
                let _ = writeln!(stderr, "error: {top}");
            }
            for cause in chain {
                let _ = writeln!(stderr, "  caused by: {cause}");
            }
            ExitCode::from(exit::code_for(&e))
        }
    }
}
