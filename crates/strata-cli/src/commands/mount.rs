//! `strata mount`, `strata pull-and-mount`, `strata umount`, `strata mounts`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use sha2::{Digest as _, Sha256};
use strata_registry::ImageRef;
use strata_stack::{ImageRecord, MountRecord, MountSpec, Store, is_mountpoint};

use crate::context::Context;
use crate::output::Output;
use crate::pull::{pull, store_name};

/// Mount a pulled image as an overlayfs rootfs (read-only unless --rw)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata mount alpine:latest ./rootfs\n  strata mount --rw alpine:latest ./rootfs   # writes go to the store's mounts/ID/upper\n  strata umount ./rootfs"
)]
pub struct MountArgs {
    /// The image, as it was pulled (or its manifest digest)
    pub image: ImageRef,
    /// Where and how
    #[command(flatten)]
    pub at: MountAt,
}

/// Where a mount goes and whether it is writable (mount and pull-and-mount).
#[derive(Debug, Args)]
pub struct MountAt {
    /// The mountpoint; created if missing, must be empty
    pub dir: PathBuf,
    /// Add an upper directory so the rootfs is writable
    #[arg(long)]
    pub rw: bool,
}

/// Pull an image (only the layers the store lacks), then mount it as a rootfs
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata pull-and-mount alpine:latest ./rootfs\n  strata pull-and-mount --rw oci:./layout:v1 ./rootfs   # writes go to the store's mounts/ID/upper\n  pull-and-mount docker-archive:saved.tar ./rootfs\n  strata umount ./rootfs"
)]
pub struct PullAndMountArgs {
    /// The image: a registry reference, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]
    pub image: ImageRef,
    /// Where and how
    #[command(flatten)]
    pub at: MountAt,
}

/// Unmount a rootfs mounted by strata
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata umount ./rootfs\n  strata umount --keep ./rootfs   # keep the writable mount's changes"
)]
pub struct UmountArgs {
    /// The mountpoint
    pub dir: PathBuf,
    /// Keep a writable mount's upper directory (its path is printed)
    #[arg(long)]
    pub keep: bool,
}

/// A new mount's id: unique per mount, never derived from the mountpoint
/// alone, so a later mount at the same path never picks up an upper that
/// `umount --keep` kept.
fn mount_id(mountpoint: &Path) -> String {
    let mut h = Sha256::new();
    h.update(mountpoint.as_os_str().as_encoded_bytes());
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

fn find_image(store: &Store, image: &ImageRef) -> Result<ImageRecord> {
    crate::context::find_stored(
        store,
        image,
        "`strata pull-and-mount` pulls and mounts in one go",
    )
}

/// Checks the mountpoint (creating it when missing) and returns its absolute path.
fn prepare_mountpoint(store: &Store, dir: &Path) -> Result<PathBuf> {
    let inside_store = |abs: &Path| -> Result<()> {
        if abs.starts_with(store.root()) {
            bail!(
                "{} is inside the store ({}); mount somewhere else: the store's own \
clean-up and gc must never meet a mount",
                dir.display(),
                store.root().display()
            );
        }
        Ok(())
    };
    if !dir.exists() {
        // Refuse before creating anything inside the store.
        if let Some(parent) = dir.parent().and_then(|p| std::fs::canonicalize(p).ok()) {
            inside_store(&parent.join(dir.file_name().unwrap_or_default()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let abs = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    inside_store(&abs)?;
    if !abs.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if is_mountpoint(&abs)? {
        bail!(
            "{} is already a mount; unmount it first (`strata umount {}`)",
            dir.display(),
            dir.display()
        );
    }
    if std::fs::read_dir(&abs)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty; mount onto an empty or new directory",
            dir.display()
        );
    }
    Ok(abs)
}

/// Mounts a stored image at `dir`.
fn mount_image(
    ctx: &Context,
    store: &Store,
    image: &ImageRef,
    record: &ImageRecord,
    dir: &Path,
    rw: bool,
    out: &mut Output,
) -> Result<()> {
    let chain_ids: Vec<String> = record.layers.iter().map(|l| l.chain_id.clone()).collect();
    if let Some(i) = chain_ids.iter().position(|c| !store.has_layer(c)) {
        bail!(
            "layer {i} ({}) of {} is not in the store (removed by `strata fsck --repair`?); pull the image again",
            record.layers[i].digest,
            store_name(image)
        );
    }
    let mountpoint = prepare_mountpoint(store, dir)?;
    let id = mount_id(&mountpoint);
    let upper = if rw {
        let base = store.mount_dir(&id);
        let (upper, work) = (base.join("upper"), base.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Some((upper, work))
    } else {
        None
    };
    let mount_record = MountRecord {
        id: id.clone(),
        mountpoint: mountpoint.clone(),
        image: store_name(image),
        digest: record.digest.clone(),
        chain_ids: chain_ids.clone(),
        writable: rw,
        kept: false,
        holder: ctx.holder.map(|h| h.id()),
    };
    // The record first: gc never removes the layers of a mount being made.
    store.put_mount(&mount_record)?;
    let short_links = chain_ids
        .iter()
        .map(|c| store.short_link(c))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = MountSpec {
        target: mountpoint.clone(),
        layers: chain_ids.iter().map(|c| store.layer_dir(c)).collect(),
        upper: upper.clone(),
        short_links: Some((store.links_dir(), short_links)),
        userxattr: store.kind() == strata_stack::StoreKind::Rootless,
    };
    if let Err(e) = strata_stack::mount(&spec) {
        let _ = store.remove_mount(&id, false);
        return Err(e)
            .with_context(|| format!("mounting {} at {}", store_name(image), dir.display()));
    }
    ctx.progress.summary(&format!(
        "mounted {} at {} ({} layers, {})",
        store_name(image),
        mountpoint.display(),
        chain_ids.len(),
        if rw { "writable" } else { "read-only" }
    ));
    if ctx.holder.is_some() {
        // The mount lives in strata's namespace, not in the caller's.
        ctx.progress.summary(&format!(
            "enter it with: {} -- chroot {} /bin/sh",
            crate::commands::unshare::command_line(ctx),
            mountpoint.display()
        ));
    }
    if ctx.store_args.json {
        out.json(&serde_json::json!({
            "mountpoint": mountpoint,
            "image": store_name(image),
            "digest": record.digest,
            "layers": chain_ids.len(),
            "writable": rw,
            "upper": upper.map(|(u, _)| u),
        }))
    } else {
        out.line(&mountpoint.display().to_string())
    }
}

/// `strata mount`.
pub fn run_mount(args: &MountArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let record = find_image(&store, &args.image)?;
    mount_image(
        ctx,
        &store,
        &args.image,
        &record,
        &args.at.dir,
        args.at.rw,
        out,
    )
}

/// `strata pull-and-mount`.
pub fn run_pull_and_mount(args: &PullAndMountArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    if args.at.dir.exists() {
        // Fail before downloading anything if the mountpoint will not do.
        prepare_mountpoint(&store, &args.at.dir)?;
    }
    let pulled = pull(ctx, &store, &args.image)?;
    mount_image(
        ctx,
        &store,
        &args.image,
        &pulled.record,
        &args.at.dir,
        args.at.rw,
        out,
    )
}

/// `strata umount`.
pub fn run_umount(args: &UmountArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let mountpoint = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    // Every record of the mountpoint: a mount killed after writing its
    // record and before mounting leaves one more beside the live one, and
    // none of them is live once the directory is unmounted.
    let records: Vec<_> = store
        .mounts()?
        .into_iter()
        .filter(|m| m.mountpoint == mountpoint && !m.kept)
        .collect();
    let mounted = is_mountpoint(&mountpoint)?;
    if records.is_empty() {
        if mounted {
            bail!(
                "{} is a mount, but not one strata made with this store ({})",
                args.dir.display(),
                store.root().display()
            );
        }
        bail!("{} is not mounted", args.dir.display());
    }
    if mounted {
        strata_stack::unmount(&mountpoint)?;
    }
    let mut kept = Vec::new();
    for record in &records {
        let keep = args.keep && record.writable;
        store.remove_mount(&record.id, keep)?;
        if keep {
            kept.push(store.mount_dir(&record.id).join("upper"));
        }
    }
    ctx.progress
        .summary(&format!("unmounted {}", mountpoint.display()));
    for upper in kept {
        out.line(&upper.display().to_string())?;
    }
    Ok(())
}

/// `strata mounts`.
pub fn run_mounts(ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let mut live = Vec::new();
    for m in store.mounts()? {
        let mounted = !m.kept && is_mountpoint(&m.mountpoint)?;
        live.push((m, mounted));
    }
    if ctx.store_args.json {
        return out.json(&serde_json::json!(
            live.iter()
                .map(|(m, mounted)| serde_json::json!({
                    "mountpoint": m.mountpoint, "image": m.image, "digest": m.digest,
                    "layers": m.chain_ids.len(), "writable": m.writable, "mounted": mounted,
                    "holder": m.holder,
                    "kept_upper": m.kept.then(|| store.mount_dir(&m.id).join("upper")),
                }))
                .collect::<Vec<_>>()
        ));
    }
    for (m, mounted) in live {
        let state = if m.kept {
            format!(
                "  (kept upper: {})",
                store.mount_dir(&m.id).join("upper").display()
            )
        } else if mounted {
            String::new()
        } else if m.holder.is_some() && m.holder != ctx.holder.map(|h| h.id()) {
            "  (stale: the namespace holder that kept it is gone; `strata gc` cleans it up)"
                .to_owned()
        } else {
            "  (not mounted: `strata umount` removes the record)".to_owned()
        };
        out.line(&format!(
            "{}\t{}\t{} layers\t{}{state}",
            m.mountpoint.display(),
            m.image,
            m.chain_ids.len(),
            if m.writable { "rw" } else { "ro" }
        ))?;
    }
    Ok(())
}
