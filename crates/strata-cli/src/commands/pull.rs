//! `strata pull IMAGE`: into the store, without mounting.

use anyhow::Result;
use clap::Args;
use strata_registry::ImageRef;

use crate::context::Context;
use crate::output::Output;
use crate::pull::pull;

/// Fetch an image's layers into the store (only those not there yet)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata pull alpine:latest\n  strata pull --platform linux/arm64 ghcr.io/org/app:1\n  strata pull oci:./layout:v1"
)]
pub struct PullArgs {
    /// The image: NAME[:TAG][@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]
    pub image: ImageRef,
}

/// Runs the command.
pub fn run(args: &PullArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let pulled = pull(ctx, &store, &args.image)?;
    if ctx.store_args.json {
        out.json(&serde_json::json!({
            "image": pulled.name,
            "digest": pulled.record.digest,
            "platform": pulled.record.platform,
            "layers": pulled.record.layers.iter().map(|l| serde_json::json!({
                "digest": l.digest, "diff_id": l.diff_id, "chain_id": l.chain_id,
                "size": l.size, "path": store.layer_dir(&l.chain_id),
                "served_by": pulled.served_by.get(&l.digest),
            })).collect::<Vec<_>>(),
            "extracted": pulled.extracted,
            "fetched_bytes": pulled.fetched_bytes,
        }))
    } else {
        out.line(&pulled.record.digest)
    }
}
