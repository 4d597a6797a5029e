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
//! Extraction hashes each file's bytes as it writes them and keeps what it
//! learned of the file from its open descriptor ([`WrittenFiles`]), so
//! recording the digest of a fresh layer reads no file and stats none it
//! wrote: the walk lists each directory (its entries' types and inode
//! numbers come with the names) and stats only what the writer did not
//! write itself (directories, links, devices, fixed-up nodes).
//!
//! Directories are listed ahead on both cores and hashed in order
//! ([`levels`]); [`walk`] reads one directory at a time, for what is too
//! deep to list ahead. [`lookup`] reads one directory's names for both.

mod levels;
mod lookup;
mod walk;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::sys;

/// What extraction knows of each regular file it wrote, by path in the
/// layer: its content's size and blake3, and its metadata as the kernel
/// reported it on the open descriptor once the file was complete.
///
/// Kept by a 128-bit hash of the path, not the path (a layer may hold
/// millions of files: this is most of what a pull holds per file); a
/// record is used only for a name listed with its inode number, so two
/// paths would have to collide in the hash and share an inode number to
/// be mistaken for each other.
///
/// The records lie in the order they were made (a tar's order, which is
/// mostly the walk's), the map holding only their places: the walk looks
/// at the record after the last one it found first, and only then in the
/// map (a table of whole records, over 100 bytes each, missed the cache on
/// nearly every lookup of a big layer's walk).
#[derive(Debug, Clone, Default)]
pub struct WrittenFiles {
    places: HashMap<[u8; 16], usize>,
    records: Vec<Record>,
}

/// A record in its place: its key, and whether it is still the record of
/// that key (a removed one stays, dead: every live record is where
/// `places` says).
#[derive(Debug, Clone)]
struct Record {
    key: [u8; 16],
    live: bool,
    file: WrittenFile,
}

/// A path's 128-bit key: what [`WrittenFiles`] (and the writer's set of
/// paths a layer touched) keep instead of the path. Paths that are equal
/// as [`Path`]s have one key: `d/`, `d//x` and `d/./x` are `d` and `d/x`
/// (a directory resolved through the kernel comes back as `d/`).
pub(crate) fn key(path: &Path) -> [u8; 16] {
    let bytes = path.as_os_str().as_bytes();
    let hash = if is_plain(bytes) {
        blake3::hash(bytes)
    } else {
        let mut plain = Vec::with_capacity(bytes.len());
        for part in path.components() {
            if !plain.is_empty() && !plain.ends_with(b"/") {
                plain.push(b'/');
            }
            plain.extend_from_slice(part.as_os_str().as_bytes());
        }
        blake3::hash(&plain)
    };
    truncated(&hash)
}

/// A key from a path's hash: its first 128 bits.
fn truncated(hash: &blake3::Hash) -> [u8; 16] {
    let mut key = [0; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// Whether `path` is spelled as its components joined by `/` (no empty or
/// `.` part past the first, no trailing `/`), so its bytes are its key's.
pub(crate) fn is_plain(path: &[u8]) -> bool {
    !(path.len() > 1 && path.ends_with(b"/")
        || path.ends_with(b"/.")
        || path.windows(2).any(|w| w == b"//")
        || path.windows(3).any(|w| w == b"/./"))
}

/// One file extraction wrote ([`WrittenFiles`]).
#[derive(Debug, Clone)]
pub(crate) struct WrittenFile {
    pub(crate) size: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) node: Node,
}

/// A node's identity and the metadata the digest takes from it: the inode
/// number (a name in a listing is this node only if its inode number is
/// this one), the stat fields and the xattrs, sorted by name.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) ino: u64,
    pub(crate) meta: Meta,
    pub(crate) xattrs: Box<[(String, Vec<u8>)]>,
}

/// The stat fields a node adds to the digest. Made by [`Meta::of`] from the
/// walk's stat and from the writer's alike, so the bytes hashed are the
/// same whichever took them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    kind: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u64,
}

impl Meta {
    pub(crate) fn of(st: &rfs::Stat) -> Self {
        Self {
            kind: kind_of(st),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
}

impl WrittenFiles {
    pub(crate) fn insert(&mut self, path: &Path, file: WrittenFile) {
        self.insert_key(key(path), file);
    }

    /// [`Self::insert`] by the path's [`key`], made where the file was
    /// written (the pool's thread).
    pub(crate) fn insert_key(&mut self, key: [u8; 16], file: WrittenFile) {
        match self.places.entry(key) {
            std::collections::hash_map::Entry::Occupied(place) => {
                self.records[*place.get()].file = file;
            }
            std::collections::hash_map::Entry::Vacant(place) => {
                place.insert(self.records.len());
                self.records.push(Record {
                    key,
                    live: true,
                    file,
                });
            }
        }
    }

    /// Forgets the record of `path` (its place in the records stays, dead).
    pub(crate) fn remove(&mut self, path: &Path) {
        if !self.places.is_empty()
            && let Some(at) = self.places.remove(&key(path))
        {
            self.records[at].live = false;
        }
    }

    pub(crate) fn get(&self, path: &Path) -> Option<&WrittenFile> {
        self.by_key(&key(path), &mut 0)
    }

    /// The record of `key`: the one at `next` if it is that record, else
    /// the map's; `next` becomes the place after it.
    fn by_key(&self, key: &[u8; 16], next: &mut usize) -> Option<&WrittenFile> {
        let at = match self.records.get(*next) {
            Some(record) if record.live && record.key == *key => *next,
            _ => *self.places.get(key)?,
        };
        *next = at + 1;
        Some(&self.records[at].file)
    }

    /// The record of `name` in directory `dir` (`dir.join(name)`, without
    /// making that path; `dir` is plain, as the walk builds it), looked for
    /// at place `next` first ([`Self::by_key`]).
    fn get_child(&self, dir: &Path, name: &OsStr, next: &mut usize) -> Option<&WrittenFile> {
        let mut hasher = blake3::Hasher::new();
        if !dir.as_os_str().is_empty() {
            hasher.update(dir.as_os_str().as_bytes());
            hasher.update(b"/");
        }
        hasher.update(name.as_bytes());
        self.by_key(&truncated(&hasher.finalize()), next)
    }

    /// How many files are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether none are.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

/// Computes the digest (`blake3:<hex>`) of the tree at `root`. A regular
/// file in `known` whose name is listed with its inode number is neither
/// stat'ed nor read again; any other node is stat'ed and, a file, read and
/// hashed (pass an empty set to check every byte, as fsck does).
///
/// # Errors
/// When a node cannot be listed, stat'ed or read; the error names its path.
pub fn tree_digest(root: &Path, known: &WrittenFiles) -> io::Result<String> {
    tree_digest_with(root, known, &Limits::default())
}

/// How the walk may spread its work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Whether directories are listed on helper threads
    /// ([`levels`]); else one thread walks the whole tree ([`walk`]).
    pub(crate) parallel: bool,
    /// Whether a directory's names may be looked up on the writer pool.
    pub(crate) lookups_on_pool: bool,
    /// Directories deeper than this are walked by one thread each (with
    /// two descriptors open whatever the depth below).
    pub(crate) max_depth: usize,
    /// A directory of more names than this is read when its turn comes
    /// (its part is not held in memory whole).
    pub(crate) max_names: usize,
    /// Bytes of parts listed ahead of the hashing, at most.
    pub(crate) max_ahead_bytes: usize,
    /// Descriptors the directories listed ahead keep open, at most.
    pub(crate) max_fds_ahead: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            parallel: true,
            lookups_on_pool: true,
            max_depth: 32,
            max_names: 4096,
            max_ahead_bytes: 32 << 20,
            max_fds_ahead: 32,
        }
    }
}

/// [`tree_digest`] within `limits`.
pub(crate) fn tree_digest_with(
    root: &Path,
    known: &WrittenFiles,
    limits: &Limits,
) -> io::Result<String> {
    let fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| named(root, e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| named(root, e.into()))?;
    let mut out = Out::default();
    put_part(
        &mut out.buf,
        Path::new(""),
        &Meta::of(&st),
        &sys::xattrs(&fd).map_err(|e| named(root, e))?,
        &[],
    );
    if limits.parallel {
        levels::walk(fd, known, limits, &mut out)?;
    } else {
        walk::walk(fd, PathBuf::new(), known, limits, &mut out)?;
    }
    Ok(format!("blake3:{}", out.finish().to_hex()))
}

/// Where the walk's bytes go: gathered, then hashed 64 KiB at a time (the
/// hasher takes many 1 KiB chunks at once with SIMD, one at a time when
/// fed part by part).
#[derive(Default)]
pub(crate) struct Out {
    hasher: blake3::Hasher,
    pub(crate) buf: Vec<u8>,
}

const OUT_BATCH: usize = 64 << 10;

impl Out {
    /// Hashes what was gathered once there is enough of it.
    pub(crate) fn flush_if_full(&mut self) {
        if self.buf.len() >= OUT_BATCH {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }

    /// Adds bytes made elsewhere (a directory listed ahead).
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        if bytes.len() >= OUT_BATCH {
            self.hasher.update(&self.buf);
            self.buf.clear();
            self.hasher.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
            self.flush_if_full();
        }
    }

    fn finish(mut self) -> blake3::Hash {
        self.hasher.update(&self.buf);
        self.hasher.finalize()
    }
}

/// An error naming the node, its path shortened to stay readable (a layer
/// may hold paths of many kilobytes).
pub(crate) fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", sys::short_path(path)))
}

fn kind_of(st: &rfs::Stat) -> u8 {
    match sys::file_type(st) {
        FileType::Directory => b'd',
        FileType::RegularFile => b'f',
        FileType::Symlink => b'l',
        FileType::CharacterDevice => b'c',
        FileType::BlockDevice => b'b',
        FileType::Fifo => b'p',
        _ => b's',
    }
}

/// A node's part of the digest: its path, kind, mode, owner, mtime,
/// xattrs, then `tail` (what the kind adds).
fn put_part(
    out: &mut Vec<u8>,
    rel: &Path,
    meta: &Meta,
    xattrs: &[(String, Vec<u8>)],
    tail: &[&[u8]],
) {
    out.extend_from_slice(rel.as_os_str().as_bytes());
    out.extend_from_slice(&[0, meta.kind]);
    out.extend_from_slice(&meta.mode.to_le_bytes());
    out.extend_from_slice(&meta.uid.to_le_bytes());
    out.extend_from_slice(&meta.gid.to_le_bytes());
    out.extend_from_slice(&meta.mtime.to_le_bytes());
    out.extend_from_slice(&meta.mtime_nsec.to_le_bytes());
    for (name, value) in xattrs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.push(0xff);
    for bytes in tail {
        out.extend_from_slice(bytes);
    }
}

/// A directory's part before its names: how many there are.
pub(crate) fn put_count(out: &mut Vec<u8>, names: usize) {
    out.extend_from_slice(&(names as u64).to_le_bytes());
}

/// Adds the part of `name` (at `path`) in directory `dir`, from what was
/// looked up of it; a directory is opened (its xattrs are read from the
/// descriptor it is entered by) and returned, its names not yet added.
fn put_node(
    out: &mut Vec<u8>,
    dir: &OwnedFd,
    path: &Path,
    name: &OsStr,
    looked: io::Result<lookup::Looked<'_>>,
    known: &WrittenFiles,
) -> io::Result<Option<OwnedFd>> {
    let (st, xattrs) = match looked.map_err(|e| named(path, e))? {
        lookup::Looked::Written(file) => {
            let tail: [&[u8]; 2] = [&file.size.to_le_bytes(), &file.hash];
            put_part(out, path, &file.node.meta, &file.node.xattrs, &tail);
            return Ok(None);
        }
        lookup::Looked::Stat { st, xattrs } => (st, xattrs.unwrap_or_default()),
    };
    let meta = Meta::of(&st);
    match kind_of(&st) {
        b'd' => {
            let child = sys::open_nofollow(dir, name, true).map_err(|e| named(path, e))?;
            let xattrs = sys::xattrs(&child).map_err(|e| named(path, e))?;
            put_part(out, path, &meta, &xattrs, &[]);
            return Ok(Some(child));
        }
        b'f' => {
            let size = u64::try_from(st.st_size).unwrap_or(0);
            // Listed without its type (a file system that does not say),
            // a file the writer wrote is still not read again.
            let known = known
                .get(path)
                .filter(|file| file.node.ino == st.st_ino && file.size == size)
                .map(|file| file.hash);
            let hash = match known {
                Some(hash) => hash,
                None if size == 0 => *blake3::hash(b"").as_bytes(),
                None => {
                    let file = sys::open_nofollow(dir, name, false).map_err(|e| named(path, e))?;
                    hash_file(&mut File::from(file)).map_err(|e| named(path, e))?
                }
            };
            put_part(out, path, &meta, &xattrs, &[&size.to_le_bytes(), &hash]);
        }
        b'l' => {
            let target =
                rfs::readlinkat(dir, name, Vec::new()).map_err(|e| named(path, e.into()))?;
            put_part(out, path, &meta, &xattrs, &[target.as_bytes(), &[0]]);
        }
        b'c' | b'b' => put_part(out, path, &meta, &xattrs, &[&st.st_rdev.to_le_bytes()]),
        _ => put_part(out, path, &meta, &xattrs, &[]),
    }
    Ok(None)
}

/// The blake3 of a file's content, read through one buffer per thread.
fn hash_file(file: &mut File) -> io::Result<[u8; 32]> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.is_empty() {
            buffer.resize(256 << 10, 0);
        }
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path and its other spellings (as `Path`s they are equal) share a
    /// key: the writer records a directory resolved through the kernel as
    /// `d/` and looks it up as `d`.
    #[test]
    fn equal_paths_have_one_key() {
        for (a, b) in [
            ("d/", "d"),
            ("d//x", "d/x"),
            ("d/./x", "d/x"),
            ("d/x/.", "d/x"),
            ("d/x//", "d/x"),
            ("./", "."),
        ] {
            assert_eq!(Path::new(a), Path::new(b));
            assert_eq!(key(Path::new(a)), key(Path::new(b)), "{a} and {b}");
        }
        for (a, b) in [("d", "e"), ("d/x", "dx"), ("./d", "d"), ("/d", "d")] {
            assert_ne!(key(Path::new(a)), key(Path::new(b)), "{a} and {b}");
        }
        // A plain path's key is its bytes' hash: what the walk looks a
        // listed name up by.
        assert_eq!(key(Path::new("a/b")), blake3::hash(b"a/b").as_bytes()[..16]);
    }
}
