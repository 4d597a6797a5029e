//! What the inspect-family commands report, computed from [`LayerIndex`] and
//! [`Merged`] values: a layer's own listing, the history of one path, the
//! changes between two merged trees, and the bytes lower layers waste.
//!
//! These sit beside the merge (`index.rs`) rather than in the CLI because
//! they are functions of its values alone: no image, store or output format
//! is needed to compute or to test them. The CLI only loads the layers and
//! formats what these return (`docs/inspect.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::index::{ChangeKind, LayerIndex, Merged, Node, merge};

/// [`Node::kind`] of a whiteout marker in [`LayerIndex::listing`].
const WHITEOUT_KIND: &str = "whiteout";
/// [`Node::kind`] of an opaque-directory marker in [`LayerIndex::listing`].
const OPAQUE_KIND: &str = "opaque";
/// The name of an opaque-directory marker, as a layer's tar lists it.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

impl LayerIndex {
    /// What the layer's tar lists, markers included: its entries, a node of
    /// kind `whiteout` at each path it whites out (in place of an entry of
    /// the same path), and one of kind `opaque` at `DIR/.wh..wh..opq` for
    /// each directory it makes opaque. A layer read on
    /// its own, not merged: what `ls --layer N` shows.
    #[must_use]
    pub fn listing(&self) -> BTreeMap<PathBuf, Node> {
        let mut nodes = self.entries.clone();
        for w in &self.whiteouts {
            nodes.insert(w.clone(), Node::bare(WHITEOUT_KIND, 0));
        }
        for d in &self.opaque {
            nodes
                .entry(d.join(OPAQUE_MARKER))
                .or_insert_with(|| Node::bare(OPAQUE_KIND, 0));
        }
        nodes
    }
}

impl Merged {
    /// Every layer that added, modified or deleted `path` (a cleaned path:
    /// no leading `/`), bottom first.
    #[must_use]
    pub fn history(&self, path: &Path) -> Vec<(usize, ChangeKind)> {
        self.changes
            .iter()
            .enumerate()
            .filter_map(|(i, changes)| changes.get(path).map(|k| (i, *k)))
            .collect()
    }

    /// What changes from this merged tree to `to`, path by path: `Deleted`
    /// (only here), `Added` (only in `to`), `Modified` (in both, and
    /// [`Node::differs`]). Which layer provides a path does not matter: two
    /// images that share no layers but hold the same tree do not differ.
    #[must_use]
    pub fn diff(&self, to: &Merged) -> BTreeMap<PathBuf, ChangeKind> {
        let mut changes = BTreeMap::new();
        for (path, ours) in &self.tree {
            match to.tree.get(path) {
                None => {
                    changes.insert(path.clone(), ChangeKind::Deleted);
                }
                Some(theirs) if theirs.node.differs(&ours.node) => {
                    changes.insert(path.clone(), ChangeKind::Modified);
                }
                Some(_) => {}
            }
        }
        for path in to.tree.keys().filter(|p| !self.tree.contains_key(*p)) {
            changes.insert(path.clone(), ChangeKind::Added);
        }
        changes
    }
}

/// The bytes an image's layers carry only for a higher layer to delete or
/// replace them (what dive calls wasted space).
#[derive(Debug, Clone, PartialEq)]
pub struct Waste {
    /// Bytes of regular files in all layers (a hard link is not counted
    /// again: its node has kind `hardlink`).
    pub total_bytes: u64,
    /// Bytes of the regular files some higher layer deletes or replaces.
    pub wasted_bytes: u64,
    /// `1 - wasted / total`; 1.0 when there are no file bytes at all.
    pub efficiency: f64,
    /// Every path with wasted bytes, worst first; ties in the order of the
    /// paths as they are printed (UTF-8, lossily).
    pub paths: Vec<WastedPath>,
}

/// The waste of one path, summed over the layers that hid it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WastedPath {
    /// The path (cleaned: no leading `/`).
    pub path: PathBuf,
    /// Bytes hidden.
    pub bytes: u64,
    /// How many copies of it were hidden.
    pub copies: usize,
}

/// Computes the [`Waste`] of `layers` (bottom first), merging them as
/// [`merge`] does: a file counts as wasted for each copy a higher layer hides.
#[must_use]
pub fn waste(layers: &[LayerIndex]) -> Waste {
    let total_bytes: u64 = layers
        .iter()
        .flat_map(|l| l.entries.values())
        .filter(|n| n.kind == "file")
        .map(|n| n.size)
        .sum();
    let merged = merge(layers);
    let mut by_path: BTreeMap<&Path, (u64, usize)> = BTreeMap::new();
    for (path, hidden) in merged.hidden.iter().flatten() {
        if hidden.node.kind == "file" {
            let e = by_path.entry(path.as_path()).or_default();
            e.0 += hidden.node.size;
            e.1 += 1;
        }
    }
    let wasted_bytes: u64 = by_path.values().map(|(bytes, _)| bytes).sum();
    let mut paths: Vec<WastedPath> = by_path
        .into_iter()
        .map(|(path, (bytes, copies))| WastedPath {
            path: path.to_path_buf(),
            bytes,
            copies,
        })
        .collect();
    // Stable: paths that print alike stay in path order.
    paths.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.path.to_string_lossy().cmp(&b.path.to_string_lossy()))
    });
    #[expect(
        clippy::cast_precision_loss,
        reason = "a ratio for display and thresholds"
    )]
    let efficiency = if total_bytes == 0 {
        1.0
    } else {
        1.0 - wasted_bytes as f64 / total_bytes as f64
    };
    Waste {
        total_bytes,
        wasted_bytes,
        efficiency,
        paths,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn file(content: &str) -> Node {
        Node {
            size: content.len() as u64,
            digest: Some(content.to_owned()),
            ..Node::bare("file", 0o644)
        }
    }

    /// A layer of files (`content` `/` is a directory), whiteouts and opaque dirs.
    fn layer(entries: &[(&str, &str)], whiteouts: &[&str], opaque: &[&str]) -> LayerIndex {
        let node = |c: &str| {
            if c == "/" {
                Node::bare("dir", 0o755)
            } else {
                file(c)
            }
        };
        LayerIndex {
            entries: entries
                .iter()
                .map(|(p, c)| (PathBuf::from(p), node(c)))
                .collect(),
            whiteouts: whiteouts.iter().map(PathBuf::from).collect(),
            opaque: opaque.iter().map(PathBuf::from).collect(),
            ..LayerIndex::default()
        }
    }

    fn kinds(listing: &BTreeMap<PathBuf, Node>) -> Vec<(&str, &str)> {
        listing
            .iter()
            .map(|(p, n)| (p.to_str().unwrap(), n.kind))
            .collect()
    }

    #[test]
    fn a_layer_listing_shows_its_markers() {
        let l = layer(
            &[("d", "/"), ("d/y", "y"), ("w", "w")],
            &["gone", "w"],
            &["d"],
        );
        assert_eq!(
            kinds(&l.listing()),
            [
                ("d", "dir"),
                ("d/.wh..wh..opq", OPAQUE_KIND),
                ("d/y", "file"),
                ("gone", WHITEOUT_KIND),
                ("w", WHITEOUT_KIND),
            ]
        );
    }

    #[test]
    fn history_lists_every_layer_that_touched_a_path() {
        let merged = merge(&[
            layer(&[("a", "1")], &[], &[]),
            layer(&[("b", "b")], &[], &[]),
            layer(&[], &["a"], &[]),
            layer(&[("a", "2")], &[], &[]),
        ]);
        assert_eq!(
            merged.history(Path::new("a")),
            [
                (0, ChangeKind::Added),
                (2, ChangeKind::Deleted),
                (3, ChangeKind::Added)
            ]
        );
        assert_eq!(merged.history(Path::new("nope")), []);
    }

    #[test]
    fn two_trees_differ_by_path_and_node_not_by_layer() {
        let from = merge(&[layer(
            &[("same", "s"), ("changed", "1"), ("gone", "g"), ("d", "/")],
            &[],
            &[],
        )]);
        let to = merge(&[
            layer(&[("d", "/"), ("new", "n")], &[], &[]),
            layer(&[("same", "s"), ("changed", "2")], &[], &[]),
        ]);
        let diff = from.diff(&to);
        assert_eq!(
            diff.iter()
                .map(|(p, k)| (p.to_str().unwrap(), *k))
                .collect::<Vec<_>>(),
            [
                ("changed", ChangeKind::Modified),
                ("gone", ChangeKind::Deleted),
                ("new", ChangeKind::Added),
            ]
        );
        assert!(from.diff(&from).is_empty());
        assert_eq!(
            to.diff(&from).keys().collect::<BTreeSet<_>>(),
            diff.keys().collect::<BTreeSet<_>>(),
            "the other way round, the same paths"
        );
    }

    #[test]
    fn waste_counts_each_hidden_copy_worst_first() {
        let layers = [
            layer(
                &[("big", "0123456789"), ("a-b", "xx"), ("a", "/")],
                &[],
                &[],
            ),
            layer(&[("a/b", "yy"), ("big", "second")], &[], &[]),
            layer(&[("a-b", "z"), ("a/b", "z")], &["big"], &[]),
        ];
        let w = waste(&layers);
        assert_eq!(w.total_bytes, 10 + 2 + 2 + 6 + 1 + 1);
        assert_eq!(w.wasted_bytes, 10 + 6 + 2 + 2);
        assert!((w.efficiency - (1.0 - 20.0 / 22.0)).abs() < 1e-12);
        let rows: Vec<(&str, u64, usize)> = w
            .paths
            .iter()
            .map(|p| (p.path.to_str().unwrap(), p.bytes, p.copies))
            .collect();
        // a-b sorts before a/b as printed ('-' < '/'), though not as a Path.
        assert_eq!(rows, [("big", 16, 2), ("a-b", 2, 1), ("a/b", 2, 1)]);
    }

    #[test]
    fn no_waste_without_hidden_files() {
        let empty = waste(&[]);
        assert_eq!((empty.total_bytes, empty.wasted_bytes), (0, 0));
        assert!((empty.efficiency - 1.0).abs() < f64::EPSILON);
        // Directories re-listed above and a deleted directory are not bytes.
        let dirs = waste(&[
            layer(&[("d", "/"), ("e", "/")], &[], &[]),
            layer(&[("d", "/")], &["e"], &[]),
        ]);
        assert_eq!((dirs.wasted_bytes, dirs.paths.len()), (0, 0));
    }
}
