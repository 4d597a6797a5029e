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

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

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
#[derive(Debug, Clone, Default)]
pub struct WrittenFiles(HashMap<[u8; 16], WrittenFile>);

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
fn is_plain(path: &[u8]) -> bool {
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
        self.0.insert(key(path), file);
    }

    /// [`Self::insert`] by the path's [`key`], made where the file was
    /// written (the pool's thread).
    pub(crate) fn insert_key(&mut self, key: [u8; 16], file: WrittenFile) {
        self.0.insert(key, file);
    }

    pub(crate) fn remove(&mut self, path: &Path) {
        if !self.0.is_empty() {
            self.0.remove(&key(path));
        }
    }

    pub(crate) fn get(&self, path: &Path) -> Option<&WrittenFile> {
        self.0.get(&key(path))
    }

    /// The record of `name` in directory `dir` (`dir.join(name)`, without
    /// making that path; `dir` is plain, as the walk builds it).
    fn get_child(&self, dir: &Path, name: &OsStr) -> Option<&WrittenFile> {
        let mut hasher = blake3::Hasher::new();
        if !dir.as_os_str().is_empty() {
            hasher.update(dir.as_os_str().as_bytes());
            hasher.update(b"/");
        }
        hasher.update(name.as_bytes());
        self.0.get(&truncated(&hasher.finalize()))
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
/// file in `known` whose name is listed with its inode number is neither
/// stat'ed nor read again; any other node is stat'ed and, a file, read and
/// hashed (pass an empty set to check every byte, as fsck does).
///
/// # Errors
/// When a node cannot be listed, stat'ed or read; the error names its path.
pub fn tree_digest(root: &Path, known: &WrittenFiles) -> io::Result<String> {
    let mut walk = Walk {
        known,
        hasher: blake3::Hasher::new(),
        buffer: vec![0u8; 256 << 10],
        part: Vec::new(),
    };
    let fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| named(root, e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| named(root, e.into()))?;
    walk.entry(
        Path::new(""),
        &Meta::of(&st),
        &sys::xattrs(&fd).map_err(|e| named(root, e))?,
        &[],
    );
    walk.dir(fd)?;
    Ok(format!("blake3:{}", walk.hasher.finalize().to_hex()))
}

/// An error naming the node, its path shortened to stay readable (a layer
/// may hold paths of many kilobytes).
fn named(path: &Path, e: io::Error) -> io::Error {
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

/// One directory being read: its path, its listing, how far it is read,
/// what was looked up ahead for the next names, and its parent's identity
/// (to check `..` against).
struct Level<'k> {
    rel: PathBuf,
    names: Vec<sys::Listed>,
    next: usize,
    ahead: VecDeque<io::Result<Looked<'k>>>,
    parent: Option<(u64, u64)>,
}

/// A name's metadata, looked up ahead.
enum Looked<'k> {
    /// Its stat and, for anything but a directory (whose xattrs are read
    /// from the descriptor it is entered by), its xattrs.
    Stat {
        st: rfs::Stat,
        xattrs: Option<Vec<(String, Vec<u8>)>>,
    },
    /// A file the writer wrote and still listed as that node.
    Written(&'k WrittenFile),
}

/// Names looked up ahead at once; a batch this big or bigger is looked up
/// on the writer pool (both cores: a fresh layer of many small files costs
/// two calls per file here, and nothing else).
const AHEAD: usize = 1024;
const AHEAD_ON_POOL: usize = 32;

#[cfg(test)]
thread_local! {
    /// Tests: look every name up on the walking thread (the reference the
    /// parallel lookup is checked against).
    pub(crate) static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_pool(batch: usize) -> bool {
    #[cfg(test)]
    if SEQUENTIAL.with(std::cell::Cell::get) {
        return false;
    }
    batch >= AHEAD_ON_POOL
}

fn look<'k>(dir: &OwnedFd, name: &OsStr) -> io::Result<Looked<'k>> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let xattrs = match sys::file_type(&st) {
        FileType::Directory => None,
        _ => Some(sys::xattrs_at(dir, name)?),
    };
    Ok(Looked::Stat { st, xattrs })
}

/// The metadata of `names` in `dir`, in order: a big batch split between
/// this thread and the pool's (their parts through one `dup` of `dir`,
/// which they can own), a small one (or one whose descriptor cannot be
/// duplicated) here.
fn look_all<'k>(dir: &OwnedFd, names: &[std::ffi::OsString]) -> VecDeque<io::Result<Looked<'k>>> {
    let here = |part: &[std::ffi::OsString]| -> Vec<io::Result<Looked<'k>>> {
        part.iter().map(|name| look(dir, name)).collect()
    };
    if !on_pool(names.len()) {
        return here(names).into();
    }
    let Ok(shared) = dir.try_clone().map(Arc::new) else {
        return here(names).into();
    };
    let pool = crate::pool::pool();
    let mut parts = names.chunks(names.len().div_ceil(pool.threads() + 1));
    let mine = parts.next().unwrap_or_default();
    let theirs: Vec<_> = parts
        .map(|part| {
            let (part, dir) = (part.to_vec(), Arc::clone(&shared));
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            pool.spawn(move || {
                let _ = tx.send(part.iter().map(|name| look(&dir, name)).collect::<Vec<_>>());
            });
            rx
        })
        .collect();
    let mut out: VecDeque<_> = here(mine).into();
    for rx in theirs {
        out.extend(
            rx.recv()
                .expect("a pool task sends its part or ends the process"),
        );
    }
    out
}

impl<'k> Level<'k> {
    /// The next name and its metadata; the next batch is looked up (in
    /// parallel) when the last is used up. `dir` is this level's directory.
    /// A name listed as a regular file with the inode number of a file the
    /// writer wrote there is that file: what the writer knows is used.
    fn next(
        &mut self,
        dir: &OwnedFd,
        known: &'k WrittenFiles,
    ) -> Option<(std::ffi::OsString, io::Result<Looked<'k>>)> {
        if self.next == self.names.len() {
            return None;
        }
        if self.ahead.is_empty() {
            let batch = &self.names[self.next..self.names.len().min(self.next + AHEAD)];
            let written: Vec<Option<&WrittenFile>> = batch
                .iter()
                .map(|listed| {
                    if known.is_empty() || listed.kind != FileType::RegularFile {
                        return None;
                    }
                    known
                        .get_child(&self.rel, &listed.name)
                        .filter(|file| file.node.ino == listed.ino)
                })
                .collect();
            let to_stat: Vec<std::ffi::OsString> = batch
                .iter()
                .zip(&written)
                .filter(|(_, file)| file.is_none())
                .map(|(listed, _)| listed.name.clone())
                .collect();
            let mut looked = look_all(dir, &to_stat);
            self.ahead = written
                .into_iter()
                .map(|file| match file {
                    Some(file) => Ok(Looked::Written(file)),
                    None => looked.pop_front().expect("one lookup per name stat'ed"),
                })
                .collect();
        }
        let name = std::mem::take(&mut self.names[self.next].name);
        self.next += 1;
        Some((name, self.ahead.pop_front().expect("looked up ahead")))
    }
}

/// The walk: every directory is read through its own descriptor and left
/// before its subdirectories are entered (they are reopened through `..`),
/// so at most two descriptors are open whatever the depth, and no path
/// longer than one name is ever given to the kernel.
struct Walk<'k> {
    known: &'k WrittenFiles,
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
    /// One entry's part, gathered so that the hasher takes it in one call
    /// (a call per field was most of the walk's own time).
    part: Vec<u8>,
}

impl<'k> Walk<'k> {
    /// Hashes an entry's part: its path, kind, mode, owner, mtime, xattrs,
    /// then `tail` (what the kind adds).
    fn entry(&mut self, rel: &Path, meta: &Meta, xattrs: &[(String, Vec<u8>)], tail: &[&[u8]]) {
        let p = &mut self.part;
        p.clear();
        p.extend_from_slice(rel.as_os_str().as_bytes());
        p.extend_from_slice(&[0, meta.kind]);
        p.extend_from_slice(&meta.mode.to_le_bytes());
        p.extend_from_slice(&meta.uid.to_le_bytes());
        p.extend_from_slice(&meta.gid.to_le_bytes());
        p.extend_from_slice(&meta.mtime.to_le_bytes());
        p.extend_from_slice(&meta.mtime_nsec.to_le_bytes());
        for (name, value) in xattrs {
            p.extend_from_slice(name.as_bytes());
            p.push(0);
            p.extend_from_slice(&(value.len() as u64).to_le_bytes());
            p.extend_from_slice(value);
        }
        p.push(0xff);
        for bytes in tail {
            p.extend_from_slice(bytes);
        }
        self.hasher.update(p);
    }

    /// A regular file's part: its entry fields, size and content hash.
    fn file(
        &mut self,
        rel: &Path,
        meta: &Meta,
        xattrs: &[(String, Vec<u8>)],
        size: u64,
        hash: &[u8; 32],
    ) {
        self.entry(rel, meta, xattrs, &[&size.to_le_bytes(), hash]);
    }

    /// Hashes the tree below directory `root`, depth first, without
    /// recursion: a directory is closed while a subdirectory is read and
    /// reopened through `..` (checked by inode).
    fn dir(&mut self, root: OwnedFd) -> io::Result<()> {
        let mut fd = root;
        let mut levels = vec![self.level(&fd, PathBuf::new(), None)?];
        while let Some(level) = levels.last_mut() {
            let Some((name, looked)) = level.next(&fd, self.known) else {
                let done = levels.pop().expect("a level");
                let Some(parent) = done.parent else { break };
                let rel = levels.last().map_or(PathBuf::new(), |l| l.rel.clone());
                fd = sys::open_nofollow(&fd, OsStr::new(".."), true).map_err(|e| named(&rel, e))?;
                let back = rfs::fstat(&fd).map_err(|e| named(&rel, e.into()))?;
                if (back.st_dev, back.st_ino) != parent {
                    return Err(named(
                        &rel,
                        io::Error::other("the directory moved while it was read"),
                    ));
                }
                continue;
            };
            let path = level.rel.join(&name);
            let (st, xattrs) = match looked.map_err(|e| named(&path, e))? {
                Looked::Written(file) => {
                    self.file(
                        &path,
                        &file.node.meta,
                        &file.node.xattrs,
                        file.size,
                        &file.hash,
                    );
                    continue;
                }
                Looked::Stat { st, xattrs } => (st, xattrs.unwrap_or_default()),
            };
            let meta = Meta::of(&st);
            match kind_of(&st) {
                b'd' => {
                    let child =
                        sys::open_nofollow(&fd, &name, true).map_err(|e| named(&path, e))?;
                    let here = rfs::fstat(&fd)
                        .map_err(|e| named(path.parent().unwrap_or(&path), e.into()))?;
                    self.entry(
                        &path,
                        &meta,
                        &sys::xattrs(&child).map_err(|e| named(&path, e))?,
                        &[],
                    );
                    fd = child;
                    let level = self.level(&fd, path, Some((here.st_dev, here.st_ino)))?;
                    levels.push(level);
                }
                b'f' => {
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    // Listed without its type (a file system that does not
                    // say), a file the writer wrote is still not read again.
                    let known = self
                        .known
                        .get(&path)
                        .filter(|file| file.node.ino == st.st_ino && file.size == size)
                        .map(|file| file.hash);
                    let hash = match known {
                        Some(hash) => hash,
                        None if size == 0 => *blake3::hash(b"").as_bytes(),
                        None => {
                            let file = sys::open_nofollow(&fd, &name, false)
                                .map_err(|e| named(&path, e))?;
                            hash_reader(&mut File::from(file), &mut self.buffer)
                                .map_err(|e| named(&path, e))?
                        }
                    };
                    self.file(&path, &meta, &xattrs, size, &hash);
                }
                b'l' => {
                    let target = rfs::readlinkat(&fd, &name, Vec::new())
                        .map_err(|e| named(&path, e.into()))?;
                    self.entry(&path, &meta, &xattrs, &[target.as_bytes(), &[0]]);
                }
                b'c' | b'b' => {
                    self.entry(&path, &meta, &xattrs, &[&st.st_rdev.to_le_bytes()]);
                }
                _ => self.entry(&path, &meta, &xattrs, &[]),
            }
        }
        Ok(())
    }

    /// A directory's sorted names, their count hashed.
    fn level(
        &mut self,
        fd: &OwnedFd,
        rel: PathBuf,
        parent: Option<(u64, u64)>,
    ) -> io::Result<Level<'k>> {
        let mut names = sys::list_dir_typed(fd).map_err(|e| named(&rel, e))?;
        names.sort_by(|a, b| a.name.cmp(&b.name));
        self.hasher.update(&(names.len() as u64).to_le_bytes());
        Ok(Level {
            rel,
            names,
            next: 0,
            ahead: std::collections::VecDeque::new(),
            parent,
        })
    }
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
