//! `strata config IMAGE`: the image config, byte for byte.

use anyhow::{Context as _, Result};
use clap::Args;
use strata_registry::{ImageRef, ImageSource, Platform};

use crate::context::{Context, stored_image};
use crate::output::Output;

/// Print an image's config JSON (entrypoint, env, diff_ids, history) as stored
///
/// A multi-platform image is resolved to --platform, by default the host's.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata config alpine:latest\n  strata config --platform linux/arm64 localhost:5000/app:1"
)]
pub struct ConfigArgs {
    /// The image: NAME[:TAG][@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]
    pub image: ImageRef,
}

/// Runs the command.
pub fn run(args: &ConfigArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    // An image the store holds (one `strata commit` made exists nowhere else).
    if let Some(record) = stored_image(ctx, &args.image)? {
        return out.bytes(record.config.as_bytes());
    }
    let registry = &ctx.registry;
    let source = ImageSource::open(&args.image, &registry.options()?)
        .with_context(|| format!("opening {}", args.image))?;
    let platform = registry.platform()?.unwrap_or_else(Platform::host);
    let image = source
        .resolve(&platform)
        .with_context(|| format!("reading the config of {}", args.image))?;
    out.bytes(&image.config_bytes)
}
