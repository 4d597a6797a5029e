//! One thread walks a tree: what [`super::levels`] hands a directory too
//! deep or too big to list ahead, and the whole tree in tests (the
//! reference the parallel walk is checked against).
//!
//! Every directory is read through its own descriptor and left before its
//! subdirectories are entered (they are reopened through `..`, checked by
//! inode), so at most two descriptors are open whatever the depth, and no
//! path longer than one name is ever given to the kernel.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs as rfs;

use super::lookup::{Lister, Put};
use super::{Limits, Out, WrittenFiles, named, put_count};
use crate::sys;

/// One directory being read: its path, its names, and its parent's
/// identity (to check `..` against).
struct Level<'k> {
    rel: PathBuf,
    lister: Lister<'k>,
    parent: Option<(u64, u64)>,
}

/// Adds the names of directory `top` (at `rel`, its own part added by the
/// caller) and everything below, depth first, to `out`.
pub(crate) fn walk(
    top: OwnedFd,
    rel: PathBuf,
    known: &WrittenFiles,
    limits: &Limits,
    out: &mut Out,
) -> io::Result<()> {
    let mut fd = top;
    let lister = Lister::new(&fd, &rel, known, limits.lookups_on_pool)?;
    put_count(&mut out.buf, lister.len());
    let mut levels = vec![Level {
        rel,
        lister,
        parent: None,
    }];
    while let Some(level) = levels.last_mut() {
        let Some(put) = level.lister.put_next(&fd, &mut out.buf)? else {
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
        out.flush_if_full();
        if let Put::Dir {
            path, fd: child, ..
        } = put
        {
            let here =
                rfs::fstat(&fd).map_err(|e| named(path.parent().unwrap_or(&path), e.into()))?;
            fd = child;
            let lister = Lister::new(&fd, &path, known, limits.lookups_on_pool)?;
            put_count(&mut out.buf, lister.len());
            levels.push(Level {
                rel: path,
                lister,
                parent: Some((here.st_dev, here.st_ino)),
            });
        }
    }
    Ok(())
}
