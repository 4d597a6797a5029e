//! The overlay-mode pass that runs once a layer's lowers are in place.
//!
//! What a layer directory holds depends on the layers below in these places
//! (which is why the store keys layer directories by chain id):
//! - a directory the tar implies but does not list (`tmp/x` without `tmp/`),
//!   and the root when the tar has no `./`, must carry the metadata the same
//!   path has below, or the merged `/tmp` silently turns from 1777 into 0755;
//! - a hard link whose target is only in a lower layer must become a copy,
//!   because an overlay layer directory cannot link across layers;
//! - a whiteout applies only to lower layers (image-spec layer.md): one that
//!   hides nothing below is dropped, with the directories made only to hold
//!   it, and so is an opaque mark with no directory below; otherwise a bind
//!   mount shows a char 0:0 device and an overlay shows entries that cannot
//!   be stat'ed.
//!
//! Every question about the lowers is asked of their merged view
//! ([`Lowers::lookup`]): whiteouts and opaque directories are honoured, so a
//! path a middle layer deleted is not found below.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Uid, XattrFlags};

use crate::{Error, Fixups, Result, sys};

fn base(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new("."))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn is_whiteout(st: &rfs::Stat) -> bool {
    sys::file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque_dir(fd: &OwnedFd) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 2];
            matches!(rfs::fgetxattr(fd, *name, &mut value), Ok(1) if value[0] == b'y')
        })
}

/// What the merged view of the lowers holds at a path.
pub(crate) enum Below {
    /// Nothing: absent, whited out, hidden by an opaque directory, or a
    /// parent is not a directory.
    Nothing,
    /// The topmost lower's handle of the path's parent, and its stat.
    Found(OwnedFd, rfs::Stat),
}

/// The lower layer directories of a layer, topmost first.
pub(crate) struct Lowers {
    roots: Vec<OwnedFd>,
}

impl Lowers {
    pub(crate) fn open(lowers_top_first: &[&Path]) -> Result<Self> {
        let roots = lowers_top_first
            .iter()
            .map(|lower| {
                sys::resolve_read(
                    sys::open_root(lower)
                        .map_err(|e| Error::io("opening the lower layer", *lower, e))?,
                    Path::new(""),
                )
                .map_err(|e| Error::io("opening the lower layer", *lower, e))
            })
            .collect::<Result<_>>()?;
        Ok(Self { roots })
    }

    /// The merged view at `rel`, as overlayfs shows it: names are looked up
    /// literally (no symlink followed), each layer from the top until one
    /// whites the name out, holds a non-directory, or marks it opaque.
    pub(crate) fn lookup(&self, rel: &Path) -> Result<Below> {
        let io = |e: std::io::Error| Error::io("reading the lower layers at", rel, e);
        let parts: Vec<&OsStr> = rel.iter().collect();
        let Some((last, dirs)) = parts.split_last() else {
            return match self.roots.first() {
                Some(root) => {
                    let st = rfs::fstat(root).map_err(|e| io(e.into()))?;
                    Ok(Below::Found(root.try_clone().map_err(io)?, st))
                }
                None => Ok(Below::Nothing),
            };
        };
        let mut candidates: Vec<OwnedFd> = self
            .roots
            .iter()
            .map(OwnedFd::try_clone)
            .collect::<std::io::Result<_>>()
            .map_err(io)?;
        for name in dirs {
            let mut next = Vec::new();
            for dir in candidates {
                let Some(st) = sys::lstat_at(&dir, name).map_err(io)? else {
                    continue;
                };
                if sys::file_type(&st) != FileType::Directory {
                    // A whiteout or a non-directory hides every layer below.
                    break;
                }
                let fd = sys::open_nofollow(&dir, name, true).map_err(io)?;
                let opaque = is_opaque_dir(&fd);
                next.push(fd);
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                return Ok(Below::Nothing);
            }
            candidates = next;
        }
        for dir in candidates {
            if let Some(st) = sys::lstat_at(&dir, last).map_err(io)? {
                if is_whiteout(&st) {
                    return Ok(Below::Nothing);
                }
                return Ok(Below::Found(dir, st));
            }
        }
        Ok(Below::Nothing)
    }

    /// The names the merged lowers show in their root.
    fn root_names(&self) -> Result<BTreeSet<std::ffi::OsString>> {
        let mut names = BTreeSet::new();
        for root in &self.roots {
            for name in sys::list_dir(root).map_err(|e| Error::io("listing", "/", e))? {
                names.insert(name);
            }
        }
        let mut visible = BTreeSet::new();
        for name in names {
            if matches!(self.lookup(Path::new(&name))?, Below::Found(..)) {
                visible.insert(name);
            }
        }
        Ok(visible)
    }
}

fn copy_xattrs(from: &OwnedFd, to: &OwnedFd, rel: &Path) -> Result<()> {
    for (k, v) in sys::xattrs(from).map_err(|e| Error::io("reading xattrs of", rel, e))? {
        if k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.") {
            continue;
        }
        rfs::fsetxattr(to, k.as_str(), &v, XattrFlags::empty())
            .map_err(|e| Error::io("setting an xattr on", rel, e))?;
    }
    Ok(())
}

/// Gives directory `ours` the owner, mode and xattrs of the directory the
/// lowers show at `rel`, if they show one.
fn inherit_dir_metadata(lowers: &Lowers, ours: &OwnedFd, rel: &Path, as_root: bool) -> Result<()> {
    let Below::Found(dir, st) = lowers.lookup(rel)? else {
        return Ok(());
    };
    if sys::file_type(&st) != FileType::Directory {
        return Ok(());
    }
    let theirs = if rel.as_os_str().is_empty() {
        dir
    } else {
        sys::open_nofollow(&dir, base(rel), true).map_err(|e| Error::io("opening", rel, e))?
    };
    if as_root {
        rfs::fchown(
            ours,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| Error::io("setting the owner of", rel, e))?;
    }
    rfs::fchmod(ours, Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(|e| Error::io("setting the mode of", rel, e))?;
    copy_xattrs(&theirs, ours, rel)
}

/// Completes an overlay-mode layer directory `target` whose extraction
/// reported `fixups`, given its lower layer directories, topmost first.
///
/// # Errors
/// When a lower cannot be read, or a hard link's target is not a regular
/// file in the merged view of the lowers.
pub fn fix_up(target: &Path, fixups: &Fixups, lowers_top_first: &[&Path]) -> Result<()> {
    let root = sys::resolve_read(
        sys::open_root(target).map_err(|e| Error::io("opening", target, e))?,
        Path::new(""),
    )
    .map_err(|e| Error::io("opening", target, e))?;
    let lowers = Lowers::open(lowers_top_first)?;
    let as_root = sys::running_as_root();
    if !fixups.root_listed {
        inherit_dir_metadata(&lowers, &root, Path::new(""), as_root)?;
    }
    for dir in &fixups.implied_dirs {
        let ours = sys::resolve_read(&root, dir).map_err(|e| Error::io("opening", dir, e))?;
        inherit_dir_metadata(&lowers, &ours, dir, as_root)?;
    }
    copy_lower_links(&root, fixups, &lowers, as_root)?;
    drop_what_hides_nothing(&root, fixups, &lowers)
}

/// Hard links to lower files become copies; links to one lower file stay
/// links to each other within this layer.
fn copy_lower_links(root: &OwnedFd, fixups: &Fixups, lowers: &Lowers, as_root: bool) -> Result<()> {
    let mut copied: HashMap<&Path, &Path> = HashMap::new();
    for (link, target_path) in &fixups.lower_links {
        let pfd = sys::resolve_dir(root, parent(link))
            .map_err(|e| Error::io("opening", parent(link), e))?;
        if let Some(first) = copied.get(target_path.as_path()) {
            let ffd = sys::resolve_dir(root, parent(first))
                .map_err(|e| Error::io("opening", *first, e))?;
            rfs::linkat(&ffd, base(first), &pfd, base(link), AtFlags::empty())
                .map_err(|e| Error::io("linking", link, e))?;
            continue;
        }
        let Below::Found(lpfd, st) = lowers.lookup(target_path)? else {
            return Err(Error::entry(
                link.to_string_lossy(),
                format!(
                    "hard link target {} is in neither this layer nor the layers below",
                    target_path.display()
                ),
            ));
        };
        if sys::file_type(&st) != FileType::RegularFile {
            return Err(Error::entry(
                link.to_string_lossy(),
                format!(
                    "hard link target {} below is not a regular file",
                    target_path.display()
                ),
            ));
        }
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
        let (src, dst) = (OwnedFd::from(src_file), OwnedFd::from(dst_file));
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

/// Whiteouts and opaque marks apply only to what the lowers show: drop
/// those that hide nothing, then the directories made only to hold them.
/// An opaque mark on the layer's root (which overlayfs ignores on a lower's
/// root) becomes a whiteout of each name the lowers show there.
fn drop_what_hides_nothing(root: &OwnedFd, fixups: &Fixups, lowers: &Lowers) -> Result<()> {
    let opaque: BTreeSet<&Path> = fixups.opaque_dirs.iter().map(PathBuf::as_path).collect();
    let mut emptied = BTreeSet::new();
    for wh in &fixups.whiteouts {
        let under_own_opaque = wh.ancestors().skip(1).any(|a| opaque.contains(a));
        if !under_own_opaque && matches!(lowers.lookup(wh)?, Below::Found(..)) {
            continue;
        }
        let pfd = sys::resolve_dir(root, parent(wh)).map_err(|e| Error::io("opening", wh, e))?;
        if sys::lstat_at(&pfd, base(wh))
            .map_err(|e| Error::io("reading", wh, e))?
            .is_some_and(|st| is_whiteout(&st))
        {
            rfs::unlinkat(&pfd, base(wh), AtFlags::empty())
                .map_err(|e| Error::io("dropping the whiteout", wh, e))?;
            emptied.insert(parent(wh).to_owned());
        }
    }
    // Implied directories left empty with nothing below: deepest first.
    let implied: BTreeSet<&Path> = fixups.implied_dirs.iter().map(PathBuf::as_path).collect();
    let mut doomed: Vec<&Path> = implied
        .iter()
        .copied()
        .filter(|d| emptied.iter().any(|e| e.starts_with(d)))
        .collect();
    doomed.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in doomed {
        if matches!(lowers.lookup(dir)?, Below::Found(..)) {
            continue;
        }
        let pfd = sys::resolve_dir(root, parent(dir)).map_err(|e| Error::io("opening", dir, e))?;
        match rfs::unlinkat(&pfd, base(dir), AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("dropping the empty directory", dir, e)),
        }
    }
    let prefixes = ["trusted.overlay.opaque", "user.overlay.opaque"];
    for dir in &fixups.opaque_dirs {
        let fd = match sys::resolve_read(root, dir) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        let at_root = dir.as_os_str().is_empty();
        let below = lowers.lookup(dir)?;
        let dir_below =
            matches!(&below, Below::Found(_, st) if sys::file_type(st) == FileType::Directory);
        if dir_below && at_root {
            hide_lower_root(&fd, lowers)?;
        }
        if !dir_below || at_root {
            for name in prefixes {
                match rfs::fremovexattr(&fd, name) {
                    Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                    Err(e) => return Err(Error::io("dropping the opaque mark of", dir, e)),
                }
            }
        }
    }
    Ok(())
}

/// The layer's root is opaque: every name the lowers show in the root is
/// whited out, and this layer's own top-level directories that are
/// directories below become opaque.
fn hide_lower_root(root: &OwnedFd, lowers: &Lowers) -> Result<()> {
    let opaque_name = if sys::xattrs(root)
        .map_err(|e| Error::io("reading xattrs of", "/", e))?
        .iter()
        .any(|(k, _)| k == "user.overlay.opaque")
    {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    };
    for name in lowers.root_names()? {
        let rel = Path::new(&name);
        match sys::lstat_at(root, &name).map_err(|e| Error::io("reading", rel, e))? {
            None => rfs::mknodat(
                root,
                &name,
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(|e| Error::io("creating the whiteout", rel, e))?,
            Some(st) if sys::file_type(&st) == FileType::Directory => {
                let fd = sys::open_nofollow(root, &name, true)
                    .map_err(|e| Error::io("opening", rel, e))?;
                rfs::fsetxattr(&fd, opaque_name, b"y", XattrFlags::empty())
                    .map_err(|e| Error::io("marking opaque", rel, e))?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}
