//! Removing a tree of the store without following a symlink, without
//! crossing into a mount, and with a bounded number of open descriptors
//! whatever the depth (a layer 1500 directories deep must not leave the
//! store failing "Too many open files"; std's `remove_dir_all` holds one
//! descriptor per level).
//!
//! The walk holds one directory descriptor at a time: it goes down with
//! `openat(name)` and back up with `openat("..")`, checking by device and
//! inode that `..` is the directory it came from.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::{Error, Result};

fn open_dir(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn names(dir: &OwnedFd) -> rustix::io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(std::ffi::OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// Removes `path` (a file, a symlink or a whole directory tree); absent is
/// fine. A mount found inside the tree stops the removal with an error that
/// names it: what is mounted there is never touched.
///
/// # Errors
/// When something cannot be removed, or a mount is in the way.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let io = |e: rustix::io::Errno| Error::io("removing", path, std::io::Error::from(e));
    let st = match rfs::lstat(path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rfs::unlink(path).or_else(|e| {
            if e == rustix::io::Errno::NOENT {
                Ok(())
            } else {
                Err(io(e))
            }
        });
    }
    let device = st.st_dev;
    let mut dir = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    // The names walked down from `path`, with each directory's identity.
    let mut down: Vec<(OsString, (u64, u64))> = Vec::new();
    let mut current = (st.st_dev, st.st_ino);
    loop {
        let mut subdir = None;
        for name in names(&dir).map_err(io)? {
            let child = match rfs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io(e)),
            };
            if FileType::from_raw_mode(child.st_mode) == FileType::Directory {
                if child.st_dev != device {
                    let mut at = path.to_path_buf();
                    at.extend(down.iter().map(|(n, _)| n));
                    return Err(Error::io(
                        "removing (a mount is inside; unmount it first)",
                        at.join(&name),
                        std::io::Error::from(std::io::ErrorKind::ResourceBusy),
                    ));
                }
                subdir.get_or_insert((name, (child.st_dev, child.st_ino)));
            } else {
                match rfs::unlinkat(&dir, &name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        if let Some((name, id)) = subdir {
            let child = open_dir(&dir, &name).map_err(io)?;
            let st = rfs::fstat(&child).map_err(io)?;
            if (st.st_dev, st.st_ino) != id {
                return Err(io(rustix::io::Errno::AGAIN));
            }
            down.push((name, current));
            current = id;
            dir = child;
            continue;
        }
        // `dir` is empty: go up and remove it.
        let Some((name, parent_id)) = down.pop() else {
            drop(dir);
            return match rfs::rmdir(path) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(io(e)),
            };
        };
        let parent = open_dir(&dir, std::ffi::OsStr::new("..")).map_err(io)?;
        let st = rfs::fstat(&parent).map_err(io)?;
        if (st.st_dev, st.st_ino) != parent_id {
            // Moved while being removed: stop rather than guess.
            return Err(io(rustix::io::Errno::AGAIN));
        }
        dir = parent;
        current = parent_id;
        match rfs::unlinkat(&dir, &name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_deeper_than_the_descriptor_limit_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("deep");
        // 1500 levels, one path component at a time (no path is ever
        // longer than PATH_MAX): create with relative opens.
        let mut dir = rfs::open(
            tmp.path(),
            OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut first = true;
        for i in 0..1500 {
            let name = if first {
                "deep".to_owned()
            } else {
                format!("d{i}")
            };
            first = false;
            rfs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            let f = rfs::openat(
                &dir,
                "f",
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            );
            drop(f);
            rfs::symlinkat("/etc", &dir, "out").ok();
            dir = open_dir(&dir, std::ffi::OsStr::new(&name)).unwrap();
        }
        drop(dir);
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        // The symlinks were removed, never followed.
        assert!(Path::new("/etc/passwd").exists() || Path::new("/etc").exists());
    }

    #[test]
    fn files_symlinks_and_absent_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
        remove_tree(&tmp.path().join("absent")).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(outside.join("keep").exists());
    }
}
