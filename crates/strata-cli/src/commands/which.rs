//! `strata which`: the layer that provides a path, and every layer that
//! added, changed or deleted it. The `--json` shape is documented in
//! docs/inspect.md.

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use strata_layer::{ChangeKind, merge};
use strata_registry::ImageRef;

use crate::commands::format::{NodeJson, brief, image_path, short, slash};
use crate::context::Context;
use crate::layers::{created_by, load};
use crate::output::Output;

/// Show which layer provides a path, and every layer that touched it
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata which alpine:latest /etc/os-release")]
pub struct WhichArgs {
    /// The image
    pub image: ImageRef,
    /// The path in the image
    pub path: String,
}

/// `which --json`; fields in name order (see `format`).
#[derive(Debug, Serialize)]
struct WhichJson<'a> {
    history: Vec<HistoryJson<'a>>,
    node: Option<NodeJson<'a>>,
    path: String,
    visible_layer: Option<usize>,
}

/// One layer that changed the path.
#[derive(Debug, Serialize)]
struct HistoryJson<'a> {
    change: ChangeKind,
    created_by: &'a str,
    digest: &'a str,
    layer: usize,
}

/// `strata which`.
pub fn run(args: &WhichArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let path = image_path(&args.path);
    let merged = merge(&image.indexes);
    let created = created_by(&image.config, image.layers.len());
    let history = merged.history(&path);
    let visible = merged.tree.get(&path);
    if ctx.store_args.json {
        return out.json(&WhichJson {
            history: history
                .iter()
                .map(|&(i, change)| HistoryJson {
                    change,
                    created_by: &created[i],
                    digest: &image.layers[i].digest,
                    layer: i,
                })
                .collect(),
            node: visible.map(|v| NodeJson::node(&v.node)),
            path: slash(&path),
            visible_layer: visible.map(|v| v.layer),
        });
    }
    for (i, kind) in &history {
        out.line(&format!(
            "layer {i} {} {kind:?}  {}",
            short(&image.layers[*i].digest),
            brief(&created[*i])
        ))?;
    }
    match visible {
        Some(v) => out.line(&format!(
            "{} is provided by layer {} ({})",
            slash(&path),
            v.layer,
            image.layers[v.layer].digest
        )),
        None if history.is_empty() => bail!("no layer of {} has {}", image.name, slash(&path)),
        None => out.line(&format!(
            "{} is not in the merged tree (deleted)",
            slash(&path)
        )),
    }
}
