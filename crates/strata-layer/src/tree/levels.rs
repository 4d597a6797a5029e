//! The walk over both cores: directories are listed ahead, each on
//! whichever thread is free, and their parts hashed in the digest's order.
//!
//! Listing a directory (its names, their metadata, each name's part) needs
//! nothing of any other directory. Each listing leaves its subdirectories
//! on a stack, the first on top, and helper threads take the top one: they
//! list in the order of the walk, a little ahead of it. The calling thread
//! takes the parts in that order and hashes them; a directory nobody has
//! taken yet it lists itself, and while a helper lists the one it needs,
//! it lists the next one waiting, as a helper would. The
//! bytes hashed are those of [`super::walk`], which reads one directory at
//! a time (the tests check that both agree).
//!
//! Bounded whatever the tree: helpers stop [`Limits::max_ahead_bytes`]
//! ahead of the hashing, or when the listings ahead hold
//! [`Limits::max_fds_ahead`] descriptors (a directory with subdirectories
//! too deep to list ahead, or too many names, keeps its own until its turn:
//! a tree of thousands of those would have held one each); a directory waiting on the stack holds
//! its name, not a descriptor (it is opened again from its parent's, and
//! checked to be the directory its part was taken from); a directory of
//! more than [`Limits::max_names`] names is read in batches when its turn
//! comes, not held whole; below [`Limits::max_depth`] one thread walks the
//! rest with two descriptors.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustix::fs as rfs;

use super::lookup::{Lister, Put};
use super::{Limits, Out, WrittenFiles, named, put_count, walk};
use crate::sys;

/// Adds the names of the tree's root `top` (its own part added by the
/// caller) and everything below to `out`.
pub(crate) fn walk(
    top: OwnedFd,
    known: &WrittenFiles,
    limits: &Limits,
    out: &mut Out,
) -> io::Result<()> {
    let helpers = std::thread::available_parallelism().map_or(1, usize::from) - 1;
    let shared = Shared {
        known,
        limits,
        state: Mutex::new(State {
            stack: Vec::new(),
            waiting: HashMap::new(),
            listed: HashMap::new(),
            next_id: 0,
            ahead: 0,
            fds_ahead: 0,
            stop: false,
        }),
        work: Condvar::new(),
        listed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|| shared.help());
        }
        let result = shared
            .list(top, PathBuf::new(), 0)
            .and_then(|listing| shared.consume(listing, out));
        shared.stop();
        result
    })
}

/// A subdirectory waiting to be listed.
struct Waiting {
    parent: Arc<OwnedFd>,
    parent_rel: Arc<PathBuf>,
    name: OsString,
    /// Its device and inode when its part was taken.
    id: (u64, u64),
    depth: usize,
}

struct State<'a> {
    /// Subdirectories to list, the next in the walk's order last (some
    /// may have been taken by the hashing thread already: they are no
    /// longer in `waiting`).
    stack: Vec<u64>,
    waiting: HashMap<u64, Waiting>,
    listed: HashMap<u64, io::Result<Listing<'a>>>,
    next_id: u64,
    /// Bytes and descriptors held by the directories listed ahead that the
    /// hashing has not taken yet.
    ahead: usize,
    fds_ahead: usize,
    stop: bool,
}

/// A directory, listed.
enum Listing<'k> {
    /// Its part (the count of its names, then each name's part) and, for
    /// each subdirectory, where in it the subdirectory's own names go.
    Parts {
        bytes: Vec<u8>,
        subdirs: Vec<(usize, Subdir)>,
        /// Kept while a subdirectory is to be walked from it.
        fd: Option<Arc<OwnedFd>>,
        rel: Arc<PathBuf>,
    },
    /// Too many names to hold: read in batches when its turn comes.
    Big {
        fd: OwnedFd,
        depth: usize,
        lister: Lister<'k>,
    },
}

impl Listing<'_> {
    /// About how many bytes the listing holds.
    fn held(&self) -> usize {
        match self {
            Self::Parts { bytes, .. } => bytes.len(),
            Self::Big { lister, .. } => lister.len() * 64,
        }
    }

    /// How many descriptors the listing keeps open.
    fn fds(&self) -> usize {
        match self {
            Self::Parts { fd, .. } => usize::from(fd.is_some()),
            Self::Big { .. } => 1,
        }
    }
}

/// A subdirectory, as its parent's listing leaves it.
enum Subdir {
    /// Left on the stack by this number.
    Stacked(u64),
    /// Too deep to list ahead: walked by one thread when its turn comes.
    Deep { name: OsString, id: (u64, u64) },
}

struct Shared<'a> {
    known: &'a WrittenFiles,
    limits: &'a Limits,
    state: Mutex<State<'a>>,
    /// A subdirectory was stacked, one listed ahead was hashed, or the
    /// walk ended.
    work: Condvar,
    /// A helper listed a directory.
    listed: Condvar,
}

impl<'a> Shared<'a> {
    fn lock(&self) -> MutexGuard<'_, State<'a>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A helper thread: lists the top of the stack while it is not too far
    /// ahead, until the walk ends.
    fn help(&self) {
        let mut state = self.lock();
        loop {
            if state.stop {
                return;
            }
            let Some((id, waiting)) = self.next_ahead(&mut state) else {
                state = wait(&self.work, state);
                continue;
            };
            drop(state);
            let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.list_waiting(waiting)
            }));
            state = self.lock();
            match listed {
                Ok(listed) => self.keep(&mut state, id, listed),
                Err(panic) => {
                    // The hashing thread is told; the scope passes the
                    // panic on.
                    let error = io::Error::other("a tree digest thread panicked");
                    self.keep(&mut state, id, Err(error));
                    drop(state);
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }

    /// The top subdirectory still waiting, if the listings ahead leave room
    /// for one more.
    fn next_ahead(&self, state: &mut State<'a>) -> Option<(u64, Waiting)> {
        if state.ahead >= self.limits.max_ahead_bytes
            || state.fds_ahead >= self.limits.max_fds_ahead
        {
            return None;
        }
        while let Some(id) = state.stack.pop() {
            if let Some(waiting) = state.waiting.remove(&id) {
                return Some((id, waiting));
            }
        }
        None
    }

    /// Keeps a listing made ahead until the hashing takes it.
    fn keep(&self, state: &mut State<'a>, id: u64, listed: io::Result<Listing<'a>>) {
        state.ahead += listed.as_ref().map_or(0, Listing::held);
        state.fds_ahead += listed.as_ref().map_or(0, Listing::fds);
        state.listed.insert(id, listed);
        self.listed.notify_all();
    }

    /// Ends the walk: helpers stop.
    fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }

    /// Opens a stacked subdirectory again, checks it, and lists it.
    fn list_waiting(&self, waiting: Waiting) -> io::Result<Listing<'a>> {
        let rel = waiting.parent_rel.join(&waiting.name);
        let fd = reopen(&waiting.parent, &waiting.name, waiting.id, &rel)?;
        drop(waiting.parent);
        self.list(fd, rel, waiting.depth)
    }

    /// Lists directory `fd` (at `rel`, `depth` below the root): its names'
    /// parts, its subdirectories stacked.
    fn list(&self, fd: OwnedFd, rel: PathBuf, depth: usize) -> io::Result<Listing<'a>> {
        let mut lister = Lister::new(&fd, &rel, self.known, self.limits.lookups_on_pool)?;
        if lister.len() > self.limits.max_names {
            return Ok(Listing::Big { fd, depth, lister });
        }
        let (fd, rel) = (Arc::new(fd), Arc::new(rel));
        let (mut bytes, mut subdirs, mut stacked) = (Vec::new(), Vec::new(), Vec::new());
        put_count(&mut bytes, lister.len());
        while let Some(put) = lister.put_next(&fd, &mut bytes)? {
            let Put::Dir {
                name,
                path,
                fd: child,
            } = put
            else {
                continue;
            };
            let st = rfs::fstat(&child).map_err(|e| named(&path, e.into()))?;
            let id = (st.st_dev, st.st_ino);
            let subdir = if depth < self.limits.max_depth {
                stacked.push(Waiting {
                    parent: Arc::clone(&fd),
                    parent_rel: Arc::clone(&rel),
                    name,
                    id,
                    depth: depth + 1,
                });
                Subdir::Stacked(0)
            } else {
                Subdir::Deep { name, id }
            };
            subdirs.push((bytes.len(), subdir));
        }
        if !stacked.is_empty() {
            let mut state = self.lock();
            let first = state.next_id;
            state.next_id += stacked.len() as u64;
            let mut ids = first..;
            for (_, subdir) in &mut subdirs {
                if let Subdir::Stacked(id) = subdir {
                    *id = ids.next().expect("an unbounded range");
                }
            }
            // The first subdirectory on top: helpers list in the walk's order.
            for (id, waiting) in (first..).zip(stacked).collect::<Vec<_>>().into_iter().rev() {
                state.stack.push(id);
                state.waiting.insert(id, waiting);
            }
            drop(state);
            self.work.notify_all();
        }
        let deep = subdirs
            .iter()
            .any(|(_, subdir)| matches!(subdir, Subdir::Deep { .. }));
        Ok(Listing::Parts {
            bytes,
            subdirs,
            fd: deep.then_some(fd),
            rel,
        })
    }

    /// The listing of stacked subdirectory `id`: listed here if no helper
    /// has taken it yet; while a helper lists it, this thread lists the
    /// next one waiting (as a helper would), or waits.
    fn take(&self, id: u64) -> io::Result<Listing<'a>> {
        let mut state = self.lock();
        loop {
            if let Some(listed) = state.listed.remove(&id) {
                state.ahead -= listed.as_ref().map_or(0, Listing::held);
                state.fds_ahead -= listed.as_ref().map_or(0, Listing::fds);
                drop(state);
                self.work.notify_all();
                return listed;
            }
            if let Some(waiting) = state.waiting.remove(&id) {
                drop(state);
                return self.list_waiting(waiting);
            }
            let Some((other, waiting)) = self.next_ahead(&mut state) else {
                state = wait(&self.listed, state);
                continue;
            };
            drop(state);
            let listed = self.list_waiting(waiting);
            state = self.lock();
            self.keep(&mut state, other, listed);
        }
    }

    /// Hashes a listed directory and everything below it, in order.
    fn consume(&self, listing: Listing<'a>, out: &mut Out) -> io::Result<()> {
        match listing {
            Listing::Parts {
                bytes,
                subdirs,
                fd,
                rel,
            } => {
                let mut at = 0;
                for (offset, subdir) in subdirs {
                    out.put(&bytes[at..offset]);
                    at = offset;
                    match subdir {
                        Subdir::Stacked(id) => {
                            let listing = self.take(id)?;
                            self.consume(listing, out)?;
                        }
                        Subdir::Deep { name, id } => {
                            let parent = fd.as_ref().expect("kept for its deep subdirectories");
                            let path = rel.join(&name);
                            let child = reopen(parent, &name, id, &path)?;
                            walk::walk(child, path, self.known, self.limits, out)?;
                        }
                    }
                }
                out.put(&bytes[at..]);
                Ok(())
            }
            Listing::Big {
                fd,
                depth,
                mut lister,
            } => {
                put_count(&mut out.buf, lister.len());
                while let Some(put) = lister.put_next(&fd, &mut out.buf)? {
                    out.flush_if_full();
                    let Put::Dir {
                        path, fd: child, ..
                    } = put
                    else {
                        continue;
                    };
                    if depth < self.limits.max_depth {
                        let listing = self.list(child, path, depth + 1)?;
                        self.consume(listing, out)?;
                    } else {
                        walk::walk(child, path, self.known, self.limits, out)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Waits on `condvar` with the state's lock.
fn wait<'g, 'a>(condvar: &Condvar, state: MutexGuard<'g, State<'a>>) -> MutexGuard<'g, State<'a>> {
    condvar
        .wait(state)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Subdirectory `name` of `parent`, opened without following a symlink
/// and checked to be directory `id` still.
fn reopen(
    parent: &OwnedFd,
    name: &std::ffi::OsStr,
    id: (u64, u64),
    path: &std::path::Path,
) -> io::Result<OwnedFd> {
    let fd = sys::open_nofollow(parent, name, true).map_err(|e| named(path, e))?;
    let st = rfs::fstat(&fd).map_err(|e| named(path, e.into()))?;
    if (st.st_dev, st.st_ino) != id {
        return Err(named(
            path,
            io::Error::other("the directory moved while it was read"),
        ));
    }
    Ok(fd)
}
