//! Reading a layer without writing it: what each layer holds, and the merged
//! tree the layers make, in memory. This is what `inspect`, `ls`, `which`,
//! `diff` and `waste` are computed from; no root and no disk needed.
//!
//! The whiteout rules are those of apply mode (see `docs/whiteouts.md`), over
//! a map instead of a directory: a layer's whiteouts and opaque markers remove
//! only what lower layers put there, then the layer's entries are laid on top.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::entry::{EntrySource, Kind, TarSource};
use crate::names::{Name, clean};
use crate::{Compression, Result};

/// One path a layer writes, with what it writes there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Bytes of content (files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// sha256 of the content (files), `sha256:<hex>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Link target (symlinks; the linked path for hard links); device numbers as `major:minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Node {
    /// A node of `kind` and `mode`, owned by root, empty, at the epoch: an
    /// implied directory, or a marker (whiteout, opaque) in a listing.
    #[must_use]
    pub fn bare(kind: &'static str, mode: u32) -> Self {
        Self {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            digest: None,
            target: None,
        }
    }

    fn implied_dir() -> Self {
        Self::bare("dir", 0o755)
    }

    /// Whether two nodes differ in content or metadata (mtime aside:
    /// rebuilding a file with the same bytes is not a change).
    #[must_use]
    pub fn differs(&self, other: &Self) -> bool {
        (
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            &self.digest,
            &self.target,
        ) != (
            other.kind,
            other.mode,
            other.uid,
            other.gid,
            other.size,
            &other.digest,
            &other.target,
        )
    }
}

/// What one layer holds, in the order of its tar.
#[derive(Debug, Clone, Default)]
pub struct LayerIndex {
    /// Paths written, with their nodes (the last entry wins for a path).
    pub entries: BTreeMap<PathBuf, Node>,
    /// Paths whited out (`.wh.NAME`).
    pub whiteouts: BTreeSet<PathBuf>,
    /// Directories made opaque (`.wh..wh..opq`).
    pub opaque: BTreeSet<PathBuf>,
    /// Tar entries read (whiteouts and markers included).
    pub tar_entries: u64,
    /// Uncompressed size (set when read from a stream).
    pub tar_bytes: u64,
    /// sha256 of the uncompressed tar (set when read from a stream).
    pub diff_id: Option<String>,
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink(_) => "symlink",
        Kind::Hardlink(_) => "hardlink",
        Kind::Char(..) => "char",
        Kind::Block(..) => "block",
        Kind::Fifo => "fifo",
        Kind::Whiteout => "whiteout",
        Kind::Opaque => "opaque",
    }
}

/// Indexes every entry of `source`; file contents are hashed, not kept.
///
/// # Errors
/// The source's read errors and refused names (as extraction refuses them).
pub fn index_source(source: &mut dyn EntrySource) -> Result<LayerIndex> {
    let mut index = LayerIndex::default();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    source.visit(&mut |entry, data| {
        index.tar_entries += 1;
        let (path, name) = entry.meaning()?;
        match name {
            Name::AufsMeta => {}
            Name::Opaque(dir) => {
                index.opaque.insert(dir);
            }
            Name::Whiteout(target) => {
                index.whiteouts.insert(target);
            }
            Name::Plain => {
                let (mut size, mut digest, mut target) = (0, None, None);
                match &entry.kind {
                    Kind::File => {
                        let mut hasher = Sha256::new();
                        let mut expanded;
                        let data: &mut dyn Read = match &entry.sparse {
                            Some(sparse) => {
                                expanded = crate::sparse::Expand::new(data, sparse);
                                &mut expanded
                            }
                            None => data,
                        };
                        size = std::io::copy(data, &mut HashWriter(&mut hasher))
                            .map_err(crate::entry::stream_error)?;
                        digest = Some(format!("sha256:{}", hex::encode(hasher.finalize())));
                    }
                    Kind::Symlink(t) => target = Some(t.to_string_lossy().into_owned()),
                    Kind::Hardlink(t) => {
                        let t = clean(t)?;
                        target = Some(t.to_string_lossy().into_owned());
                        links.push((path.clone(), t));
                    }
                    Kind::Char(ma, mi) | Kind::Block(ma, mi) => target = Some(format!("{ma}:{mi}")),
                    Kind::Dir | Kind::Fifo | Kind::Whiteout | Kind::Opaque => {}
                }
                if path.as_os_str().is_empty() {
                    return Ok(());
                }
                let node = Node {
                    kind: kind_name(&entry.kind),
                    mode: entry.mode,
                    uid: entry.uid,
                    gid: entry.gid,
                    size,
                    mtime: entry.mtime,
                    digest,
                    target,
                };
                index.entries.insert(path, node);
            }
        }
        Ok(())
    })?;
    // A hard link is its target's file: size and digest come from it.
    for (link, target) in links {
        if let Some(t) = index.entries.get(&target).cloned()
            && let Some(node) = index.entries.get_mut(&link)
        {
            node.size = t.size;
            node.digest = t.digest;
        }
    }
    Ok(index)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Indexes a layer stream (gzip, zstd or tar), checking its diff_id if given.
///
/// # Errors
/// As [`crate::extract`], nothing being written.
pub fn index_stream<R: Read + Send>(
    reader: R,
    hint: Option<Compression>,
    expected_diff_id: Option<&str>,
    max_bytes: u64,
) -> Result<LayerIndex> {
    let index = crate::compression::pipeline(reader, hint, max_bytes, |stream| {
        let mut index = index_source(&mut TarSource::new(&mut *stream))?;
        index.diff_id = Some(stream.finish()?);
        index.tar_bytes = stream.decompressed_bytes();
        Ok(index)
    })?;
    if let (Some(expected), Some(actual)) = (expected_diff_id, &index.diff_id)
        && actual != expected
    {
        return Err(crate::Error::DiffIdMismatch {
            expected: expected.to_owned(),
            actual: actual.clone(),
        });
    }
    Ok(index)
}

/// A visible path of the merged tree and the layer that provides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visible {
    /// The node.
    #[serde(flatten)]
    pub node: Node,
    /// The index of the layer that wrote it (bottom is 0).
    pub layer: usize,
}

/// What one layer did to one path, relative to the layers below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    /// New path.
    Added,
    /// Content or metadata changed.
    Modified,
    /// Removed (whiteout or opaque directory).
    Deleted,
}

/// The merged tree after each layer, and what each layer changed.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The visible tree once every layer is applied.
    pub tree: BTreeMap<PathBuf, Visible>,
    /// Per layer: path → change, relative to the layers below.
    pub changes: Vec<BTreeMap<PathBuf, ChangeKind>>,
    /// Per layer: the lower nodes it hid (deleted or replaced), with the
    /// layer that had written them: what `waste` counts.
    pub hidden: Vec<Vec<(PathBuf, Visible)>>,
}

fn descendants<'a>(
    tree: &'a BTreeMap<PathBuf, Visible>,
    dir: &'a Path,
) -> impl Iterator<Item = &'a PathBuf> + 'a {
    tree.range(dir.to_path_buf()..)
        .skip(usize::from(tree.contains_key(dir)))
        .take_while(move |(p, _)| p.starts_with(dir) && *p != dir)
        .map(|(p, _)| p)
}

/// Applies the layers in order, as the mounted overlay shows them.
#[must_use]
pub fn merge(layers: &[LayerIndex]) -> Merged {
    let mut merged = Merged::default();
    for (i, layer) in layers.iter().enumerate() {
        let mut changes = BTreeMap::new();
        let mut hidden = Vec::new();
        // Everything this layer writes, and their ancestors: never removed by its own whiteouts.
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        for path in layer.entries.keys() {
            let mut p = Some(path.as_path());
            while let Some(q) = p.filter(|q| !q.as_os_str().is_empty()) {
                if !touched.insert(q.to_path_buf()) {
                    break;
                }
                p = q.parent();
            }
        }
        let remove = |merged: &mut Merged,
                      path: &Path,
                      changes: &mut BTreeMap<PathBuf, ChangeKind>,
                      hidden: &mut Vec<(PathBuf, Visible)>| {
            if let Some(v) = merged.tree.remove(path) {
                hidden.push((path.to_path_buf(), v));
                changes.insert(path.to_path_buf(), ChangeKind::Deleted);
            }
        };
        let mut doomed: Vec<PathBuf> = Vec::new();
        for w in &layer.whiteouts {
            if touched.contains(w) {
                // Only what is below goes, as for an opaque directory.
                doomed.extend(
                    descendants(&merged.tree, w)
                        .filter(|p| !touched.contains(*p))
                        .cloned(),
                );
            } else {
                doomed.push(w.clone());
                doomed.extend(descendants(&merged.tree, w).cloned());
            }
        }
        for dir in &layer.opaque {
            doomed.extend(
                descendants(&merged.tree, dir)
                    .filter(|p| !touched.contains(*p))
                    .cloned(),
            );
        }
        for path in doomed {
            remove(&mut merged, &path, &mut changes, &mut hidden);
        }
        for (path, node) in &layer.entries {
            // Implied parents.
            for ancestor in path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
            {
                if !merged.tree.contains_key(ancestor) {
                    merged.tree.insert(
                        ancestor.to_path_buf(),
                        Visible {
                            node: Node::implied_dir(),
                            layer: i,
                        },
                    );
                    changes.insert(ancestor.to_path_buf(), ChangeKind::Added);
                }
            }
            let new = Visible {
                node: node.clone(),
                layer: i,
            };
            match merged.tree.insert(path.clone(), new) {
                None => {
                    let previous = changes.get(path).copied();
                    changes.insert(
                        path.clone(),
                        if previous == Some(ChangeKind::Deleted) {
                            ChangeKind::Modified
                        } else {
                            ChangeKind::Added
                        },
                    );
                }
                Some(old) => {
                    if node.kind != "dir" || old.node.kind != "dir" {
                        // A non-directory replaces whatever was below, with its content.
                        if old.node.kind == "dir" {
                            let below: Vec<PathBuf> = descendants(&merged.tree, path)
                                .filter(|p| !touched.contains(*p))
                                .cloned()
                                .collect();
                            for p in below {
                                remove(&mut merged, &p, &mut changes, &mut hidden);
                            }
                        }
                    }
                    if old.node.differs(node) {
                        changes.insert(path.clone(), ChangeKind::Modified);
                    }
                    if old.layer != i && (node.kind != "dir" || old.node.kind != "dir") {
                        hidden.push((path.clone(), old));
                    }
                }
            }
        }
        merged.changes.push(changes);
        merged.hidden.push(hidden);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &str)], whiteouts: &[&str], opaque: &[&str]) -> LayerIndex {
        let node = |content: &str| Node {
            kind: if content == "/" { "dir" } else { "file" },
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: if content == "/" {
                0
            } else {
                content.len() as u64
            },
            mtime: 0,
            digest: (content != "/").then(|| content.to_owned()),
            target: None,
        };
        LayerIndex {
            entries: entries
                .iter()
                .map(|(p, c)| (clean(p.as_bytes()).unwrap(), node(c)))
                .collect(),
            whiteouts: whiteouts.iter().map(PathBuf::from).collect(),
            opaque: opaque.iter().map(PathBuf::from).collect(),
            ..LayerIndex::default()
        }
    }

    fn paths(m: &Merged) -> Vec<String> {
        m.tree
            .keys()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_changes() {
        let layers = [
            layer(
                &[
                    ("a/", "/"),
                    ("a/x", "1"),
                    ("a/y", "2"),
                    ("b", "b"),
                    ("c/", "/"),
                    ("c/old", "o"),
                ],
                &[],
                &[],
            ),
            layer(&[("a/x", "changed"), ("c/new", "n")], &["b"], &["c"]),
            layer(&[("b", "back")], &["a"], &[]),
        ];
        let m = merge(&layers);
        assert_eq!(paths(&m), ["b", "c", "c/new"]);
        assert_eq!(m.tree[Path::new("b")].layer, 2);
        assert_eq!(m.changes[1][Path::new("a/x")], ChangeKind::Modified);
        assert_eq!(m.changes[1][Path::new("b")], ChangeKind::Deleted);
        assert_eq!(m.changes[1][Path::new("c/old")], ChangeKind::Deleted);
        assert_eq!(m.changes[1][Path::new("c/new")], ChangeKind::Added);
        assert_eq!(m.changes[2][Path::new("a")], ChangeKind::Deleted);
        assert_eq!(m.changes[2][Path::new("a/y")], ChangeKind::Deleted);
        assert_eq!(m.changes[2][Path::new("b")], ChangeKind::Added);
        // Layer 1 hid the old a/x (1 byte), b (1) and c/old (1); layer 2 hid a/x (7), a/y (1) and a.
        let hidden_bytes = |i: usize| m.hidden[i].iter().map(|(_, v)| v.node.size).sum::<u64>();
        assert_eq!((hidden_bytes(1), hidden_bytes(2)), (3, 8));
    }

    #[test]
    fn a_whiteout_and_its_path_in_one_layer_keep_the_path() {
        let layers = [
            layer(&[("d/", "/"), ("d/lower", "l")], &[], &[]),
            layer(&[("d/", "/"), ("d/mine", "m")], &["d"], &[]),
        ];
        assert_eq!(paths(&merge(&layers)), ["d", "d/mine"]);
    }
}
