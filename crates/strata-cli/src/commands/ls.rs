//! `strata ls`: the merged tree of an image as the mounted rootfs shows it,
//! or what one layer's tar lists (`--layer`). The `--json` shape is
//! documented in docs/inspect.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use strata_layer::{Node, Visible, merge};
use strata_registry::ImageRef;

use crate::commands::format::{NodeJson, image_path, no_such_layer, slash};
use crate::context::Context;
use crate::layers::load;
use crate::output::Output;

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

/// `strata ls`.
pub fn run(args: &LsArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let image = load(ctx, &args.image)?;
    let base = image_path(&args.path);
    let nodes: BTreeMap<PathBuf, Visible> = match args.layer {
        Some(n) => {
            let Some(index) = image.indexes.get(n) else {
                return Err(no_such_layer(&image.name, image.indexes.len()));
            };
            index
                .listing()
                .into_iter()
                .map(|(p, node)| (p, Visible { node, layer: n }))
                .collect()
        }
        None => merge(&image.indexes).tree,
    };
    if !base.as_os_str().is_empty()
        && !nodes.contains_key(&base)
        && !nodes.keys().any(|p| p.starts_with(&base))
    {
        bail!("{} has no {}", image.name, args.path);
    }
    let selected: Vec<(&PathBuf, &Visible)> = nodes
        .iter()
        .filter(|(p, v)| {
            if args.recursive {
                p.starts_with(&base)
            } else if *p == &base {
                v.node.kind != "dir"
            } else {
                p.parent() == Some(base.as_path())
            }
        })
        .collect();
    if ctx.store_args.json {
        return out.json(
            &selected
                .iter()
                .map(|(p, v)| NodeJson::entry(p, &v.node, v.layer))
                .collect::<Vec<_>>(),
        );
    }
    for (path, v) in selected {
        let line = if args.long {
            long_line(path, &v.node)
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

/// `-l`: mode owner size mtime path [-> target].
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

/// `drwxr-xr-x`, with setuid/setgid/sticky as `ls` shows them.
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
