//! `strata manifest IMAGE`: the manifest or index, byte for byte.

use anyhow::{Context as _, Result};
use clap::Args;
use strata_registry::{ImageRef, ImageSource};

use crate::context::{Context, stored_image};
use crate::output::Output;

/// Print an image's manifest (or index) exactly as the source holds it
///
/// Without --platform this is what the reference names, which may be a
/// multi-platform index (as `crane manifest` prints); with --platform it is
/// that platform's manifest. The bytes are unchanged, so piping them to
/// sha256sum gives the manifest digest.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata manifest alpine:latest\n  strata manifest --platform linux/arm64 localhost:5000/app:1\n  strata manifest oci:./layout:v1\n  strata manifest docker-archive:saved.tar"
)]
pub struct ManifestArgs {
    /// The image: NAME[:TAG][@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]
    pub image: ImageRef,
}

/// Runs the command.
pub fn run(args: &ManifestArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    // An image the store holds (one `strata commit` made exists nowhere else).
    if let Some(record) = stored_image(ctx, &args.image)? {
        return out.bytes(record.manifest.as_bytes());
    }
    let registry = &ctx.registry;
    let source = ImageSource::open(&args.image, &registry.options()?)
        .with_context(|| format!("opening {}", args.image))?;
    let raw = match registry.platform()? {
        None => source.raw_manifest(),
        Some(platform) => source.resolve(&platform).map(|image| image.manifest),
    }
    .with_context(|| format!("reading the manifest of {}", args.image))?;
    out.bytes(&raw.bytes)
}
