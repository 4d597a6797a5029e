//! `strata waste`: the bytes lower layers carry only for higher ones to
//! overwrite or delete them, and limits for CI (as dive's CI mode). The
//! numbers come from `strata_layer::waste`; the `--json` shape is documented
//! in docs/inspect.md.

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use strata_registry::ImageRef;

use crate::commands::format::slash;
use crate::context::Context;
use crate::layers::load;
use crate::output::Output;
use crate::pull::human_bytes;

/// Measure the bytes that lower layers carry only to be overwritten or deleted above
///
/// Wasted bytes: files in a layer that a higher layer deletes or replaces.
/// Efficiency: 1 - wasted / all file bytes in all layers (1.0 when nothing is
/// wasted). With --max-waste or --min-efficiency the command fails (exit 1)
/// when the image exceeds them, for CI (as dive's CI mode does).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata waste myimage:1\n  strata waste --max-waste 10000000 --min-efficiency 0.95 myimage:1"
)]
pub struct WasteArgs {
    /// The image
    pub image: ImageRef,
    /// Fail if more bytes than this are wasted
    #[arg(long, value_name = "BYTES")]
    pub max_waste: Option<u64>,
    /// Fail if the efficiency is below this (0.0-1.0)
    #[arg(long, value_name = "F")]
    pub min_efficiency: Option<f64>,
    /// How many of the worst files to list
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// `waste --json`, in the order docs/inspect.md lists its keys.
#[derive(Debug, Serialize)]
struct WasteJson {
    total_bytes: u64,
    wasted_bytes: u64,
    efficiency: f64,
    worst: Vec<WastedPathJson>,
}

/// One of the worst paths.
#[derive(Debug, Serialize)]
struct WastedPathJson {
    path: String,
    bytes: u64,
    count: usize,
}

/// `strata waste`.
pub fn run(args: &WasteArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let waste = strata_layer::waste(&image.indexes);
    let report = WasteJson {
        total_bytes: waste.total_bytes,
        wasted_bytes: waste.wasted_bytes,
        efficiency: waste.efficiency,
        worst: waste
            .paths
            .iter()
            .take(args.top)
            .map(|w| WastedPathJson {
                path: slash(&w.path),
                bytes: w.bytes,
                count: w.copies,
            })
            .collect(),
    };
    if ctx.store_args.json {
        out.json(&report)?;
    } else {
        out.line(&format!("Image:       {}", image.name))?;
        out.line(&format!(
            "Total:       {} ({} bytes in files across all layers)",
            human_bytes(report.total_bytes),
            report.total_bytes
        ))?;
        out.line(&format!(
            "Wasted:      {} ({} bytes)",
            human_bytes(report.wasted_bytes),
            report.wasted_bytes
        ))?;
        out.line(&format!("Efficiency:  {:.4}", report.efficiency))?;
        if !report.worst.is_empty() {
            out.line("")?;
            out.line(&format!("{:>12}  {:>6}  PATH", "WASTED", "COPIES"))?;
            for w in &report.worst {
                out.line(&format!(
                    "{:>12}  {:>6}  {}",
                    human_bytes(w.bytes),
                    w.count,
                    w.path
                ))?;
            }
        }
    }
    if let Some(max) = args.max_waste
        && report.wasted_bytes > max
    {
        bail!(
            "{} wastes {} bytes, more than --max-waste {max}",
            image.name,
            report.wasted_bytes
        );
    }
    if let Some(min) = args.min_efficiency
        && report.efficiency < min
    {
        bail!(
            "{} has efficiency {:.4}, below --min-efficiency {min}",
            image.name,
            report.efficiency
        );
    }
    Ok(())
}
