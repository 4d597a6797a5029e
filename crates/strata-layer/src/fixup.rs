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

use crate::engine::{MAX_SYMLINK_HOPS, link_destination};
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
                let opaque = opaque_xattr_of(&fd).is_some();
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
    copy_xattrs(&theirs, ours, rel)?;
    // The merged view shows this layer's directory: with the lower's mtime,
    // as a flattened tree keeps it (adding a child is not a change the
    // image made to the directory).
    rfs::futimens(
        ours,
        &sys::times(st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)),
    )
    .map_err(|e| Error::io("setting the mtime of", rel, e))
}

/// Completes an overlay-mode layer directory `target` whose extraction
/// reported `fixups`, given its lower layer directories, topmost first.
///
/// # Errors
/// When a lower cannot be read, or a hard link's target is not a regular
/// file in the merged view of the lowers.
/// `owners` says whether the copies get their lower's owner by `chown`
/// (else they keep the creator, and the lower's override record, if any,
/// comes with the xattrs).
pub fn fix_up(
    target: &Path,
    fixups: &mut Fixups,
    lowers_top_first: &[&Path],
    owners: crate::Owners,
) -> Result<()> {
    let root = sys::resolve_read(
        sys::open_root(target).map_err(|e| Error::io("opening", target, e))?,
        Path::new(""),
    )
    .map_err(|e| Error::io("opening", target, e))?;
    let lowers = Lowers::open(lowers_top_first)?;
    let as_root = owners == crate::Owners::Set;
    let moved_to = follow_lower_symlinks(&root, fixups, &lowers)?;
    let local = copy_lower_links(&root, fixups, &lowers, &moved_to, as_root)?;
    // Those are links inside the layer now: nothing to note for them.
    fixups.lower_links.retain(|(link, _)| !local.contains(link));
    let fixups = &*fixups;
    drop_what_hides_nothing(&root, fixups, &lowers)?;
    // Last, so that nothing above changes the mtimes set here.
    for dir in &fixups.implied_dirs {
        let Ok(ours) = sys::resolve_read(&root, dir) else {
            // Dropped above: it held only whiteouts that hid nothing.
            continue;
        };
        inherit_dir_metadata(&lowers, &ours, dir, as_root)?;
    }
    if !fixups.root_listed {
        inherit_dir_metadata(&lowers, &root, Path::new(""), as_root)?;
    }
    Ok(())
}

/// Where `path` leads in the merged tree of this layer over its lowers,
/// every symlink of either followed (inside the root, at most 40), the last
/// component included.
fn resolve_merged(root: &OwnedFd, lowers: &Lowers, path: &Path) -> Result<PathBuf> {
    let mut path = path.to_owned();
    let mut hops = 0;
    'restart: loop {
        let parts: Vec<&OsStr> = path.iter().collect();
        let mut done = PathBuf::new();
        for (i, part) in parts.iter().enumerate() {
            let here = done.join(part);
            let link = match sys::resolve_dir(root, &done)
                .ok()
                .and_then(|pfd| sys::lstat_at(&pfd, part).ok().flatten().map(|st| (pfd, st)))
            {
                // This layer holds the name: only its own symlink is followed.
                Some((pfd, st)) => (sys::file_type(&st) == FileType::Symlink)
                    .then(|| rfs::readlinkat(&pfd, *part, Vec::new()).ok())
                    .flatten(),
                None => match lowers.lookup(&here)? {
                    Below::Found(pfd, st) if sys::file_type(&st) == FileType::Symlink => {
                        rfs::readlinkat(&pfd, *part, Vec::new()).ok()
                    }
                    _ => None,
                },
            };
            if let Some(target) = link {
                if hops >= MAX_SYMLINK_HOPS {
                    return Err(Error::entry(
                        path.to_string_lossy(),
                        format!("more than {MAX_SYMLINK_HOPS} symlinks to follow (a loop?)"),
                    ));
                }
                hops += 1;
                let mut next = link_destination(&here, target.as_bytes())?;
                next.extend(&parts[i + 1..]);
                path = next;
                continue 'restart;
            }
            done = here;
        }
        return Ok(done);
    }
}

/// `path` after the moves made so far (each `(from, to)` in order).
fn moved(path: &Path, moves: &[(PathBuf, PathBuf)]) -> PathBuf {
    let mut path = path.to_owned();
    for (from, to) in moves {
        if let Ok(rest) = path.strip_prefix(from) {
            path = to.join(rest);
        }
    }
    path
}

/// A directory this layer implies where the lowers show a symlink (`lib/x`
/// over a lower `lib -> usr/lib`, the merged-/usr layout) would hide the
/// symlink's destination behind a real directory. flatten, umoci and
/// containerd follow the symlink, so its content moves to where the
/// symlink leads, and the symlink shows through again. Every path the
/// fix-up holds is rewritten to match.
fn follow_lower_symlinks(
    root: &OwnedFd,
    fixups: &mut Fixups,
    lowers: &Lowers,
) -> Result<Vec<PathBuf>> {
    let mut implied = fixups.implied_dirs.clone();
    implied.sort_by_key(|p| p.components().count());
    let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
    for dir in implied {
        let dir = moved(&dir, &moves);
        let Below::Found(pfd, st) = lowers.lookup(&dir)? else {
            continue;
        };
        if sys::file_type(&st) != FileType::Symlink {
            continue;
        }
        // A later entry of the layer may have replaced the directory.
        let Ok(ours) = sys::resolve_dir(root, parent(&dir))
            .and_then(|p| sys::open_nofollow(&p, base(&dir), true))
        else {
            continue;
        };
        let opaque = opaque_xattr_of(&ours);
        drop(ours);
        let target = rfs::readlinkat(&pfd, base(&dir), Vec::new())
            .map_err(|e| Error::io("reading the lower symlink", &dir, e))?;
        let dest = resolve_merged(root, lowers, &link_destination(&dir, target.as_bytes())?)?;
        let refuse = |why: &str| {
            Err(Error::entry(
                dir.to_string_lossy(),
                format!(
                    "a lower symlink leads to {}, {why}, as umoci refuses it",
                    dest.display()
                ),
            ))
        };
        if dest.starts_with(&dir) {
            return refuse("inside itself (a symlink loop)");
        }
        if let Below::Found(_, st) = lowers.lookup(&dest)?
            && sys::file_type(&st) != FileType::Directory
            && !in_layer_is_dir(root, &dest)
        {
            return refuse("which is not a directory");
        }
        make_dirs(root, &dest, fixups)?;
        if let Some(name) = opaque {
            // The marker was written through the symlink: it marks where
            // the symlink leads.
            let fd = sys::resolve_read(root, &dest).map_err(|e| Error::io("opening", &dest, e))?;
            rfs::fsetxattr(&fd, name, b"y", XattrFlags::empty())
                .map_err(|e| Error::io("marking opaque", &dest, e))?;
        }
        let pfd =
            sys::resolve_dir(root, parent(&dir)).map_err(|e| Error::io("opening", &dir, e))?;
        // Out of the way first when it would merge into its own ancestor
        // (`a -> ..`).
        let staged = parent(&dir).join(format!(".strata-moving-{}", std::process::id()));
        rfs::renameat(&pfd, base(&dir), &pfd, base(&staged))
            .map_err(|e| Error::io("moving", &dir, e))?;
        merge_into(root, &staged, &dest)?;
        rfs::unlinkat(&pfd, base(&staged), AtFlags::REMOVEDIR)
            .map_err(|e| Error::io("removing the moved directory", &dir, e))?;
        tracing::debug!(from = %dir.display(), to = %dest.display(), "followed a lower symlink");
        moves.push((dir, dest));
    }
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let gone: BTreeSet<&PathBuf> = moves.iter().map(|(from, _)| from).collect();
    fixups.implied_dirs = fixups
        .implied_dirs
        .iter()
        .filter(|d| !gone.contains(d))
        .map(|d| moved(d, &moves))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for (link, _) in &mut fixups.lower_links {
        *link = moved(link, &moves);
    }
    for path in &mut fixups.whiteouts {
        *path = moved(path, &moves);
    }
    for path in &mut fixups.opaque_dirs {
        *path = moved(path, &moves);
    }
    for dev in &mut fixups.zero_devices {
        dev.path = moved(&dev.path, &moves);
    }
    Ok(moves.into_iter().map(|(_, to)| to).collect())
}

/// The opaque xattr a directory carries (either namespace), if any.
fn opaque_xattr_of(fd: &OwnedFd) -> Option<&'static str> {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .into_iter()
        .find(|name| {
            let mut value = [0u8; 2];
            matches!(rfs::fgetxattr(fd, *name, &mut value), Ok(1) if value[0] == b'y')
        })
}

/// Whether this layer holds a directory at `rel` (resolved in the layer).
fn in_layer_is_dir(root: &OwnedFd, rel: &Path) -> bool {
    sys::resolve_dir(root, rel).is_ok()
}

/// Makes every missing directory of `dest` in this layer (each recorded as
/// implied, to take the lowers' metadata).
fn make_dirs(root: &OwnedFd, dest: &Path, fixups: &mut Fixups) -> Result<()> {
    let mut done = PathBuf::new();
    for part in dest {
        let pfd = sys::resolve_dir(root, &done).map_err(|e| Error::io("opening", &done, e))?;
        done.push(part);
        match sys::lstat_at(&pfd, part).map_err(|e| Error::io("reading", &done, e))? {
            Some(st) if sys::file_type(&st) == FileType::Directory => {}
            Some(st) if is_whiteout(&st) && fixups.whiteouts.contains(&done) => {
                // The layer deleted the destination and writes into it
                // through the symlink: delete, then recreate (an opaque,
                // new directory), as `.wh.d` then `d/x` is.
                rfs::unlinkat(&pfd, part, AtFlags::empty())
                    .map_err(|e| Error::io("replacing", &done, e))?;
                rfs::mkdirat(&pfd, part, Mode::from_raw_mode(0o755))
                    .map_err(|e| Error::io("creating", &done, e))?;
                let fd = sys::open_nofollow(&pfd, part, true)
                    .map_err(|e| Error::io("opening", &done, e))?;
                let name = format!("{}opaque", fixups.overlay_xattr.prefix());
                rfs::fsetxattr(&fd, name.as_str(), b"y", XattrFlags::empty())
                    .map_err(|e| Error::io("marking opaque", &done, e))?;
                fixups.whiteouts.retain(|w| *w != done);
                fixups.opaque_dirs.push(done.clone());
            }
            Some(_) => {
                return Err(Error::entry(
                    done.to_string_lossy(),
                    "a lower symlink leads here, but this layer holds a non-directory",
                ));
            }
            None => {
                rfs::mkdirat(&pfd, part, Mode::from_raw_mode(0o755))
                    .map_err(|e| Error::io("creating", &done, e))?;
                fixups.implied_dirs.push(done.clone());
            }
        }
    }
    Ok(())
}

/// Moves everything in this layer's `from` into its `to`, merging
/// directories; where both hold a name, what came through the symlink wins.
fn merge_into(root: &OwnedFd, from: &Path, to: &Path) -> Result<()> {
    let ffd = sys::resolve_read(root, from).map_err(|e| Error::io("opening", from, e))?;
    let tfd = sys::resolve_read(root, to).map_err(|e| Error::io("opening", to, e))?;
    for name in sys::list_dir(&ffd).map_err(|e| Error::io("listing", from, e))? {
        let (src, dst) = (from.join(&name), to.join(&name));
        let theirs = sys::lstat_at(&tfd, &name).map_err(|e| Error::io("reading", &dst, e))?;
        let ours = sys::lstat_at(&ffd, &name).map_err(|e| Error::io("reading", &src, e))?;
        let is_dir = |st: &Option<rfs::Stat>| {
            st.as_ref()
                .is_some_and(|st| sys::file_type(st) == FileType::Directory)
        };
        if is_dir(&theirs) && is_dir(&ours) {
            merge_into(root, &src, &dst)?;
            rfs::unlinkat(&ffd, &name, AtFlags::REMOVEDIR)
                .map_err(|e| Error::io("removing the moved directory", &src, e))?;
            continue;
        }
        if theirs.is_some() {
            sys::remove_all_at(&tfd, &name).map_err(|e| Error::io("replacing", &dst, e))?;
        }
        rfs::renameat(&ffd, &name, &tfd, &name).map_err(|e| Error::io("moving", &src, e))?;
    }
    Ok(())
}

/// Hard links to lower files become copies; links to one lower file stay
/// links to each other within this layer.
fn copy_lower_links(
    root: &OwnedFd,
    fixups: &Fixups,
    lowers: &Lowers,
    moved_to: &[PathBuf],
    as_root: bool,
) -> Result<Vec<PathBuf>> {
    let mut copied: HashMap<&Path, &Path> = HashMap::new();
    let mut local = Vec::new();
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
        // The target's parents as the merged tree resolves them (a lower
        // `lib -> usr/lib` followed).
        let real_target =
            resolve_merged(root, lowers, parent(target_path))?.join(base(target_path));
        // This layer may hold the target after all, where extraction could
        // not see it: written through a lower symlink (moved there above),
        // or at the path a lower symlink leads to. (At the literal path, the
        // layer's own file came after the link, which keeps the lower one.)
        let hidden_from_extraction =
            real_target != *target_path || moved_to.iter().any(|to| real_target.starts_with(to));
        if hidden_from_extraction
            && let Ok(tfd) = sys::resolve_dir(root, parent(&real_target))
            && sys::lstat_at(&tfd, base(&real_target))
                .ok()
                .flatten()
                .is_some_and(|st| !is_whiteout(&st) && sys::file_type(&st) != FileType::Directory)
        {
            rfs::linkat(&tfd, base(&real_target), &pfd, base(link), AtFlags::empty())
                .map_err(|e| Error::io("linking", link, e))?;
            local.push(link.clone());
            continue;
        }
        let Below::Found(lpfd, st) = lowers.lookup(&real_target)? else {
            return Err(Error::entry(
                link.to_string_lossy(),
                format!(
                    "hard link target {} is in neither this layer nor the layers below",
                    target_path.display()
                ),
            ));
        };
        copy_node(&lpfd, target_path, &st, &pfd, link, as_root)?;
        copied.insert(target_path, link);
    }
    Ok(local)
}

/// Makes `link` in this layer a copy of the lower node `target` (a file's
/// bytes, a symlink's target, a fifo or device) with its owner, mode,
/// xattrs and mtime: the overlay form of a hard link across layers.
fn copy_node(
    lpfd: &OwnedFd,
    target: &Path,
    st: &rfs::Stat,
    pfd: &OwnedFd,
    link: &Path,
    as_root: bool,
) -> Result<()> {
    let kind = sys::file_type(st);
    let name = base(link);
    match kind {
        FileType::RegularFile => {
            let src = sys::open_nofollow(lpfd, base(target), false)
                .map_err(|e| Error::io("opening", target, e))?;
            let dst = rfs::openat(
                pfd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| Error::io("creating", link, e))?;
            let (mut src_file, mut dst_file) = (std::fs::File::from(src), std::fs::File::from(dst));
            std::io::copy(&mut src_file, &mut dst_file)
                .map_err(|e| Error::io("copying into", link, e))?;
            // Owner, then mode (chown clears setuid), then xattrs (chown
            // clears security.capability), then times.
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
            return rfs::futimens(
                &dst,
                &sys::times(st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)),
            )
            .map_err(|e| Error::io("setting the mtime of", link, e));
        }
        FileType::Symlink => {
            let to = rfs::readlinkat(lpfd, base(target), Vec::new())
                .map_err(|e| Error::io("reading", target, e))?;
            rfs::symlinkat(to.as_c_str(), pfd, name)
                .map_err(|e| Error::io("creating the symlink", link, e))?;
        }
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
            rfs::mknodat(pfd, name, kind, Mode::empty(), st.st_rdev)
                .map_err(|e| Error::io("creating", link, e))?;
        }
        _ => {
            return Err(Error::entry(
                link.to_string_lossy(),
                format!("hard link target {} below is a directory", target.display()),
            ));
        }
    }
    if as_root {
        rfs::chownat(
            pfd,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("setting the owner of", link, e))?;
    }
    if kind != FileType::Symlink {
        rfs::chmodat(
            pfd,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| Error::io("setting the mode of", link, e))?;
    }
    rfs::utimensat(
        pfd,
        name,
        &sys::times(st.st_mtime, u32::try_from(st.st_mtime_nsec).unwrap_or(0)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io("setting the mtime of", link, e))
}

/// Whiteouts and opaque marks apply only to what the lowers show: drop
/// those that hide nothing, then the directories made only to hold them.
/// An opaque mark on the layer's root (which overlayfs ignores on a lower's
/// root) becomes a whiteout of each name the lowers show there.
fn drop_what_hides_nothing(root: &OwnedFd, fixups: &Fixups, lowers: &Lowers) -> Result<()> {
    let opaque: BTreeSet<&Path> = fixups.opaque_dirs.iter().map(PathBuf::as_path).collect();
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
        }
    }
    // Implied directories left empty (they held only whiteouts or an opaque
    // mark) where the lowers show no directory (none there, or one this
    // layer's opaque directory above hides): deepest first. Otherwise the
    // layer would make a directory that hides a lower file, or that no
    // entry made.
    let mut doomed: Vec<&Path> = fixups.implied_dirs.iter().map(PathBuf::as_path).collect();
    doomed.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in doomed {
        let under_own_opaque = dir.ancestors().skip(1).any(|a| opaque.contains(a));
        if !under_own_opaque
            && matches!(lowers.lookup(dir)?, Below::Found(_, st) if sys::file_type(&st) == FileType::Directory)
        {
            continue;
        }
        let Ok(pfd) = sys::resolve_dir(root, parent(dir)) else {
            continue;
        };
        match rfs::unlinkat(&pfd, base(dir), AtFlags::REMOVEDIR) {
            Ok(())
            | Err(
                rustix::io::Errno::NOTEMPTY
                | rustix::io::Errno::EXIST
                | rustix::io::Errno::NOENT
                | rustix::io::Errno::NOTDIR,
            ) => {}
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
            hide_lower_root(&fd, lowers, fixups.overlay_xattr)?;
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
fn hide_lower_root(root: &OwnedFd, lowers: &Lowers, xattr: crate::OverlayXattr) -> Result<()> {
    let opaque_name = format!("{}opaque", xattr.prefix());
    let opaque_name = opaque_name.as_str();
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
