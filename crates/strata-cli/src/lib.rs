//! The `strata` command line: parsing, wiring the library crates together,
//! output and exit codes. The libraries never print; this crate does.

#![allow(
    rustdoc::broken_intra_doc_links,
    reason = "doc comments here are clap help texts, where [:TAG] means optional, not a link"
)]

pub mod commands;
pub mod context;
pub mod exit;
pub mod image_edit;
pub mod layers;
pub mod options;
pub mod output;
pub mod progress;
pub mod pull;
pub mod rootless;
pub mod transfer;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::context::{Context, StoreArgs};
use crate::options::RegistryArgs;
use crate::output::Output;
use crate::progress::Progress;

/// Pull OCI and Docker images into root filesystems
///
/// strata fetches an image from a registry, an OCI layout or a `docker save`
/// archive, verifies every digest, extracts each layer into its own
/// directory in the store, and mounts them as one overlayfs rootfs.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print less (errors only)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub quiet: u8,

    /// Print more (repeat for debug output)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "Examples:\n  strata pull-and-mount alpine:latest ./rootfs   # pull, then mount read-only\n  chroot ./rootfs /bin/sh\n  strata umount ./rootfs\n  strata flatten docker-archive:saved.tar ./rootfs\n\nExit codes: 0 success, 1 failure, 2 usage error, \
3 image/tag/platform not found or access refused, 4 digest or size mismatch.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image and mount it as a rootfs at DIR
    #[command(name = "pull-and-mount")]
    PullAndMount(commands::mount::PullAndMountArgs),
    /// Fetch an image's layers into the store
    Pull(commands::pull::PullArgs),
    /// Mount a pulled image at DIR
    Mount(commands::mount::MountArgs),
    /// Unmount a rootfs mounted by strata
    Umount(commands::mount::UmountArgs),
    /// List the mounts strata made
    Mounts,
    /// Turn a writable mount's changes into a new image in the store
    Commit(commands::commit::CommitArgs),
    /// Push an image from the store to a registry or an OCI layout
    Push(commands::push::PushArgs),
    /// Copy an image between registries, layouts and archives, keeping every digest
    Copy(commands::copy::CopyArgs),
    /// Write an image's merged rootfs into a plain directory
    Flatten(commands::flatten::FlattenArgs),
    /// Write an OCI runtime bundle (rootfs + config.json) for runc or crun
    Bundle(commands::bundle::BundleArgs),
    /// List the images in the store
    Images,
    /// Remove an image's name from the store
    Rm(commands::images::RmArgs),
    /// Remove layers no image or mount uses
    Gc,
    /// Verify the store: layer contents and records
    Fsck(commands::fsck::FsckArgs),
    /// Show an image's config and layer table
    Inspect(commands::inspect::InspectArgs),
    /// List the merged tree or one layer's entries
    Ls(commands::ls::LsArgs),
    /// Show which layer provides a path
    Which(commands::which::WhichArgs),
    /// Show what each layer adds, modifies and deletes
    Diff(commands::diff::DiffArgs),
    /// Measure bytes wasted on files overwritten or deleted by later layers
    Waste(commands::waste::WasteArgs),
    /// Print an image's manifest or index
    Manifest(commands::manifest::ManifestArgs),
    /// Print an image's config
    Config(commands::config::ConfigArgs),
    /// Run a command (or a shell) in strata's namespace, where rootless mounts are
    Unshare(commands::unshare::UnshareArgs),
}

impl Command {
    /// Whether the command works on the store's layers or mounts: an
    /// ordinary user's strata runs it inside its user namespace.
    fn in_namespace(&self) -> bool {
        matches!(
            self,
            Self::PullAndMount(_)
                | Self::Pull(_)
                | Self::Mount(_)
                | Self::Umount(_)
                | Self::Mounts
                | Self::Commit(_)
                | Self::Push(_)
                | Self::Flatten(_)
                | Self::Bundle(_)
                | Self::Rm(_)
                | Self::Gc
                | Self::Fsck(_)
                | Self::Unshare(_)
        )
    }

    /// Whether it writes layer directories or trees.
    fn writes_layers(&self) -> bool {
        matches!(
            self,
            Self::PullAndMount(_)
                | Self::Pull(_)
                | Self::Commit(_)
                | Self::Flatten(_)
                | Self::Bundle(_)
        )
    }
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
    let mut ctx = Context {
        store_args: cli.store.clone(),
        registry: cli.registry.clone(),
        progress: Progress::new(cli.quiet > 0, cli.verbose > 0 || cli.store.no_progress),
        privilege: strata_userns::Privilege::probe(),
        holder: None,
    };
    let namespace = rootless::enter(&cli.command, &ctx)?;
    ctx.holder = rootless::holder(&ctx, namespace.as_ref());
    let result = dispatch(cli, &ctx, namespace.as_ref(), &mut out);
    if let Some(namespace) = namespace {
        let needed = rootless::mounts_need(&ctx, namespace.holder());
        namespace.leave(needed);
    }
    result
}

fn dispatch(
    cli: &Cli,
    ctx: &Context,
    namespace: Option<&strata_userns::Namespace>,
    out: &mut Output,
) -> anyhow::Result<()> {
    match &cli.command {
        Command::PullAndMount(args) => commands::mount::run_pull_and_mount(args, ctx, out),
        Command::Pull(args) => commands::pull::run(args, ctx, out),
        Command::Mount(args) => commands::mount::run_mount(args, ctx, out),
        Command::Umount(args) => commands::mount::run_umount(args, ctx, out),
        Command::Mounts => commands::mount::run_mounts(ctx, out),
        Command::Commit(args) => commands::commit::run(args, ctx, out),
        Command::Push(args) => commands::push::run(args, ctx, out),
        Command::Copy(args) => commands::copy::run(args, ctx, out),
        Command::Flatten(args) => commands::flatten::run(args, ctx, out),
        Command::Bundle(args) => commands::bundle::run(args, ctx, out),
        Command::Images => commands::images::run_images(ctx, out),
        Command::Rm(args) => commands::images::run_rm(args, ctx, out),
        Command::Gc => commands::images::run_gc(ctx, out),
        Command::Fsck(args) => commands::fsck::run(args, ctx, out),
        Command::Inspect(args) => commands::inspect::run(args, ctx, out),
        Command::Ls(args) => commands::ls::run(args, ctx, out),
        Command::Which(args) => commands::which::run(args, ctx, out),
        Command::Diff(args) => commands::diff::run(args, ctx, out),
        Command::Waste(args) => commands::waste::run(args, ctx, out),
        Command::Manifest(args) => commands::manifest::run(args, ctx, out),
        Command::Config(args) => commands::config::run(args, ctx, out),
        Command::Unshare(args) => commands::unshare::run(args, ctx, namespace),
    }
}

/// A hint for errors a user can act on, found from the typed causes.
fn hint(error: &anyhow::Error) -> Option<&'static str> {
    for cause in error.chain() {
        let io = cause.downcast_ref::<io::Error>();
        let no_space = io.and_then(io::Error::raw_os_error) == Some(28)
            || cause
                .downcast_ref::<strata_stack::Error>()
                .is_some_and(strata_stack::Error::is_no_space);
        if no_space {
            return Some(
                "no space left on the store's filesystem: free some (`strata gc` removes unused layers) or use --store elsewhere; the store is unchanged",
            );
        }
    }
    None
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Parses `args`, runs, prints an error chain to stderr, and picks the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    // A holder process is strata too, started by strata for its namespace.
    strata_userns::serve_if_holder();
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
            if let Some(hint) = hint(&e) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::from(exit::code_for(&e))
        }
    }
}
