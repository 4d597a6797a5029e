//! `strata copy SRC DEST`: an image from any source to any destination,
//! blob by blob, never through the store and never extracted.

use anyhow::{Context as _, Result};
use clap::Args;
use strata_registry::{ImageDestination, ImageRef};

use crate::context::Context;
use crate::output::Output;
use crate::transfer::{BlobJob, ManifestFormat, destination_options, in_format, send};

/// Copy an image between registries, OCI layouts and archives, keeping every digest
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata copy docker.io/library/alpine:3.20 registry.example/mirror/alpine:3.20\n  strata copy --all ghcr.io/org/app:1 oci:./layout:app-1\n  strata copy oci-archive:app.tar registry.example/team/app:1\n\nOnly what the destination lacks is sent; a blob another repository of the same registry holds is mounted. The manifest bytes are copied unchanged, so digests stay the same. Without --all, the platform of --platform (default: the host's) is taken from an index."
)]
pub struct CopyArgs {
    /// The image to copy: NAME[:TAG][@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]
    pub source: ImageRef,
    /// Where to: NAME[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] (layers uncompressed: the config and diff_ids stay, the manifest digest cannot)
    pub destination: ImageRef,
    /// Copy a multi-platform index with every platform's image
    #[arg(long)]
    pub all: bool,
    /// Write the manifests as this format (oci: Docker ones rewritten, so their digests change; the blobs stay)
    #[arg(long, value_enum)]
    pub format: Option<ManifestFormat>,
}

/// Runs the command.
pub fn run(args: &CopyArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let source = ctx.open_source(&args.source)?;
    let platform = if args.all {
        None
    } else {
        Some(ctx.platform()?)
    };
    let plan = source
        .plan_copy(platform.as_ref())
        .with_context(|| format!("reading {}", args.source))?;
    let mount_from = ImageDestination::mount_source(&args.destination, &args.source);
    let destination = ImageDestination::open(
        &args.destination,
        &ctx.registry.options()?,
        &destination_options(mount_from.clone()),
    )
    .with_context(|| format!("opening {} for writing", args.destination))?;
    let jobs = plan
        .blobs
        .iter()
        .map(|blob| {
            let source = &source;
            let descriptor = blob.descriptor.clone();
            let what = blob.what.clone();
            BlobJob {
                descriptor: blob.descriptor.clone(),
                what: blob.what.clone(),
                mount_from: mount_from.clone(),
                open: Box::new(move || {
                    source
                        .blob(&descriptor, &what)
                        .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
                }),
            }
        })
        .collect();
    let manifests = in_format(&plan.manifests, args.format)?;
    let sent = send(ctx, destination, jobs, &manifests)
        .with_context(|| format!("copying {} to {}", args.source, args.destination))?;
    if ctx.store_args.json {
        out.json(&sent)
    } else {
        out.line(&sent.digest)
    }
}
