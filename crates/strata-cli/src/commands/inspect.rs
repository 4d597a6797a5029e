//! `strata inspect`, `ls`, `which`, `diff`, `waste`: what an image's layers
//! hold, computed from the layers themselves (no mount, no root).
//! The `--json` shapes are documented in docs/inspect.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use strata_layer::{ChangeKind, Node, Visible, merge};
use strata_registry::ImageRef;

use crate::context::Context;
use crate::layers::{Loaded, created_by, load};
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

/// List the merged tree (as the mounted rootfs shows it) or one layer's entries
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata ls alpine:latest /etc\n  strata ls -lR alpine:latest /usr/bin\n  strata ls --layer 2 myimage:1"
)]
pub struct LsArgs {
    /// The image
    pub image: ImageRef,
    /// The directory (or file) to list
    #[arg(default_value = "/")]
    pub path: String,
    /// List only what layer N (0 = bottom) holds, whiteouts included
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Long format: mode, owner, size, mtime, link target
    #[arg(short = 'l')]
    pub long: bool,
    /// Recurse: one full path per line, as `find` prints them
    #[arg(short = 'R')]
    pub recursive: bool,
}

/// Show which layer provides a path, and every layer that touched it
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata which alpine:latest /etc/os-release")]
pub struct WhichArgs {
    /// The image
    pub image: ImageRef,
    /// The path in the image
    pub path: String,
}

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

fn image_path(path: &str) -> PathBuf {
    strata_path(Path::new(path))
}

/// `/etc/` → `etc`; `/` → ``.
fn strata_path(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

fn slash(path: &Path) -> String {
    format!("/{}", path.display())
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// `inspect`.
pub fn run_inspect(args: &InspectArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let created = created_by(&image.config, image.layers.len());
    let c = image.config.config().clone().unwrap_or_default();
    let rows: Vec<serde_json::Value> = image
        .layers
        .iter()
        .zip(&image.indexes)
        .enumerate()
        .map(|(i, (l, idx))| {
            serde_json::json!({
                "index": i, "digest": l.digest, "diff_id": l.diff_id, "size": l.size,
                "uncompressed_size": idx.tar_bytes, "entries": idx.tar_entries,
                "whiteouts": idx.whiteouts.len(), "opaque_dirs": idx.opaque.len(), "created_by": created[i],
            })
        })
        .collect();
    if ctx.store_args.json {
        return out.json(&serde_json::json!({
            "image": image.name, "digest": image.digest, "platform": image.platform,
            "created": image.config.created(),
            "config": {
                "entrypoint": c.entrypoint(), "cmd": c.cmd(), "env": c.env(), "working_dir": c.working_dir(),
                "user": c.user(), "exposed_ports": c.exposed_ports(), "labels": c.labels(),
            },
            "layers": rows,
        }));
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
            created[i].chars().take(60).collect::<String>()
        ))?;
    }
    Ok(())
}

fn mode_string(node: &Node) -> String {
    let t = match node.kind {
        "dir" => 'd',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        _ => '-',
    };
    let m = node.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char, unset: char| match (m & x != 0, m & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    format!(
        "{t}{}{}{}{}{}{}{}{}{}",
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't', 'T'),
    )
}

/// Seconds since the epoch → `YYYY-MM-DD HH:MM` (UTC), civil-from-days.
fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn long_line(path: &Path, node: &Node) -> String {
    let target = match node.kind {
        "symlink" => format!(" -> {}", node.target.as_deref().unwrap_or("")),
        "hardlink" => format!(" link to /{}", node.target.as_deref().unwrap_or("")),
        _ => String::new(),
    };
    format!(
        "{} {}/{} {:>10} {} {}{target}",
        mode_string(node),
        node.uid,
        node.gid,
        node.size,
        date(node.mtime),
        slash(path)
    )
}

fn node_json(path: &Path, node: &Node, layer: Option<usize>) -> serde_json::Value {
    let mut v = serde_json::to_value(node).expect("nodes serialise");
    v["path"] = slash(path).into();
    if let Some(l) = layer {
        v["layer"] = l.into();
    }
    v
}

/// `ls`.
pub fn run_ls(args: &LsArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let base = image_path(&args.path);
    let nodes: BTreeMap<PathBuf, (Node, Option<usize>)> = match args.layer {
        Some(n) => {
            let Some(index) = image.indexes.get(n) else {
                bail!(
                    "{} has {} layers (0 to {})",
                    image.name,
                    image.indexes.len(),
                    image.indexes.len().saturating_sub(1)
                );
            };
            let mut nodes: BTreeMap<PathBuf, (Node, Option<usize>)> = index
                .entries
                .iter()
                .map(|(p, node)| (p.clone(), (node.clone(), Some(n))))
                .collect();
            for w in &index.whiteouts {
                nodes.insert(w.clone(), (marker("whiteout"), Some(n)));
            }
            for d in &index.opaque {
                nodes
                    .entry(d.join(".wh..wh..opq"))
                    .or_insert((marker("opaque"), Some(n)));
            }
            nodes
        }
        None => merge(&image.indexes)
            .tree
            .into_iter()
            .map(|(p, v)| (p, (v.node, Some(v.layer))))
            .collect(),
    };
    if !base.as_os_str().is_empty()
        && !nodes.contains_key(&base)
        && !nodes.keys().any(|p| p.starts_with(&base))
    {
        bail!("{} has no {}", image.name, args.path);
    }
    let selected: Vec<(&PathBuf, &(Node, Option<usize>))> = nodes
        .iter()
        .filter(|(p, (node, _))| {
            if args.recursive {
                p.starts_with(&base)
            } else if *p == &base {
                node.kind != "dir"
            } else {
                p.parent() == Some(base.as_path())
            }
        })
        .collect();
    if ctx.store_args.json {
        return out.json(
            &selected
                .iter()
                .map(|(p, (n, l))| node_json(p, n, *l))
                .collect::<Vec<_>>(),
        );
    }
    for (path, (node, _)) in selected {
        let line = if args.long {
            long_line(path, node)
        } else if args.recursive {
            slash(path)
        } else {
            path.file_name()
                .map_or_else(|| slash(path), |n| n.to_string_lossy().into_owned())
        };
        out.line(&line)?;
    }
    Ok(())
}

fn marker(kind: &'static str) -> Node {
    Node::bare(kind, 0)
}

/// `which`.
pub fn run_which(args: &WhichArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let path = image_path(&args.path);
    let merged = merge(&image.indexes);
    let created = created_by(&image.config, image.layers.len());
    let history: Vec<(usize, ChangeKind)> = merged
        .changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.get(&path).map(|k| (i, *k)))
        .collect();
    let visible: Option<&Visible> = merged.tree.get(&path);
    if ctx.store_args.json {
        return out.json(&serde_json::json!({
            "path": slash(&path),
            "visible_layer": visible.map(|v| v.layer),
            "node": visible.map(|v| &v.node),
            "history": history.iter().map(|(i, k)| serde_json::json!({"layer": i, "digest": image.layers[*i].digest, "change": k, "created_by": created[*i]})).collect::<Vec<_>>(),
        }));
    }
    for (i, kind) in &history {
        out.line(&format!(
            "layer {i} {} {:?}  {}",
            short(&image.layers[*i].digest),
            kind,
            created[*i].chars().take(60).collect::<String>()
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

fn letter(kind: ChangeKind) -> char {
    match kind {
        ChangeKind::Added => 'A',
        ChangeKind::Modified => 'M',
        ChangeKind::Deleted => 'D',
    }
}

/// `diff`.
pub fn run_diff(args: &DiffArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let merged = merge(&image.indexes);
    if let Some(other) = &args.other {
        let other: Loaded = load(ctx, other)?;
        let theirs = merge(&other.indexes).tree;
        let mut changes: BTreeMap<PathBuf, ChangeKind> = BTreeMap::new();
        for (p, v) in &merged.tree {
            match theirs.get(p) {
                None => {
                    changes.insert(p.clone(), ChangeKind::Deleted);
                }
                Some(t) if t.node.differs(&v.node) => {
                    changes.insert(p.clone(), ChangeKind::Modified);
                }
                Some(_) => {}
            }
        }
        for p in theirs.keys().filter(|p| !merged.tree.contains_key(*p)) {
            changes.insert(p.clone(), ChangeKind::Added);
        }
        if ctx.store_args.json {
            return out.json(
                &changes
                    .iter()
                    .map(|(p, k)| serde_json::json!({"path": slash(p), "change": k}))
                    .collect::<Vec<_>>(),
            );
        }
        for (p, k) in &changes {
            out.line(&format!("{} {}", letter(*k), slash(p)))?;
        }
        return Ok(());
    }
    let created = created_by(&image.config, image.layers.len());
    let wanted: Vec<usize> = match args.layer {
        Some(n) if n >= image.layers.len() => bail!(
            "{} has {} layers (0 to {})",
            image.name,
            image.layers.len(),
            image.layers.len().saturating_sub(1)
        ),
        Some(n) => vec![n],
        None => (0..image.layers.len()).collect(),
    };
    if ctx.store_args.json {
        return out.json(
            &wanted
                .iter()
                .map(|i| serde_json::json!({
                    "layer": i, "digest": image.layers[*i].digest, "created_by": created[*i],
                    "changes": merged.changes[*i].iter().map(|(p, k)| serde_json::json!({"path": slash(p), "change": k})).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
        );
    }
    for i in wanted {
        out.line(&format!(
            "layer {i} {}  {}",
            image.layers[i].digest,
            created[i].chars().take(60).collect::<String>()
        ))?;
        for (p, k) in &merged.changes[i] {
            out.line(&format!("{} {}", letter(*k), slash(p)))?;
        }
    }
    Ok(())
}

/// The numbers `waste` reports.
#[derive(Debug, serde::Serialize)]
pub struct WasteReport {
    /// Bytes of all files in all layers.
    pub total_bytes: u64,
    /// Bytes of files hidden by a higher layer.
    pub wasted_bytes: u64,
    /// 1 - wasted / total.
    pub efficiency: f64,
    /// The worst paths: bytes wasted, and how many copies were hidden.
    pub worst: Vec<WastedPath>,
}

/// One path's waste.
#[derive(Debug, serde::Serialize)]
pub struct WastedPath {
    /// The path.
    pub path: String,
    /// Bytes hidden.
    pub bytes: u64,
    /// Copies hidden.
    pub count: usize,
}

/// Computes the waste of an image (pure over its indexes).
#[must_use]
pub fn waste(image: &Loaded, top: usize) -> WasteReport {
    let total_bytes: u64 = image
        .indexes
        .iter()
        .flat_map(|i| i.entries.values())
        .filter(|n| n.kind == "file")
        .map(|n| n.size)
        .sum();
    let merged = merge(&image.indexes);
    let mut by_path: BTreeMap<&Path, (u64, usize)> = BTreeMap::new();
    for (path, visible) in merged.hidden.iter().flatten() {
        if visible.node.kind == "file" {
            let e = by_path.entry(path.as_path()).or_default();
            e.0 += visible.node.size;
            e.1 += 1;
        }
    }
    let wasted_bytes: u64 = by_path.values().map(|(b, _)| b).sum();
    let mut worst: Vec<WastedPath> = by_path
        .into_iter()
        .map(|(p, (bytes, count))| WastedPath {
            path: slash(p),
            bytes,
            count,
        })
        .collect();
    worst.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    worst.truncate(top);
    #[expect(
        clippy::cast_precision_loss,
        reason = "a ratio for display and thresholds"
    )]
    let efficiency = if total_bytes == 0 {
        1.0
    } else {
        1.0 - wasted_bytes as f64 / total_bytes as f64
    };
    WasteReport {
        total_bytes,
        wasted_bytes,
        efficiency,
        worst,
    }
}

/// `waste`.
pub fn run_waste(args: &WasteArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let report = waste(&image, args.top);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_modes() {
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
        let node = Node::bare;
        assert_eq!(mode_string(&node("dir", 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&node("file", 0o4755)), "-rwsr-xr-x");
        assert_eq!(mode_string(&node("file", 0o2644)), "-rw-r-Sr--");
        assert_eq!(mode_string(&node("symlink", 0o777)), "lrwxrwxrwx");
    }
}
