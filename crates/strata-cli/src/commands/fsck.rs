//! `strata fsck`: verify the store.

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;
use crate::output::Output;

/// Verify every stored layer against the tree digest recorded when it was
/// extracted, and every image, name and mount record against what it uses
#[derive(Debug, Args)]
#[command(after_help = "Reads every byte of every layer (--jobs at a time).\n\n\
Examples:\n  strata fsck\n  strata fsck --repair; strata pull alpine:latest   # re-fetch what was damaged")]
pub struct FsckArgs {
    /// Remove damaged layers and records (waits until no other strata
    /// process uses the store); the next pull restores them
    #[arg(long)]
    pub repair: bool,
}

/// `strata fsck`.
pub fn run(args: &FsckArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let digest = |dir: &std::path::Path| strata_layer::tree_digest(dir, &Default::default());
    let report = store.fsck(&digest, ctx.jobs(), args.repair)?;
    if ctx.store_args.json {
        out.json(&report)?;
    } else {
        for p in &report.problems {
            let removed = if p.removed { " (removed)" } else { "" };
            out.line(&format!("{}: {}{removed}", p.path.display(), p.message))?;
        }
        out.line(&format!(
            "checked {} layers, {} images, {} names, {} mounts, {} blobs: {}",
            report.layers,
            report.images,
            report.names,
            report.mounts,
            report.blobs,
            if report.is_clean() {
                "clean".to_owned()
            } else {
                format!("{} problems", report.problems.len())
            }
        ))?;
    }
    let left = report.problems.iter().filter(|p| !p.removed).count();
    if left > 0 {
        bail!(
            "the store at {} has {left} problem{} (listed above){}",
            store.root().display(),
            if left == 1 { "" } else { "s" },
            if args.repair {
                ""
            } else {
                "; `strata fsck --repair` removes what is damaged, the next pull restores it"
            }
        );
    }
    Ok(())
}
