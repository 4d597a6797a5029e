//! `strata diff`: what each layer adds, modifies and deletes relative to the
//! layers below (like `docker diff`), or how two images' merged trees differ.
//! The `--json` shapes are documented in docs/inspect.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use strata_layer::{ChangeKind, merge};
use strata_registry::ImageRef;

use crate::commands::format::{brief, no_such_layer, slash};
use crate::context::Context;
use crate::layers::{created_by, load};
use crate::output::Output;

/// Show what each layer Adds, Modifies and Deletes, or how two images differ
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata diff myimage:1\n  strata diff --layer 3 myimage:1\n  strata diff myimage:1 myimage:2"
)]
pub struct DiffArgs {
    /// The image
    pub image: ImageRef,
    /// A second image: compare the two merged trees instead
    pub other: Option<ImageRef>,
    /// Only this layer (0 = bottom)
    #[arg(long, value_name = "N", conflicts_with = "other")]
    pub layer: Option<usize>,
}

/// `diff IMAGE --json`: one per layer; fields in name order (see `format`).
#[derive(Debug, Serialize)]
struct LayerChangesJson<'a> {
    changes: Vec<ChangeJson>,
    created_by: &'a str,
    digest: &'a str,
    layer: usize,
}

/// One changed path; `diff IMAGE1 IMAGE2 --json` is a list of these.
#[derive(Debug, Serialize)]
struct ChangeJson {
    change: ChangeKind,
    path: String,
}

fn change_list(changes: &BTreeMap<PathBuf, ChangeKind>) -> Vec<ChangeJson> {
    changes
        .iter()
        .map(|(p, &change)| ChangeJson {
            change,
            path: slash(p),
        })
        .collect()
}

/// `A|M|D /path`.
fn change_line(path: &Path, kind: ChangeKind) -> String {
    let letter = match kind {
        ChangeKind::Added => 'A',
        ChangeKind::Modified => 'M',
        ChangeKind::Deleted => 'D',
    };
    format!("{letter} {}", slash(path))
}

/// `strata diff`.
pub fn run(args: &DiffArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let merged = merge(&image.indexes);
    if let Some(other) = &args.other {
        let other = load(ctx, other)?;
        let changes = merged.diff(&merge(&other.indexes));
        if ctx.store_args.json {
            return out.json(&change_list(&changes));
        }
        for (p, k) in &changes {
            out.line(&change_line(p, *k))?;
        }
        return Ok(());
    }
    let created = created_by(&image.config, image.layers.len());
    let wanted: Vec<usize> = match args.layer {
        Some(n) if n >= image.layers.len() => {
            return Err(no_such_layer(&image.name, image.layers.len()));
        }
        Some(n) => vec![n],
        None => (0..image.layers.len()).collect(),
    };
    if ctx.store_args.json {
        return out.json(
            &wanted
                .iter()
                .map(|&i| LayerChangesJson {
                    changes: change_list(&merged.changes[i]),
                    created_by: &created[i],
                    digest: &image.layers[i].digest,
                    layer: i,
                })
                .collect::<Vec<_>>(),
        );
    }
    for i in wanted {
        out.line(&format!(
            "layer {i} {}  {}",
            image.layers[i].digest,
            brief(&created[i])
        ))?;
        for (p, k) in &merged.changes[i] {
            out.line(&change_line(p, *k))?;
        }
    }
    Ok(())
}
