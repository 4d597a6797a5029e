//! `strata unshare`: a command (or a shell) inside strata's user and mount
//! namespace, where a rootless strata's mounts are and the image's owners
//! show.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use strata_userns::Namespace;

use crate::context::Context;

/// The environment variable naming the holder a command runs under.
pub const HOLDER_ENV: &str = "STRATA_NAMESPACE_HOLDER";

/// Run a command in strata's user and mount namespace (rootless)
#[derive(Debug, Args)]
#[command(
    after_help = "Without a command, runs $SHELL (or /bin/sh). Inside, rootless mounts are visible, \
files show the image's owners, and strata commands use the same store.\n\nExamples:\n  strata unshare\n  strata unshare -- chroot ./rootfs /bin/sh\n  strata unshare -- stat -c %u:%g ./rootfs/etc/shadow\n  strata unshare -- rm -rf ./flattened   # files a rootless flatten made"
)]
pub struct UnshareArgs {
    /// The command and its arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// The command line that enters the namespace of the store in use.
#[must_use]
pub fn command_line(ctx: &Context) -> String {
    match &ctx.store_args.store {
        Some(store) => format!("strata --store {} unshare", store.display()),
        None => "strata unshare".to_owned(),
    }
}

/// Runs `strata unshare`: replaces this process with the command.
///
/// # Errors
/// As root (there is no namespace to enter), or when the command cannot
/// be run.
pub fn run(args: &UnshareArgs, ctx: &Context, namespace: Option<&Namespace>) -> Result<()> {
    if !ctx.privilege.is_rootless() {
        bail!(
            "strata unshare is for rootless use; as root, strata's mounts are in your own mount namespace: run the command directly"
        );
    }
    if let Some(namespace) = namespace {
        // The command holds the namespace's lock: the holder outlives it.
        namespace.pass_to_exec()?;
    }
    let (program, rest) = match args.command.split_first() {
        Some((program, rest)) => (program.clone(), rest.to_vec()),
        None => (
            std::env::var_os("SHELL")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/bin/sh".into()),
            Vec::new(),
        ),
    };
    let mut command = std::process::Command::new(&program);
    command.args(rest).env("STRATA_STORE", ctx.store_root());
    if let Some(holder) = ctx.holder {
        command.env(HOLDER_ENV, holder.id());
    }
    let error = command.exec();
    Err(error).with_context(|| format!("running {}", program.to_string_lossy()))
}
