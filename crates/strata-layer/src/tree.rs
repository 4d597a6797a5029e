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
    let mut walk = Walk {
        known,
        hasher: blake3::Hasher::new(),
        buffer: vec![0u8; 256 << 10],
    };
    let fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| named(root, e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| named(root, e.into()))?;
    walk.header(
        Path::new(""),
        &st,
        sys::xattrs(&fd).map_err(|e| named(root, e))?,
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

/// One directory being read: its path, its names, how far it is read, what
/// was looked up ahead for the next ones, and its parent's identity (to
/// check `..` against).
struct Level {
    rel: PathBuf,
    names: Vec<std::ffi::OsString>,
    next: usize,
    ahead: VecDeque<io::Result<Looked>>,
    parent: Option<(u64, u64)>,
}

/// A name's metadata, looked up ahead: its stat and, for anything but a
/// directory (whose xattrs are read from the descriptor it is entered by),
/// its xattrs.
struct Looked {
    st: rfs::Stat,
    xattrs: Option<Vec<(String, Vec<u8>)>>,
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

fn look(dir: &OwnedFd, name: &OsStr) -> io::Result<Looked> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let xattrs = match sys::file_type(&st) {
        FileType::Directory => None,
        _ => Some(sys::xattrs_at(dir, name)?),
    };
    Ok(Looked { st, xattrs })
}

/// The metadata of `names` in `dir`, in order: a big batch split between
/// this thread and the pool's (their parts through one `dup` of `dir`,
/// which they can own), a small one (or one whose descriptor cannot be
/// duplicated) here.
fn look_all(dir: &OwnedFd, names: &[std::ffi::OsString]) -> VecDeque<io::Result<Looked>> {
    let here = |part: &[std::ffi::OsString]| -> Vec<io::Result<Looked>> {
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

impl Level {
    /// The next name and its metadata; the next batch is looked up (in
    /// parallel) when the last is used up. `dir` is this level's directory.
    fn next(&mut self, dir: &OwnedFd) -> Option<(std::ffi::OsString, io::Result<Looked>)> {
        if self.next == self.names.len() {
            return None;
        }
        if self.ahead.is_empty() {
            let batch = &self.names[self.next..self.names.len().min(self.next + AHEAD)];
            self.ahead = look_all(dir, batch);
        }
        let name = std::mem::take(&mut self.names[self.next]);
        self.next += 1;
        Some((name, self.ahead.pop_front().expect("looked up ahead")))
    }
}

/// The walk: every directory is read through its own descriptor and left
/// before its subdirectories are entered (they are reopened through `..`),
/// so at most two descriptors are open whatever the depth, and no path
/// longer than one name is ever given to the kernel.
struct Walk<'k> {
    known: &'k ContentHashes,
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
}

impl Walk<'_> {
    fn header(&mut self, rel: &Path, st: &rfs::Stat, xattrs: Vec<(String, Vec<u8>)>) {
        let h = &mut self.hasher;
        h.update(rel.as_os_str().as_bytes());
        h.update(&[0, kind_of(st)]);
        h.update(&(st.st_mode & 0o7777).to_le_bytes());
        h.update(&st.st_uid.to_le_bytes());
        h.update(&st.st_gid.to_le_bytes());
        h.update(&st.st_mtime.to_le_bytes());
        h.update(&st.st_mtime_nsec.to_le_bytes());
        for (name, value) in xattrs {
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(&(value.len() as u64).to_le_bytes());
            h.update(&value);
        }
        h.update(&[0xff]);
    }

    /// Hashes the tree below directory `root`, depth first, without
    /// recursion: a directory is closed while a subdirectory is read and
    /// reopened through `..` (checked by inode).
    fn dir(&mut self, root: OwnedFd) -> io::Result<()> {
        let mut fd = root;
        let mut levels = vec![self.level(&fd, PathBuf::new(), None)?];
        while let Some(level) = levels.last_mut() {
            let Some((name, looked)) = level.next(&fd) else {
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
            let rel = level.rel.clone();
            let path = rel.join(&name);
            let Looked { st, xattrs } = looked.map_err(|e| named(&path, e))?;
            let xattrs = xattrs.unwrap_or_default();
            match kind_of(&st) {
                b'd' => {
                    let child =
                        sys::open_nofollow(&fd, &name, true).map_err(|e| named(&path, e))?;
                    let here = rfs::fstat(&fd).map_err(|e| named(&rel, e.into()))?;
                    self.header(
                        &path,
                        &st,
                        sys::xattrs(&child).map_err(|e| named(&path, e))?,
                    );
                    fd = child;
                    let level = self.level(&fd, path, Some((here.st_dev, here.st_ino)))?;
                    levels.push(level);
                }
                b'f' => {
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    let known = match self.known.get(&path) {
                        Some((known, hash)) if known == size => Some(hash),
                        _ if size == 0 => Some(*blake3::hash(b"").as_bytes()),
                        _ => None,
                    };
                    let hash = match known {
                        // The writer hashed it: the xattrs are all that is
                        // left to read, by name (no open, no close).
                        Some(hash) => {
                            self.header(&path, &st, xattrs);
                            hash
                        }
                        None => {
                            let file = sys::open_nofollow(&fd, &name, false)
                                .map_err(|e| named(&path, e))?;
                            self.header(&path, &st, xattrs);
                            hash_reader(&mut File::from(file), &mut self.buffer)
                                .map_err(|e| named(&path, e))?
                        }
                    };
                    self.hasher.update(&size.to_le_bytes());
                    self.hasher.update(&hash);
                }
                kind => {
                    self.header(&path, &st, xattrs);
                    match kind {
                        b'l' => {
                            let target = rfs::readlinkat(&fd, &name, Vec::new())
                                .map_err(|e| named(&path, e.into()))?;
                            self.hasher.update(target.as_bytes());
                            self.hasher.update(&[0]);
                        }
                        b'c' | b'b' => {
                            self.hasher.update(&st.st_rdev.to_le_bytes());
                        }
                        _ => {}
                    }
                }
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
    ) -> io::Result<Level> {
        let mut names = sys::list_dir(fd).map_err(|e| named(&rel, e))?;
        names.sort();
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
