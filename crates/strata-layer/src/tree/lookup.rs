//! One directory's names, sorted, and their metadata looked up ahead in
//! batches: what both walks ([`super::walk`], [`super::levels`]) read a
//! directory with.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType};

use super::{WrittenFile, WrittenFiles};
use crate::sys;

/// What [`Lister::put_next`] added.
pub(crate) enum Put {
    /// A node other than a directory: its part is all of it.
    Node,
    /// A directory, opened: its names come next.
    Dir {
        name: OsString,
        path: PathBuf,
        fd: OwnedFd,
    },
}

/// A name's metadata, looked up ahead.
pub(crate) enum Looked<'k> {
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
fn look_all<'k>(
    dir: &OwnedFd,
    names: &[OsString],
    on_pool: bool,
) -> VecDeque<io::Result<Looked<'k>>> {
    let here = |part: &[OsString]| -> Vec<io::Result<Looked<'k>>> {
        part.iter().map(|name| look(dir, name)).collect()
    };
    if !on_pool || names.len() < AHEAD_ON_POOL {
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

/// A directory's names in byte order, read one at a time with their
/// metadata, the next batch looked up (in parallel) when the last is used
/// up. A name listed as a regular file with the inode number of a file the
/// writer wrote there is that file: what the writer knows is used.
pub(crate) struct Lister<'k> {
    known: &'k WrittenFiles,
    /// The directory's path, then the path of the name being read.
    path: PathBuf,
    names: Vec<sys::Listed>,
    next: usize,
    ahead: VecDeque<io::Result<Looked<'k>>>,
    on_pool: bool,
    /// Where in the writer's records the next name's is likely to be.
    hint: usize,
}

impl<'k> Lister<'k> {
    /// Lists `dir` (at `rel`, for messages); `known` is what the writer
    /// knows of its files.
    pub(crate) fn new(
        dir: &OwnedFd,
        rel: &Path,
        known: &'k WrittenFiles,
        on_pool: bool,
    ) -> io::Result<Self> {
        let mut names = sys::list_dir_typed(dir).map_err(|e| super::named(rel, e))?;
        names.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            known,
            path: rel.to_owned(),
            names,
            next: 0,
            ahead: VecDeque::new(),
            on_pool,
            hint: 0,
        })
    }

    /// How many names the directory holds.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Adds the next name's part to `out` (`dir` is the directory listed);
    /// `None` past the last name.
    pub(crate) fn put_next(&mut self, dir: &OwnedFd, out: &mut Vec<u8>) -> io::Result<Option<Put>> {
        let Some((name, looked)) = self.next(dir) else {
            return Ok(None);
        };
        self.path.push(&name);
        let put = match super::put_node(out, dir, &self.path, &name, looked, self.known) {
            Ok(None) => Ok(Put::Node),
            Ok(Some(fd)) => Ok(Put::Dir {
                path: self.path.clone(),
                name,
                fd,
            }),
            Err(e) => Err(e),
        };
        self.path.pop();
        put.map(Some)
    }

    /// The next name and its metadata.
    fn next(&mut self, dir: &OwnedFd) -> Option<(OsString, io::Result<Looked<'k>>)> {
        if self.next == self.names.len() {
            return None;
        }
        if self.ahead.is_empty() {
            let (known, hint) = (self.known, &mut self.hint);
            let batch = &self.names[self.next..self.names.len().min(self.next + AHEAD)];
            let written: Vec<Option<&WrittenFile>> = batch
                .iter()
                .map(|listed| {
                    if known.is_empty() || listed.kind != FileType::RegularFile {
                        return None;
                    }
                    known
                        .get_child(&self.path, &listed.name, hint)
                        .filter(|file| file.node.ino == listed.ino)
                })
                .collect();
            let to_stat: Vec<OsString> = batch
                .iter()
                .zip(&written)
                .filter(|(_, file)| file.is_none())
                .map(|(listed, _)| listed.name.clone())
                .collect();
            let mut looked = look_all(dir, &to_stat, self.on_pool);
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
