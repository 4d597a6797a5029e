//! What `inspect`, `ls`, `which`, `diff` and `waste` print alike: paths as
//! typed and as shown, short digests, history lines, and the node object of
//! `ls --json` and `which --json`.
//!
//! The `--json` objects of these commands are structs whose fields are in
//! name order: that is the order their keys have always been printed in
//! (serde_json's map sorts them) and the order docs/inspect.md documents.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use strata_layer::Node;

/// A path as the user typed it (`/etc/`) → as the merged tree keys it (`etc`;
/// `/` → the empty path).
#[must_use]
pub fn image_path(typed: &str) -> PathBuf {
    Path::new(typed)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// A tree path as shown: `etc` → `/etc`.
#[must_use]
pub fn slash(path: &Path) -> String {
    format!("/{}", path.display())
}

/// `sha256:` and the first 12 hex digits.
#[must_use]
pub fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// A history `created_by` line cut to a table column (60 characters).
#[must_use]
pub fn brief(created_by: &str) -> String {
    created_by.chars().take(60).collect()
}

/// The error for a `--layer N` past the image's top layer.
#[must_use]
pub fn no_such_layer(image: &str, layers: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "{image} has {layers} layers (0 to {})",
        layers.saturating_sub(1)
    )
}

/// A node in `--json` output: one entry of `ls` (with `path` and `layer`),
/// or the `node` of `which` (without them).
#[derive(Debug, Serialize)]
pub struct NodeJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    gid: u64,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    mode: u32,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    uid: u64,
}

impl<'a> NodeJson<'a> {
    /// The node alone (`which`).
    #[must_use]
    pub fn node(node: &'a Node) -> Self {
        Self {
            digest: node.digest.as_deref(),
            gid: node.gid,
            kind: node.kind,
            layer: None,
            mode: node.mode,
            mtime: node.mtime,
            path: None,
            size: node.size,
            target: node.target.as_deref(),
            uid: node.uid,
        }
    }

    /// The node at `path`, from `layer` (`ls`).
    #[must_use]
    pub fn entry(path: &Path, node: &'a Node, layer: usize) -> Self {
        Self {
            layer: Some(layer),
            path: Some(slash(path)),
            ..Self::node(node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths_become_tree_paths() {
        assert_eq!(image_path("/etc/"), Path::new("etc"));
        assert_eq!(image_path("usr//bin/./sh"), Path::new("usr/bin/sh"));
        assert_eq!(image_path("/"), Path::new(""));
        assert_eq!(slash(&image_path("/")), "/");
    }

    #[test]
    fn node_json_keys_are_in_name_order() {
        let node = Node {
            digest: Some("sha256:d".to_owned()),
            ..Node::bare("file", 0o644)
        };
        let text = |v: &NodeJson<'_>| serde_json::to_string(v).unwrap();
        assert_eq!(
            text(&NodeJson::entry(Path::new("etc/a"), &node, 1)),
            r#"{"digest":"sha256:d","gid":0,"kind":"file","layer":1,"mode":420,"mtime":0,"path":"/etc/a","size":0,"uid":0}"#
        );
        assert_eq!(
            text(&NodeJson::node(&Node::bare("dir", 0o755))),
            r#"{"gid":0,"kind":"dir","mode":493,"mtime":0,"size":0,"uid":0}"#
        );
    }
}
