//! A digest of a directory tree as it lies on disk: what a store records for
//! each layer when it is made, and what `strata fsck` checks it against.
//!
//! Every node adds, in byte order of names, depth first: its relative path,
//! its type, permission bits, owner, mtime and xattrs; a regular file its
//! size and the blake3 of its content, a symlink its target, a device its
//! number. Left out on purpose: atime, ctime and inode numbers (reading,
//! renaming or mounting a layer changes them, not its content) and hard-link
//! identity (overlay shows each name as the same file either way).
//!
//! Extraction hashes each file's bytes as it writes them ([`ContentHashes`]),
//! so recording the digest costs one metadata walk, not a second read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// The blake3 of each regular file extraction wrote, by path in the layer,
/// with its size. Empty files are left out (their hash is known).
#[derive(Debug, Clone, Default)]
pub struct ContentHashes(HashMap<PathBuf, (u64, [u8; 32])>);

impl ContentHashes {
    pub(crate) fn insert(&mut self, path: &Path, size: u64, hash: blake3::Hash) {
        if size > 0 {
            self.0.insert(path.to_owned(), (size, *hash.as_bytes()));
        }
    }

    pub(crate) fn remove(&mut self, path: &Path) {
        self.0.remove(path);
    }

    pub(crate) fn get(&self, path: &Path) -> Option<(u64, [u8; 32])> {
        self.0.get(path).copied()
    }

    /// How many files are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none are.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Computes the digest (`blake3:<hex>`) of the tree at `root`. A regular
/// file whose path and size are in `known` is not read again; any other is
/// read and hashed (pass an empty set to check every byte, as fsck does).
///
/// # Errors
/// When a node cannot be listed, stat'ed or read; the error names its path.
pub fn tree_digest(root: &Path, known: &ContentHashes) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 << 10];
    node(root, Path::new(""), known, &mut hasher, &mut buffer)?;
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn node(
    root: &Path,
    rel: &Path,
    known: &ContentHashes,
    hasher: &mut blake3::Hasher,
    buffer: &mut [u8],
) -> io::Result<()> {
    let path = root.join(rel);
    let md = std::fs::symlink_metadata(&path).map_err(|e| named(&path, e))?;
    let ft = md.file_type();
    let kind = match () {
        () if ft.is_dir() => b'd',
        () if ft.is_file() => b'f',
        () if ft.is_symlink() => b'l',
        () if ft.is_char_device() => b'c',
        () if ft.is_block_device() => b'b',
        () if ft.is_fifo() => b'p',
        () => b's',
    };
    hasher.update(rel.as_os_str().as_bytes());
    hasher.update(&[0, kind]);
    hasher.update(&(md.mode() & 0o7777).to_le_bytes());
    hasher.update(&md.uid().to_le_bytes());
    hasher.update(&md.gid().to_le_bytes());
    hasher.update(&md.mtime().to_le_bytes());
    hasher.update(&md.mtime_nsec().to_le_bytes());
    for (name, value) in sys::xattrs_nofollow(&path).map_err(|e| named(&path, e))? {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(&value);
    }
    hasher.update(&[0xff]);
    match kind {
        b'f' => {
            let hash = match known.get(rel) {
                Some((size, hash)) if size == md.len() => hash,
                _ if md.len() == 0 => *blake3::hash(b"").as_bytes(),
                _ => content_hash(&path, buffer)?,
            };
            hasher.update(&md.len().to_le_bytes());
            hasher.update(&hash);
        }
        b'l' => {
            let target = std::fs::read_link(&path).map_err(|e| named(&path, e))?;
            hasher.update(target.as_os_str().as_bytes());
            hasher.update(&[0]);
        }
        b'c' | b'b' => {
            hasher.update(&md.rdev().to_le_bytes());
        }
        b'd' => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(|e| named(&path, e))? {
                names.push(entry.map_err(|e| named(&path, e))?.file_name());
            }
            names.sort();
            hasher.update(&(names.len() as u64).to_le_bytes());
            for name in names {
                node(root, &rel.join(name), known, hasher, buffer)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The blake3 of a file's content, read without following a symlink.
fn content_hash(path: &Path, buffer: &mut [u8]) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| named(path, e))?;
    hash_reader(&mut file, buffer).map_err(|e| named(path, e))
}

fn hash_reader(file: &mut File, buffer: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    loop {
        match file.read(buffer) {
            Ok(0) => return Ok(*hasher.finalize().as_bytes()),
            Ok(n) => {
                hasher.update(&buffer[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
