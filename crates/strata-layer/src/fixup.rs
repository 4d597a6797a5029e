//! The overlay-mode pass that runs once a layer's lowers are in place.
//!
//! Two things in a layer directory depend on the layers below (which is why
//! the store keys layer directories by chain id):
//! - a directory the tar implies but does not list (`tmp/x` without `tmp/`)
//!   must carry the mode, owner and xattrs the same path has below, or the
//!   merged `/tmp` silently turns from 1777 into 0755;
//! - a hard link whose target is only in a lower layer must become a copy,
//!   because an overlay layer directory cannot link across layers.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Uid, XattrFlags};

use crate::{Error, Fixups, Result, sys};

fn base(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new("."))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Where a path is found in the lowers: the first layer (topmost first) that
/// has anything there. A whiteout there means "not below".
fn find_below(lowers: &[&Path], rel: &Path) -> Result<Option<(PathBuf, rfs::Stat)>> {
    for lower in lowers {
        let root =
            sys::open_root(lower).map_err(|e| Error::io("opening the lower layer", *lower, e))?;
        let Ok(pfd) = sys::resolve_dir(&root, parent(rel)) else {
            continue;
        };
        if let Some(st) =
            sys::lstat_at(&pfd, base(rel)).map_err(|e| Error::io("reading", rel, e))?
        {
            if sys::file_type(&st) == FileType::CharacterDevice && st.st_rdev == 0 {
                return Ok(None);
            }
            return Ok(Some((lower.to_path_buf(), st)));
        }
    }
    Ok(None)
}

fn copy_xattrs(from: &std::os::fd::OwnedFd, to: &std::os::fd::OwnedFd, rel: &Path) -> Result<()> {
    for (k, v) in sys::xattrs(from).map_err(|e| Error::io("reading xattrs of", rel, e))? {
        if k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.") {
            continue;
        }
        rfs::fsetxattr(to, k.as_str(), &v, XattrFlags::empty())
            .map_err(|e| Error::io("setting an xattr on", rel, e))?;
    }
    Ok(())
}

/// Completes an overlay-mode layer directory `target` whose extraction
/// reported `fixups`, given its lower layer directories, topmost first.
///
/// # Errors
/// When a lower cannot be read, or a hard link's target exists in no lower.
pub fn fix_up(target: &Path, fixups: &Fixups, lowers_top_first: &[&Path]) -> Result<()> {
    let root = sys::open_root(target).map_err(|e| Error::io("opening", target, e))?;
    let as_root = sys::running_as_root();
    for dir in &fixups.implied_dirs {
        let Some((lower, st)) = find_below(lowers_top_first, dir)? else {
            continue;
        };
        if sys::file_type(&st) != FileType::Directory {
            continue;
        }
        let ours = sys::resolve_read(&root, dir).map_err(|e| Error::io("opening", dir, e))?;
        let lower_root = sys::open_root(&lower).map_err(|e| Error::io("opening", &lower, e))?;
        let theirs =
            sys::resolve_read(&lower_root, dir).map_err(|e| Error::io("opening", dir, e))?;
        if as_root {
            rfs::fchown(
                &ours,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| Error::io("setting the owner of", dir, e))?;
        }
        rfs::fchmod(&ours, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| Error::io("setting the mode of", dir, e))?;
        copy_xattrs(&theirs, &ours, dir)?;
    }

    // Links to one lower file stay links to each other within this layer.
    let mut copied: HashMap<&Path, &Path> = HashMap::new();
    for (link, target_path) in &fixups.lower_links {
        let pfd = sys::resolve_dir(&root, parent(link))
            .map_err(|e| Error::io("opening", parent(link), e))?;
        if let Some(first) = copied.get(target_path.as_path()) {
            let ffd = sys::resolve_dir(&root, parent(first))
                .map_err(|e| Error::io("opening", *first, e))?;
            rfs::linkat(&ffd, base(first), &pfd, base(link), AtFlags::empty())
                .map_err(|e| Error::io("linking", link, e))?;
            continue;
        }
        let (lower, st) = find_below(lowers_top_first, target_path)?.ok_or_else(|| {
            Error::entry(
                link.to_string_lossy(),
                format!(
                    "hard link target {} is in neither this layer nor any below",
                    target_path.display()
                ),
            )
        })?;
        if sys::file_type(&st) != FileType::RegularFile {
            return Err(Error::entry(
                link.to_string_lossy(),
                format!(
                    "hard link target {} below is not a regular file",
                    target_path.display()
                ),
            ));
        }
        let lower_root = sys::open_root(&lower).map_err(|e| Error::io("opening", &lower, e))?;
        let lpfd = sys::resolve_dir(&lower_root, parent(target_path))
            .map_err(|e| Error::io("opening", target_path, e))?;
        let src = sys::open_nofollow(&lpfd, base(target_path), false)
            .map_err(|e| Error::io("opening", target_path, e))?;
        let dst = rfs::openat(
            &pfd,
            base(link),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("creating", link, e))?;
        let (mut src_file, mut dst_file) = (std::fs::File::from(src), std::fs::File::from(dst));
        std::io::copy(&mut src_file, &mut dst_file)
            .map_err(|e| Error::io("copying into", link, e))?;
        let (src, dst) = (
            std::os::fd::OwnedFd::from(src_file),
            std::os::fd::OwnedFd::from(dst_file),
        );
        if as_root {
            rfs::fchown(
                &dst,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| Error::io("setting the owner of", link, e))?;
        }
        rfs::fchmod(&dst, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| Error::io("setting the mode of", link, e))?;
        copy_xattrs(&src, &dst, link)?;
        rfs::futimens(
            &dst,
            &sys::times(st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)),
        )
        .map_err(|e| Error::io("setting the mtime of", link, e))?;
        copied.insert(target_path, link);
    }
    Ok(())
}
