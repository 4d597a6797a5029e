//! `strata inspect`: an image's config and a table of its layers, computed
//! from the layers themselves (no mount, no root). The `--json` shape is
//! documented in docs/inspect.md.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use strata_registry::ImageRef;

use crate::commands::format::{brief, short};
use crate::context::Context;
use crate::layers::{created_by, load};
use crate::output::Output;
use crate::pull::human_bytes;

/// Show an image's config and a table of its layers
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata inspect alpine:latest\n  strata inspect --json docker-archive:saved.tar | jq '.layers[].created_by'"
)]
pub struct InspectArgs {
    /// The image
    pub image: ImageRef,
}

/// `inspect --json`; fields in name order (see `format`).
#[derive(Debug, Serialize)]
struct InspectJson<'a> {
    config: ConfigJson<'a>,
    created: Option<&'a str>,
    digest: &'a str,
    image: &'a str,
    layers: Vec<LayerJson<'a>>,
    platform: &'a str,
}

/// The image config's run settings.
#[derive(Debug, Serialize)]
struct ConfigJson<'a> {
    cmd: Option<&'a [String]>,
    entrypoint: Option<&'a [String]>,
    env: Option<&'a [String]>,
    exposed_ports: Option<&'a [String]>,
    labels: Option<BTreeMap<&'a str, &'a str>>,
    user: Option<&'a str>,
    working_dir: Option<&'a str>,
}

/// One row of the layer table.
#[derive(Debug, Serialize)]
struct LayerJson<'a> {
    created_by: &'a str,
    diff_id: &'a str,
    digest: &'a str,
    entries: u64,
    index: usize,
    opaque_dirs: usize,
    size: u64,
    uncompressed_size: u64,
    whiteouts: usize,
}

/// `strata inspect`.
pub fn run(args: &InspectArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let created = created_by(&image.config, image.layers.len());
    let c = image.config.config().clone().unwrap_or_default();
    if ctx.store_args.json {
        return out.json(&InspectJson {
            config: ConfigJson {
                cmd: c.cmd().as_deref(),
                entrypoint: c.entrypoint().as_deref(),
                env: c.env().as_deref(),
                exposed_ports: c.exposed_ports().as_deref(),
                labels: c.labels().as_ref().map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect()
                }),
                user: c.user().as_deref(),
                working_dir: c.working_dir().as_deref(),
            },
            created: image.config.created().as_deref(),
            digest: &image.digest,
            image: &image.name,
            layers: image
                .layers
                .iter()
                .zip(&image.indexes)
                .enumerate()
                .map(|(i, (l, idx))| LayerJson {
                    created_by: &created[i],
                    diff_id: &l.diff_id,
                    digest: &l.digest,
                    entries: idx.tar_entries,
                    index: i,
                    opaque_dirs: idx.opaque.len(),
                    size: l.size,
                    uncompressed_size: idx.tar_bytes,
                    whiteouts: idx.whiteouts.len(),
                })
                .collect(),
            platform: &image.platform,
        });
    }
    let show = |v: Option<String>| v.unwrap_or_default();
    let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("{v:?}")).unwrap_or_default();
    out.line(&format!("Image:       {}", image.name))?;
    out.line(&format!("Digest:      {}", image.digest))?;
    out.line(&format!("Platform:    {}", image.platform))?;
    out.line(&format!(
        "Created:     {}",
        show(image.config.created().clone())
    ))?;
    out.line(&format!("Entrypoint:  {}", list(c.entrypoint())))?;
    out.line(&format!("Cmd:         {}", list(c.cmd())))?;
    out.line(&format!("WorkingDir:  {}", show(c.working_dir().clone())))?;
    out.line(&format!("User:        {}", show(c.user().clone())))?;
    out.line(&format!("Ports:       {}", list(c.exposed_ports())))?;
    for env in c.env().clone().unwrap_or_default() {
        out.line(&format!("Env:         {env}"))?;
    }
    for (k, v) in c.labels().clone().unwrap_or_default() {
        out.line(&format!("Label:       {k}={v}"))?;
    }
    out.line("")?;
    out.line(&format!(
        "{:>3}  {:<19}  {:<19}  {:>10}  {:>12}  {:>7}  {:>9}  CREATED BY",
        "#", "DIGEST", "DIFF_ID", "SIZE", "UNCOMPRESSED", "ENTRIES", "WHITEOUTS"
    ))?;
    for (i, (l, idx)) in image.layers.iter().zip(&image.indexes).enumerate() {
        out.line(&format!(
            "{i:>3}  {:<19}  {:<19}  {:>10}  {:>12}  {:>7}  {:>9}  {}",
            short(&l.digest),
            short(&l.diff_id),
            human_bytes(l.size),
            human_bytes(idx.tar_bytes),
            idx.tar_entries,
            idx.whiteouts.len() + idx.opaque.len(),
            brief(&created[i])
        ))?;
    }
    Ok(())
}
