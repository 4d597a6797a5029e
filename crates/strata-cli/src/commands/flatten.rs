//! `strata flatten IMAGE DIR`: a plain merged directory, no mount needed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use strata_layer::Mode;
use strata_registry::ImageRef;

use crate::context::Context;
use crate::layers::stored_layer_source;
use crate::output::Output;
use crate::pull::{layer_compression, store_name};

/// Write an image's merged rootfs into a plain directory (no overlay, no mount)
///
/// Layers already in the store are applied from there; otherwise each layer
/// streams from the source and is applied in order, without root if need be
/// (device nodes are then skipped, ownership is the caller's).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata flatten alpine:latest ./rootfs\n  strata flatten docker-archive:saved.tar ./rootfs"
)]
pub struct FlattenArgs {
    /// The image
    pub image: ImageRef,
    /// The target directory; created if missing, must be empty
    pub dir: PathBuf,
}

/// Checks that `dir` is new or empty, creating it.
pub fn prepare_empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
        {
            bail!(
                "{} is not empty; flatten into an empty or new directory",
                dir.display()
            );
        }
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Applies every layer of `image` onto the empty directory `dir`; returns the
/// image's config bytes. When any layer fails (a digest mismatch, a refused
/// entry), `dir` is emptied again: nothing unverified or half-applied stays.
pub fn flatten_into(ctx: &Context, image: &ImageRef, dir: &Path) -> Result<Vec<u8>> {
    prepare_empty_dir(dir)?;
    apply_all(ctx, image, dir).inspect_err(|_| {
        if let Err(e) = empty_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not empty the target after the failure");
        }
    })
}

/// Removes everything inside `dir` (never following a symlink out of it).
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn apply_all(ctx: &Context, image: &ImageRef, dir: &Path) -> Result<Vec<u8>> {
    let apply = ctx.layer_options(Mode::Apply);
    if let Ok(store) = ctx.store()
        && let Ok(record) = store.find_image(&store_name(image))
        && record.layers.iter().all(|l| store.has_layer(&l.chain_id))
    {
        for (i, layer) in record.layers.iter().enumerate() {
            strata_layer::apply_source(
                &mut stored_layer_source(&store, &layer.chain_id)?,
                dir,
                &apply,
            )
            .with_context(|| {
                format!(
                    "applying layer {i} ({}) of {}",
                    layer.digest,
                    store_name(image)
                )
            })?;
        }
        ctx.progress.summary(&format!(
            "flattened {} ({} layers, from the store) into {}",
            store_name(image),
            record.layers.len(),
            dir.display()
        ));
        return Ok(record.config.into_bytes());
    }
    let (source, resolved, _) = ctx.resolve(image)?;
    let layers = resolved.layers()?;
    for (i, layer) in layers.iter().enumerate() {
        let what = format!("layer {i} ({})", layer.descriptor.digest());
        let bar = ctx
            .progress
            .layer(&format!("layer {i}"), layer.descriptor.size());
        let stream = source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .with_context(|| format!("fetching {what}"))?;
        let hint = layer_compression(layer.descriptor.media_type().as_ref());
        strata_layer::extract(
            bar.wrap(stream),
            hint,
            Some(layer.diff_id.as_ref()),
            dir,
            &apply,
        )
        .with_context(|| format!("applying {what} of {image}"))?;
        bar.finish();
    }
    ctx.progress.summary(&format!(
        "flattened {image} ({} layers) into {}",
        layers.len(),
        dir.display()
    ));
    Ok(resolved.config_bytes)
}

/// Runs the command.
pub fn run(args: &FlattenArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    flatten_into(ctx, &args.image, &args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    if ctx.store_args.json {
        out.json(&serde_json::json!({"image": store_name(&args.image), "dir": dir}))
    } else {
        out.line(&dir.display().to_string())
    }
}
