//! A manifest of a directory tree, for comparing strata's output with a
//! peer's: path → type, mode, owner, size, content hash, link target,
//! device numbers and xattrs. Mtimes are left out (tools differ on them).
//! The full form adds the root directory itself (`.`) and, optionally,
//! hard-link groups (`link=FIRST` on every later name of one inode).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

fn xattrs(path: &Path) -> String {
    // The l* calls: never open the file (a fifo would block, a device
    // would be opened).
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return String::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        // strata's record of an image owner where the user cannot own the
        // file (rootless without a subuid range): bookkeeping, which the
        // rootless tests check on their own, not a tree difference.
        if name.starts_with("security.selinux") || name == "user.containers.override_stat" {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap_or(0);
        out.push(format!("{name}={}", hex::encode(&value[..len])));
    }
    out.sort();
    out.join(",")
}

/// The manifest of the tree under `root` (the root itself excluded).
pub fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, None);
    out
}

/// The manifest with the root itself as `.` and, with `links`, hard-link
/// groups.
pub fn full_manifest(root: &Path, links: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(".".to_owned(), describe(root, None));
    let mut groups = links.then(BTreeMap::new);
    walk(root, root, &mut out, groups.as_mut());
    if let Some(groups) = groups {
        // The first name (in path order) of each inode is the group's name.
        let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for (path, inode) in &groups {
            match first.get(inode) {
                Some(name) => {
                    let v = out.get_mut(path).unwrap();
                    v.push_str(&format!(" link={name}"));
                }
                None => {
                    first.insert(*inode, path.clone());
                }
            }
        }
    }
    out
}

/// [`full_manifest`] with hard-link groups.
pub fn manifest_with_links(root: &Path) -> BTreeMap<String, String> {
    full_manifest(root, true)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    mut links: Option<&mut BTreeMap<String, (u64, u64)>>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = std::fs::symlink_metadata(&path).unwrap();
        if let Some(links) = links.as_deref_mut()
            && !md.is_dir()
            && md.nlink() > 1
        {
            links.insert(rel.clone(), (md.dev(), md.ino()));
        }
        out.insert(rel, describe(&path, Some(&md)));
        if md.is_dir() {
            walk(root, &path, out, links.as_deref_mut());
        }
    }
}

fn describe(path: &Path, md: Option<&std::fs::Metadata>) -> String {
    {
        let owned;
        let md = match md {
            Some(md) => md,
            None => {
                owned = std::fs::symlink_metadata(path).unwrap();
                &owned
            }
        };
        let ft = md.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("symlink {}", std::fs::read_link(path).unwrap().display())
        } else if ft.is_file() {
            let bytes = std::fs::read(path).unwrap();
            format!(
                "file {} {}",
                bytes.len(),
                hex::encode(&Sha256::digest(&bytes)[..8])
            )
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { "char" } else { "block" };
            format!(
                "{kind} {}:{}",
                rustix::fs::major(md.rdev()),
                rustix::fs::minor(md.rdev())
            )
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            "socket".to_owned()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        let xattrs = if ft.is_symlink() {
            String::new()
        } else {
            xattrs(path)
        };
        format!("{what} {mode:o} {}:{} [{xattrs}]", md.uid(), md.gid())
    }
}

/// Asserts two manifests are equal, listing the differing paths.
pub fn assert_same(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>, what: &str) {
    let mut diffs = Vec::new();
    for (path, value) in ours {
        match theirs.get(path) {
            Some(v) if v == value => {}
            Some(v) => diffs.push(format!("  {path}: strata {value} | peer {v}")),
            None => diffs.push(format!("  {path}: only in strata ({value})")),
        }
    }
    for (path, value) in theirs {
        if !ours.contains_key(path) {
            diffs.push(format!("  {path}: only in peer ({value})"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
