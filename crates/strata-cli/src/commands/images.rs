//! `strata images`, `strata rm IMAGE`, `strata gc`.

use anyhow::{Context as _, Result};
use clap::Args;
use strata_registry::ImageRef;

use crate::context::Context;
use crate::output::Output;
use crate::pull::{human_bytes, store_name};

/// Remove an image's name from the store (its layers go at the next gc)
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata rm alpine:latest && strata gc")]
pub struct RmArgs {
    /// The image, as it was pulled
    pub image: ImageRef,
}

/// `strata images`.
pub fn run_images(ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let images = store.images()?;
    if ctx.store_args.json {
        return out.json(
            &serde_json::json!(images.iter().map(|(r, names)| serde_json::json!({
            "names": names, "digest": r.digest, "platform": r.platform, "layers": r.layers.len(),
            "size": r.layers.iter().map(|l| l.size).sum::<u64>(),
        })).collect::<Vec<_>>()),
        );
    }
    for (record, names) in images {
        let size: u64 = record.layers.iter().map(|l| l.size).sum();
        let name = if names.is_empty() {
            "<none>".to_owned()
        } else {
            names.join(", ")
        };
        out.line(&format!(
            "{name}\t{}\t{}\t{} layers\t{}",
            &record.digest[..19.min(record.digest.len())],
            record.platform,
            record.layers.len(),
            human_bytes(size)
        ))?;
    }
    Ok(())
}

/// `strata rm`.
pub fn run_rm(args: &RmArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let name = store_name(&args.image);
    // The image's last name goes with its record: a writable mount, or an
    // upper `umount --keep` kept, would be left without the image `strata
    // commit` builds on (and a committed image's only blob would go at the
    // next gc). A read-only mount needs only its layers, which gc keeps.
    if let Ok(record) = store.find_image(&name) {
        let other_names = store
            .refs()?
            .iter()
            .filter(|(n, d)| **d == record.digest && **n != name)
            .count();
        let users: Vec<String> = store
            .mounts()?
            .into_iter()
            .filter(|m| m.digest == record.digest && m.writable)
            .map(|m| {
                if m.kept {
                    format!(
                        "the upper kept at {}",
                        store.mount_dir(&m.id).join("upper").display()
                    )
                } else {
                    format!("the mount at {}", m.mountpoint.display())
                }
            })
            .collect();
        if other_names == 0 && !users.is_empty() {
            anyhow::bail!(
                "{name} is in use by {}: unmount it (or commit the changes, then unmount) first",
                users.join(", ")
            );
        }
    }
    let record = store
        .remove_image(&name)
        .with_context(|| format!("removing {name}"))?;
    out.line(&format!("removed {name} ({})", record.digest))
}

/// `strata gc`: drops records of read-only mounts that are gone, then layers
/// nothing uses.
pub fn run_gc(ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let report = store.gc()?;
    if ctx.store_args.json {
        return out.json(&serde_json::json!(report));
    }
    let blobs = match report.removed_blobs.len() {
        0 => String::new(),
        n => format!(" and {n} blobs"),
    };
    out.line(&format!(
        "removed {} layers{blobs}, freed {}",
        report.removed.len(),
        human_bytes(report.freed_bytes)
    ))
}
