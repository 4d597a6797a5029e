//! The extraction engine: entries in, files out, in overlay or apply mode.
//!
//! Order of metadata for every entry: create, chown, chmod (after chown,
//! which clears setuid), xattrs (after chown, which clears capabilities),
//! mtime last. Directories get their mode and mtime at the very end, after
//! their content, so a read-only directory can still be filled and keeps the
//! mtime the tar gave it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode as FsMode, XattrFlags};
use tracing::warn;

use crate::entry::{Entry, EntrySource, Kind};
use crate::fanout::{self, Fanout};
use crate::names::{Name, clean};
use crate::regular::XattrsKnown;
use crate::regular::{FileRules, NewFile, gid, uid};
use crate::tree::WrittenFiles;
use crate::{Error, Fixups, Mode, Options, OverlayXattr, Owners, Result, Summary, sys};

const COPY_BUFFER: usize = 256 << 10;
/// Symlinks followed to resolve one path (the kernel's `MAXSYMLINKS`).
pub(crate) const MAX_SYMLINK_HOPS: u32 = 40;

/// Where a symlink at `link` (relative to the root) points, as a path
/// relative to the root: absolute targets start at the root, and `..` never
/// climbs above it.
pub(crate) fn link_destination(link: &Path, target: &[u8]) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if target.starts_with(b"/") {
        return clean(target);
    }
    let mut joined = parent(link).as_os_str().as_bytes().to_vec();
    joined.push(b'/');
    joined.extend_from_slice(target);
    clean(&joined)
}

pub(crate) struct Writer<'o> {
    root: OwnedFd,
    opts: &'o Options,
    /// Small regular files in flight on the writer pool, and the rules
    /// every file of the layer is written with.
    fanout: Fanout,
    /// Paths this layer wrote, and their ancestors. In apply mode they are
    /// the resolved paths (a symlinked parent followed), so that an opaque
    /// marker or a whiteout of the real path keeps what was written through
    /// the symlink. Kept by [`crate::tree::key`], not as paths: a layer may
    /// hold millions.
    touched: HashSet<[u8; 16]>,
    /// The directory of the last path touched, spelled plain: it and every
    /// directory above it are in `touched`.
    touched_dir: Option<Vec<u8>>,
    /// The target's own path, to make descriptor paths relative to it.
    root_path: Option<PathBuf>,
    /// Apply mode: the last lexical parent and where it resolved.
    parent_cache: Option<(PathBuf, PathBuf)>,
    /// Overlay mode: whiteout devices this layer made.
    whiteouts: BTreeSet<PathBuf>,
    /// Apply mode: directories to empty of lower content at the end.
    opaque: Vec<PathBuf>,
    /// Directories whose mode and mtime are set at the end: the last entry
    /// for a path wins, and it lands only on the directory that entry made
    /// (checked by inode, never through a symlink a later entry put there).
    dirs: BTreeMap<PathBuf, DirMeta>,
    /// Overlay mode: real char 0:0 devices (the form cannot tell them from
    /// whiteouts, so they are reported in the summary, not made).
    zero_devices: Vec<crate::ZeroDevice>,
    /// Overlay mode: directories marked opaque.
    opaque_dirs: BTreeSet<PathBuf>,
    /// Whether the layer listed its root (`./`).
    root_listed: bool,
    /// Overlay mode: whether this layer made a symlink. Until it does, a
    /// lexical path is where the entry lands (the lowers' symlinks are not in
    /// the directory); after, paths are resolved as in apply mode, so that
    /// what the fix-up asks the lowers about is the real directory.
    layer_symlinks: bool,
    /// Set while making the parents of a whiteout: such directories are not
    /// "written by this layer" (a later whiteout of them deletes them).
    for_whiteout: bool,
    /// Apply mode: the mtimes of lower directories this layer changes
    /// without listing them (by inode, with a path), restored at the end as
    /// umoci restores them: adding or deleting a child is not a change the
    /// image made to the directory.
    parent_mtimes: HashMap<(u64, u64), (PathBuf, rfs::Timespec)>,
    /// The directory whose mtime was remembered last (skips a stat for
    /// consecutive entries of one directory).
    last_parent: Option<PathBuf>,
    implied: BTreeSet<PathBuf>,
    lower_links: Vec<(PathBuf, PathBuf)>,
    summary: Summary,
    warned_devices: bool,
    buffer: Vec<u8>,
    /// The files written, when the options ask for their hashes.
    content: Option<WrittenFiles>,
    /// How a written file's xattrs are known (when hashing): decided for the
    /// target at the start, and read back for the rest of the layer once an
    /// entry other than a file sets one the kernel may not keep as set (a
    /// default ACL, which the files below it would inherit).
    xattrs_known: XattrsKnown,
    /// The directory consecutive regular files go into: its descriptor,
    /// where it landed, whether it is setgid (new files take its group).
    /// Dropped at any other entry, which may change or remove directories.
    file_parent: Option<FileParent>,
}

/// The parent directory of consecutive regular-file entries, kept open.
struct FileParent {
    lexical: PathBuf,
    fd: std::sync::Arc<OwnedFd>,
    landed: Option<PathBuf>,
    setgid: bool,
}

/// A directory's deferred metadata, and which directory it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirMeta {
    mode: u32,
    mtime: i64,
    mtime_nsec: u32,
    inode: (u64, u64),
}

fn base(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new("."))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

impl<'o> Writer<'o> {
    pub(crate) fn new(target: &Path, opts: &'o Options) -> Result<Self> {
        let root = sys::open_root(target)
            .map_err(|e| Error::io("opening the target directory", target, e))?;
        let root_path = sys::fd_path(&root);
        let xattrs_known = if opts.content_hashes && sys::new_files_get_no_xattrs(&root) {
            XattrsKnown::AsSet
        } else {
            XattrsKnown::ReadBack
        };
        Ok(Self {
            // Without `/proc` no path can be resolved through a symlink, so
            // two spellings of one file could not be told apart: every file
            // is then written here, in order.
            fanout: Fanout::new(FileRules::new(*opts), root_path.is_some()),
            root_path,
            root,
            opts,
            touched: HashSet::new(),
            touched_dir: None,
            parent_cache: None,
            whiteouts: BTreeSet::new(),
            opaque: Vec::new(),
            dirs: BTreeMap::new(),
            zero_devices: Vec::new(),
            opaque_dirs: BTreeSet::new(),
            root_listed: false,
            for_whiteout: false,
            layer_symlinks: false,
            parent_mtimes: HashMap::new(),
            last_parent: None,
            implied: BTreeSet::new(),
            lower_links: Vec::new(),
            summary: Summary::default(),
            warned_devices: false,
            buffer: vec![0; COPY_BUFFER],
            content: opts.content_hashes.then(WrittenFiles::default),
            xattrs_known,
            file_parent: None,
        })
    }

    /// Consumes every entry of `source`, then finishes the layer.
    pub(crate) fn run(mut self, source: &mut dyn EntrySource) -> Result<Summary> {
        if let Err(e) = source.visit(&mut |entry, data| self.entry(entry, data)) {
            // A file on the pool that failed came earlier in the layer: its
            // error is the one a one-by-one extraction would have met.
            return Err(self.fanout.settle().err().unwrap_or(e));
        }
        self.finish()
    }

    /// Whether an entry at `lexical`, landing at `resolved`, must wait for
    /// the files in flight: it could touch one (the same path, below one,
    /// a directory above one), or its path goes through a symlink, which a
    /// file in flight may be about to replace.
    fn must_wait(&self, lexical: &Path, resolved: &Path) -> bool {
        self.fanout.in_flight()
            && (self.fanout.conflicts(resolved)
                || (self.resolves() && parent(resolved) != parent(lexical)))
    }

    /// Apply mode: `dir` resolved through every symlink, as a path relative
    /// to the target; overlay mode (and without `/proc`): `dir` itself.
    fn resolved_dir(&self, dir: &Path) -> PathBuf {
        if !self.resolves() || dir.as_os_str().is_empty() {
            return dir.to_owned();
        }
        // The longest part that exists, resolved; the rest does not exist yet.
        let mut existing = dir;
        loop {
            if let Ok(fd) = sys::resolve_dir(&self.root, existing) {
                return self.path_in_root(&fd).map_or_else(
                    || dir.to_owned(),
                    |real| real.join(dir.strip_prefix(existing).unwrap_or(Path::new(""))),
                );
            }
            match existing.parent() {
                Some(up) if !up.as_os_str().is_empty() => existing = up,
                _ => return dir.to_owned(),
            }
        }
    }

    /// Whether lexical paths must be resolved to be where entries land.
    fn resolves(&self) -> bool {
        self.opts.mode == Mode::Apply || self.layer_symlinks
    }

    /// Where `name` in the open directory `pfd` is, relative to the root
    /// (`lexical` when paths need no resolving).
    fn landed(&self, pfd: &OwnedFd, lexical: &Path) -> PathBuf {
        if !self.resolves() {
            return lexical.to_owned();
        }
        self.path_in_root(pfd)
            .map_or_else(|| lexical.to_owned(), |dir| dir.join(base(lexical)))
    }

    /// Where an open file of the target is, relative to the target root.
    fn path_in_root(&self, fd: &OwnedFd) -> Option<PathBuf> {
        let full = sys::fd_path(fd)?;
        full.strip_prefix(self.root_path.as_deref()?)
            .ok()
            .map(Path::to_owned)
    }

    /// Apply mode: `path` with its parent resolved (the last component is
    /// never followed), cached for consecutive entries of one directory;
    /// `path` itself where paths need no resolving.
    fn resolved<'p>(&mut self, path: &'p Path) -> Cow<'p, Path> {
        if !self.resolves() || path.as_os_str().is_empty() {
            return Cow::Borrowed(path);
        }
        let lexical = parent(path);
        if let Some((cached, real)) = &self.parent_cache
            && cached == lexical
        {
            return Cow::Owned(real.join(base(path)));
        }
        let real = self.resolved_dir(lexical);
        let out = real.join(base(path));
        self.parent_cache = Some((lexical.to_owned(), real));
        Cow::Owned(out)
    }

    /// Records that this layer wrote `path` (and so every directory above
    /// it); returns whether `path` itself is new to the record.
    fn touch(&mut self, path: &Path) -> bool {
        if !self.touched.insert(crate::tree::key(path)) {
            return false;
        }
        // Consecutive entries of one directory: it is recorded already.
        let bytes = path.as_os_str().as_bytes();
        let plain_parent = crate::tree::is_plain(bytes)
            .then(|| &bytes[..bytes.iter().rposition(|b| *b == b'/').unwrap_or(0)]);
        if plain_parent.is_some() && plain_parent == self.touched_dir.as_deref() {
            return true;
        }
        let mut p = path.parent();
        while let Some(q) = p {
            if !self.touched.insert(crate::tree::key(q)) {
                break;
            }
            p = q.parent();
        }
        self.touched_dir = plain_parent.map(<[u8]>::to_vec);
        true
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        self.summary.entries += 1;
        if self.summary.entries > self.opts.max_entries {
            return Err(Error::LimitExceeded {
                what: "entries",
                limit: self.opts.max_entries,
            });
        }
        let label = entry.label();
        if entry.kind != Kind::File {
            self.file_parent = None;
        }
        if !matches!(entry.kind, Kind::File | Kind::Dir) {
            // Links, whiteouts, markers and nodes may touch any path: the
            // files in flight land first.
            self.settle()?;
        }
        match entry.meaning()? {
            (_, Name::Opaque(dir)) => self.opaque_marker(&dir, &label),
            (_, Name::Whiteout(target)) => self.whiteout(&target, &label),
            (_, Name::AufsMeta) => Ok(()),
            (path, Name::Plain) => self.write(&path, entry, data, &label),
        }
    }

    /// Opens directory `rel`, creating it and any missing parents (0755,
    /// root) when absent. Overlay mode records such directories so that the
    /// fix-up can give them the metadata the same path has below.
    fn ensure_dir(&mut self, rel: &Path, label: &str) -> Result<OwnedFd> {
        self.ensure_dir_following(rel, label, 0)
    }

    /// [`Self::ensure_dir`], `hops` symlinks to missing directories deep.
    fn ensure_dir_following(&mut self, rel: &Path, label: &str, hops: u32) -> Result<OwnedFd> {
        match sys::resolve_dir(&self.root, rel) {
            Ok(fd) => return Ok(fd),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc_enotdir()) => {}
            Err(e) => return Err(Error::io("opening", rel, e)),
        }
        // Something in the way or missing: decided on the tree as the
        // entries before this one left it (a file in flight may be it).
        if self.settle()? {
            return self.ensure_dir_following(rel, label, hops);
        }
        if rel.as_os_str().is_empty() {
            return Err(Error::io(
                "opening",
                rel,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        // The parent first (it may be the one in the way), then this name.
        let pfd = self.ensure_dir_following(parent(rel), label, hops)?;
        let Some(st) = sys::lstat_at(&pfd, base(rel)).map_err(|e| Error::io("reading", rel, e))?
        else {
            return self.make_implied(&pfd, rel);
        };
        match sys::file_type(&st) {
            FileType::Directory => {
                sys::open_nofollow(&pfd, base(rel), true).map_err(|e| Error::io("opening", rel, e))
            }
            FileType::CharacterDevice
                if self.opts.mode == Mode::Overlay && self.whiteouts.remove(rel) =>
            {
                // `.wh.d` then `d/x` in one layer: d is recreated, opaque;
                // a new directory, so it takes nothing from below (and is
                // never moved to where a lower symlink `d` led).
                rfs::unlinkat(&pfd, base(rel), AtFlags::empty())
                    .map_err(|e| Error::io("replacing", rel, e))?;
                let fd = self.make_implied(&pfd, rel)?;
                self.implied.remove(rel);
                self.set_opaque(&fd, rel)?;
                Ok(fd)
            }
            FileType::Symlink if hops < MAX_SYMLINK_HOPS => {
                // A symlink to a directory that does not exist: as umoci and
                // Docker do, the directory is made at the link's destination,
                // inside the root.
                let target = rfs::readlinkat(&pfd, base(rel), Vec::new())
                    .map_err(|e| Error::io("reading", rel, e))?;
                let dest = link_destination(rel, target.as_bytes())?;
                self.ensure_dir_following(&dest, label, hops + 1)?;
                sys::resolve_dir(&self.root, rel).map_err(|e| Error::io("opening", rel, e))
            }
            _ => Err(Error::entry(
                label,
                format!("{} is not a directory", rel.display()),
            )),
        }
    }

    fn make_implied(&mut self, pfd: &OwnedFd, rel: &Path) -> Result<OwnedFd> {
        match rfs::mkdirat(pfd, base(rel), FsMode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(e) => return Err(Error::io("creating", rel, e)),
        }
        let fd =
            sys::open_nofollow(pfd, base(rel), true).map_err(|e| Error::io("opening", rel, e))?;
        rfs::fchmod(&fd, FsMode::from_raw_mode(0o755))
            .map_err(|e| Error::io("setting the mode of", rel, e))?;
        if self.opts.mode == Mode::Overlay {
            let at = self.landed(pfd, rel);
            self.implied.insert(at);
        }
        self.parent_cache = None;
        self.last_parent = None;
        if !self.for_whiteout {
            let made = self.resolved(rel).into_owned();
            self.touch(&made);
        }
        Ok(fd)
    }

    fn set_opaque(&mut self, fd: &OwnedFd, rel: &Path) -> Result<()> {
        self.opaque_dirs.insert(rel.to_owned());
        let name = format!("{}opaque", self.opts.overlay_xattr.prefix());
        rfs::fsetxattr(fd, name.as_str(), b"y", XattrFlags::empty())
            .map_err(|e| Error::io("marking opaque", rel, e))
    }

    /// Overlay mode: forgets what the layer recorded at and below `path`,
    /// which an entry of the layer replaces: an implied directory there no
    /// longer takes a lower one's metadata (it would land on the file that
    /// replaced it), and a whiteout or an opaque mark went with it.
    fn forget_replaced(&mut self, path: &Path) {
        for set in [
            &mut self.implied,
            &mut self.whiteouts,
            &mut self.opaque_dirs,
        ] {
            if !set.is_empty() {
                remove_tree(set, path);
            }
        }
    }

    fn opaque_marker(&mut self, dir: &Path, label: &str) -> Result<()> {
        self.summary.opaque_dirs += 1;
        let no_dir = match self.opts.mode {
            Mode::Apply => sys::resolve_dir(&self.root, dir).is_err(),
            // A lower directory may be there, unless a non-directory of
            // this layer (a file, a whiteout) is in the way.
            Mode::Overlay => hidden_by_a_non_dir(&self.root, dir),
        };
        if no_dir {
            // No directory there (nothing, or a file): the marker hides
            // nothing and makes nothing, as umoci's.
            return Ok(());
        }
        // Not touched (as for a whiteout's parents): a marker writes nothing
        // of its own, and a directory whose only entry is its marker goes
        // with a whiteout of it, or an opaque parent, later in the layer
        // (as in umoci, which takes entries in order).
        self.for_whiteout = true;
        let made = self.ensure_dir(dir, label);
        self.for_whiteout = false;
        made?;
        let dir = &self.resolved_dir(dir);
        match self.opts.mode {
            Mode::Overlay => {
                let fd =
                    sys::resolve_read(&self.root, dir).map_err(|e| Error::io("opening", dir, e))?;
                // Recorded where it is (through this layer's symlinks), so
                // that the fix-up asks the lowers about that directory.
                let at = self.path_in_root(&fd).unwrap_or_else(|| dir.to_owned());
                self.set_opaque(&fd, &at)
            }
            // Deferred: an opaque marker acts as if it came first in the layer.
            Mode::Apply => {
                self.opaque.push(dir.to_owned());
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, target: &Path, label: &str) -> Result<()> {
        self.summary.whiteouts += 1;
        self.parent_cache = None;
        self.last_parent = None;
        let target = &self.resolved(target).into_owned();
        let is_dir = |pfd: &OwnedFd| {
            sys::lstat_at(pfd, base(target))
                .ok()
                .flatten()
                .is_some_and(|st| sys::file_type(&st) == FileType::Directory)
        };
        if self.touched.contains(&crate::tree::key(target)) {
            // This layer wrote the path: it stays; only what is below goes.
            let Ok(pfd) = sys::resolve_dir(&self.root, parent(target)) else {
                return Ok(());
            };
            if is_dir(&pfd) {
                match self.opts.mode {
                    Mode::Overlay => {
                        let fd = sys::open_nofollow(&pfd, base(target), true)
                            .map_err(|e| Error::io("opening", target, e))?;
                        self.set_opaque(&fd, target)?;
                    }
                    Mode::Apply => self.clear_lower(target)?,
                }
            }
            return Ok(());
        }
        match self.opts.mode {
            Mode::Apply => {
                let pfd = match sys::resolve_dir(&self.root, parent(target)) {
                    Ok(fd) => fd,
                    // Nothing below to delete.
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc_enotdir()) =>
                    {
                        return Ok(());
                    }
                    Err(e) => return Err(Error::io("opening", parent(target), e)),
                };
                self.keep_parent_mtime(&pfd, parent(target));
                sys::remove_all_at(&pfd, base(target)).map_err(|e| Error::io("deleting", target, e))
            }
            Mode::Overlay => {
                if hidden_by_a_non_dir(&self.root, parent(target)) {
                    // A file (or a whiteout) this layer put above the
                    // target hides everything below it already.
                    return Ok(());
                }
                self.for_whiteout = true;
                let pfd = self.ensure_dir(parent(target), label);
                self.for_whiteout = false;
                let pfd = pfd?;
                let target = &self.landed(&pfd, target);
                if self.whiteouts.contains(target) {
                    return Ok(());
                }
                if sys::lstat_at(&pfd, base(target))
                    .map_err(|e| Error::io("reading", target, e))?
                    .is_some()
                {
                    // A directory made only to hold earlier whiteouts (this
                    // layer wrote nothing there): the whiteout of the whole
                    // directory replaces them.
                    sys::remove_all_at(&pfd, base(target))
                        .map_err(|e| Error::io("replacing", target, e))?;
                    self.forget_replaced(target);
                }
                rfs::mknodat(
                    &pfd,
                    base(target),
                    FileType::CharacterDevice,
                    FsMode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(|e| Error::io("creating the whiteout", target, e))?;
                self.whiteouts.insert(target.to_owned());
                Ok(())
            }
        }
    }

    /// Apply mode: removes from `dir` everything this layer did not write.
    fn clear_lower(&mut self, dir: &Path) -> Result<()> {
        let fd = sys::resolve_read(&self.root, dir).map_err(|e| Error::io("opening", dir, e))?;
        self.keep_parent_mtime(&fd, dir);
        for name in sys::list_dir(&fd).map_err(|e| Error::io("listing", dir, e))? {
            let child = dir.join(&name);
            if self.touched.contains(&crate::tree::key(&child)) {
                let st = sys::lstat_at(&fd, &name).map_err(|e| Error::io("reading", &child, e))?;
                if st.is_some_and(|st| sys::file_type(&st) == FileType::Directory) {
                    self.clear_lower(&child)?;
                }
            } else {
                sys::remove_all_at(&fd, &name).map_err(|e| Error::io("deleting", &child, e))?;
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        path: &Path,
        entry: &Entry,
        data: &mut dyn Read,
        label: &str,
    ) -> Result<()> {
        if path.as_os_str().is_empty() {
            if entry.kind != Kind::Dir {
                return Err(Error::entry(
                    label,
                    "it would replace the layer's root directory with a non-directory",
                ));
            }
            self.settle()?;
            let fd =
                sys::resolve_read(&self.root, path).map_err(|e| Error::io("opening", "/", e))?;
            self.own(&fd, entry, path)?;
            self.set_xattrs(&fd, entry, path)?;
            self.defer_dir_metadata(&fd, path, entry)?;
            self.root_listed = true;
            return Ok(());
        }
        if entry.kind == Kind::File {
            return self.write_file(path, entry, data, label);
        }
        let at = self.resolved(path).into_owned();
        if self.must_wait(path, &at) {
            // A directory where a file in flight lands, above one, or
            // through a symlink.
            self.settle()?;
        }
        let pfd = self.ensure_dir(parent(path), label)?;
        self.keep_parent_mtime(&pfd, parent(path));
        let landed;
        let path = if self.opts.mode == Mode::Overlay && self.layer_symlinks {
            landed = self.landed(&pfd, path);
            &landed
        } else {
            path
        };
        let name = base(path);
        let existing = sys::lstat_at(&pfd, name).map_err(|e| Error::io("reading", path, e))?;
        let mut make_opaque = false;
        if self.opts.mode == Mode::Overlay && self.whiteouts.remove(path) {
            make_opaque = entry.kind == Kind::Dir;
        }
        let existing_dir = existing
            .as_ref()
            .is_some_and(|st| sys::file_type(st) == FileType::Directory);
        let keep_dir = entry.kind == Kind::Dir && existing_dir;
        if self.opts.mode == Mode::Overlay
            && entry.kind == Kind::Dir
            && !existing_dir
            && (existing.is_some() || self.lower_links.iter().any(|(link, _)| link == path))
        {
            // A directory over a file (a link, a node) of this layer: the
            // file replaced what the lowers had there, so the directory is
            // a new one, showing none of it.
            make_opaque = true;
        }
        if existing.is_some() && !keep_dir {
            sys::remove_all_at(&pfd, name).map_err(|e| Error::io("replacing", path, e))?;
            if self.opts.mode == Mode::Overlay {
                self.forget_replaced(path);
            }
            self.forget_dirs(path);
        }
        if let Some(content) = &mut self.content {
            content.remove(path);
        }
        if !self.lower_links.is_empty() {
            // A later entry of the same name replaces a link to a lower file.
            self.lower_links.retain(|(link, _)| link != path);
        }
        match &entry.kind {
            Kind::Hardlink(target) => {
                let mut target = clean(target)?;
                if self.opts.mode == Mode::Overlay && self.layer_symlinks {
                    target = self.resolved(&target).into_owned();
                }
                if target.as_os_str().is_empty() {
                    return Err(Error::entry(label, "a hard link to the root directory"));
                }
                if self.opts.mode == Mode::Overlay
                    && target.ancestors().any(|a| self.whiteouts.contains(a))
                {
                    return Err(Error::entry(
                        label,
                        format!(
                            "hard link target {} was deleted by this layer",
                            target.display()
                        ),
                    ));
                }
                if self.opts.mode == Mode::Overlay && !self.in_this_layer(&target) {
                    // The target is in a lower layer (or is a link to one):
                    // copied in by the fix-up.
                    let target = self
                        .lower_links
                        .iter()
                        .find(|(link, _)| *link == target)
                        .map_or(target, |(_, lower)| lower.clone());
                    self.lower_links.push((path.to_owned(), target));
                    self.touch(path);
                    return Ok(());
                }
                let tfd = sys::resolve_dir(&self.root, parent(&target)).map_err(|e| {
                    Error::entry(
                        label,
                        format!("hard link target {} is missing: {e}", target.display()),
                    )
                })?;
                rfs::linkat(&tfd, base(&target), &pfd, name, AtFlags::empty()).map_err(|e| {
                    Error::entry(
                        label,
                        format!(
                            "hard link to {} failed: {}",
                            target.display(),
                            io::Error::from(e)
                        ),
                    )
                })?;
                if let Some(content) = &mut self.content
                    && let Some(file) = content.get(&target).cloned()
                {
                    // The same node under another name.
                    content.insert(path, file);
                }
            }
            Kind::File => unreachable!("regular files take write_file"),
            Kind::Dir => {
                if !keep_dir {
                    rfs::mkdirat(&pfd, name, FsMode::from_raw_mode(0o700))
                        .map_err(|e| Error::io("creating", path, e))?;
                }
                let fd = sys::open_nofollow(&pfd, name, true)
                    .map_err(|e| Error::io("opening", path, e))?;
                self.own(&fd, entry, path)?;
                self.set_xattrs(&fd, entry, path)?;
                if make_opaque {
                    self.set_opaque(&fd, path)?;
                }
                self.implied.remove(path);
                self.defer_dir_metadata(&fd, path, entry)?;
            }
            Kind::Symlink(target) => {
                rfs::symlinkat(target.as_path(), &pfd, name)
                    .map_err(|e| Error::io("creating the symlink", path, e))?;
                if self.opts.mode == Mode::Overlay {
                    self.layer_symlinks = true;
                    self.parent_cache = None;
                }
                if self.opts.owners == Owners::Set {
                    rfs::chownat(
                        &pfd,
                        name,
                        uid(entry.uid),
                        gid(entry.gid),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| Error::io("setting the owner of", path, e))?;
                }
                rfs::utimensat(
                    &pfd,
                    name,
                    &sys::times(entry.mtime, entry.mtime_nsec),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("setting the mtime of", path, e))?;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                if !self.opts.devices {
                    self.summary.skipped += 1;
                    if !self.warned_devices {
                        warn!(
                            entry = label,
                            "skipping device nodes: only root outside a user namespace can make them"
                        );
                        self.warned_devices = true;
                    }
                    return Ok(());
                }
                if self.opts.mode == Mode::Overlay && entry.kind == Kind::Char(0, 0) {
                    warn!(
                        entry = label,
                        "a real char 0:0 device would act as a whiteout in an overlay: the mount lacks it, flatten makes it"
                    );
                    self.zero_devices.push(crate::ZeroDevice {
                        path: path.to_owned(),
                        mode: entry.mode,
                        uid: entry.uid,
                        gid: entry.gid,
                        mtime: entry.mtime,
                    });
                    self.touch(path);
                    return Ok(());
                }
                let kind = if matches!(entry.kind, Kind::Char(..)) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                rfs::mknodat(
                    &pfd,
                    name,
                    kind,
                    FsMode::empty(),
                    rfs::makedev(*major, *minor),
                )
                .map_err(|e| Error::io("creating the device", path, e))?;
                self.node_metadata(&pfd, path, entry)?;
            }
            Kind::Whiteout | Kind::Opaque => unreachable!("dispatched in entry()"),
            Kind::Fifo => {
                rfs::mknodat(&pfd, name, FileType::Fifo, FsMode::empty(), 0)
                    .map_err(|e| Error::io("creating the fifo", path, e))?;
                self.node_metadata(&pfd, path, entry)?;
            }
        }
        let written = self.resolved(path).into_owned();
        if entry.kind != Kind::File {
            // A new directory or symlink may change where a parent resolves.
            self.parent_cache = None;
            self.last_parent = None;
        }
        self.touch(&written);
        Ok(())
    }

    /// A regular file, in as few calls as its guarantees allow: the parent
    /// kept open across consecutive files of one directory, no existence
    /// probe (an exclusive create, and only on `EEXIST` the old entry is
    /// looked at and replaced), the final mode given at creation when the
    /// umask leaves it whole, no `fchown` when the creator's owner is the
    /// entry's, the times set on the open descriptor.
    fn write_file(
        &mut self,
        path: &Path,
        entry: &Entry,
        data: &mut dyn Read,
        label: &str,
    ) -> Result<()> {
        // Where it lands, every link followed; the same path in flight (or
        // one it would replace or be under) lands first.
        let mut written = self.resolved(path);
        if (self.must_wait(path, &written) || self.fanout.is_full()) && self.settle()? {
            // What the caches say was decided before those files landed.
            return self.write_file(path, entry, data, label);
        }
        let lexical_parent = parent(path);
        let cached = self
            .file_parent
            .as_ref()
            .is_some_and(|p| p.lexical == lexical_parent);
        if !cached {
            let fd = self.ensure_dir(lexical_parent, label)?;
            let landed = (self.opts.mode == Mode::Overlay && self.layer_symlinks)
                .then(|| self.path_in_root(&fd))
                .flatten();
            let setgid = rfs::fstat(&fd).is_ok_and(|st| st.st_mode & 0o2000 != 0);
            self.file_parent = Some(FileParent {
                lexical: lexical_parent.to_owned(),
                fd: std::sync::Arc::new(fd),
                landed,
                setgid,
            });
            // Making the parent may have moved where it resolves.
            written = self.resolved(path);
        }
        let (pfd, landed_dir, setgid) = {
            let p = self.file_parent.as_ref().expect("set above");
            (p.fd.clone(), p.landed.clone(), p.setgid)
        };
        self.keep_parent_mtime(&pfd, lexical_parent);
        let landed;
        let path = match &landed_dir {
            Some(dir) => {
                landed = dir.join(base(path));
                &landed
            }
            None => path,
        };
        if self.opts.mode == Mode::Overlay {
            // Whatever was there goes (the file replaces it).
            self.forget_replaced(path);
        }
        if !self.lower_links.is_empty() {
            // A later entry of the same name replaces a link to a lower file.
            self.lower_links.retain(|(link, _)| link != path);
        }
        // While paths need no resolving, a path the layer never wrote
        // before has no record of an earlier file to drop (every record's
        // path was touched, spelled the same).
        let fresh = self.touch(&written);
        if !fresh {
            // A directory of this layer there goes with what the file
            // replaces (nothing of the layer is below a path it never wrote).
            self.forget_dirs(path);
        }
        let new_path = fresh && !self.resolves();
        if !new_path && let Some(content) = &mut self.content {
            content.remove(path);
        }
        if entry.sparse.is_none() && self.fanout.has_room(entry.size) {
            // Small: its data read here, the file made on the pool.
            let record = self.record();
            return self.fanout.submit(
                &fanout::Job {
                    parent: &pfd,
                    path,
                    resolved: &written,
                    entry,
                    setgid,
                    record,
                },
                data,
            );
        }
        let file = NewFile {
            parent: &pfd,
            path,
            entry,
            setgid,
            record: self.record(),
        };
        let (buffer, hashing) = (&mut self.buffer, self.content.is_some());
        let written = self.fanout.rules().write(&file, |out| {
            write_body(out, entry, data, buffer, hashing, path, label)
        })?;
        self.summary.skipped += written.skipped;
        if let (Some(content), Some(file)) = (&mut self.content, written.recorded()) {
            content.insert(path, file);
        }
        Ok(())
    }

    /// Whether (and how) a regular file is recorded for the tree digest.
    fn record(&self) -> Option<XattrsKnown> {
        self.content.is_some().then_some(self.xattrs_known)
    }

    /// Waits for the files in flight and folds in what they did; whether
    /// there were any (then the caches, made before they landed, go).
    fn settle(&mut self) -> Result<bool> {
        let settled = self.fanout.settle()?;
        if !settled.waited {
            return Ok(false);
        }
        self.summary.skipped += settled.skipped;
        if let Some(content) = &mut self.content {
            for (key, file) in settled.written {
                content.insert_key(key, file);
            }
        }
        self.parent_cache = None;
        self.last_parent = None;
        self.file_parent = None;
        Ok(true)
    }

    /// Whether the layer directory holds `rel` (resolved inside it, through
    /// this layer's own symlinks), other than as a whiteout.
    fn in_this_layer(&self, rel: &Path) -> bool {
        let Ok(pfd) = sys::resolve_dir(&self.root, parent(rel)) else {
            return false;
        };
        matches!(sys::lstat_at(&pfd, base(rel)), Ok(Some(st))
            if !(sys::file_type(&st) == FileType::CharacterDevice && st.st_rdev == 0))
    }

    /// Apply mode: remembers the mtime of directory `pfd` (at `rel`) the
    /// first time this layer changes its content.
    fn keep_parent_mtime(&mut self, pfd: &OwnedFd, rel: &Path) {
        if self.opts.mode != Mode::Apply || self.last_parent.as_deref() == Some(rel) {
            // Consecutive entries of one directory: remembered already.
            return;
        }
        self.last_parent = Some(rel.to_owned());
        let Ok(st) = rfs::fstat(pfd) else { return };
        self.parent_mtimes
            .entry((st.st_dev, st.st_ino))
            .or_insert_with(|| {
                let mtime = rfs::Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: i64::try_from(st.st_mtime_nsec).unwrap_or(0),
                };
                (rel.to_owned(), mtime)
            });
    }

    /// Forgets the metadata deferred for directories at and below `path`,
    /// which an entry replaces: a directory made there later (implied by a
    /// later entry) is another one, though the kernel may give it the same
    /// inode number (the inode check alone applied the old entry's mode and
    /// mtime to it in most runs, not in all: found by a helper's fuzzing).
    fn forget_dirs(&mut self, path: &Path) {
        for dir in at_and_below(
            self.dirs.range::<Path, _>(from(path)).map(|(dir, _)| dir),
            path,
        ) {
            self.dirs.remove(&dir);
        }
    }

    /// Records a directory entry's mode and mtime for the end of the layer,
    /// with the inode it was given to; a later entry for the path replaces it.
    fn defer_dir_metadata(&mut self, fd: &OwnedFd, path: &Path, entry: &Entry) -> Result<()> {
        let st = rfs::fstat(fd).map_err(|e| Error::io("reading", path, e))?;
        self.dirs.insert(
            path.to_owned(),
            DirMeta {
                mode: entry.mode,
                mtime: entry.mtime,
                mtime_nsec: entry.mtime_nsec,
                inode: (st.st_dev, st.st_ino),
            },
        );
        Ok(())
    }

    /// The directory at `path` if it is still the one with `inode`: opened
    /// without following a symlink in the last component.
    fn same_dir(&self, path: &Path, inode: (u64, u64)) -> Option<OwnedFd> {
        let fd = if path.as_os_str().is_empty() {
            sys::resolve_read(&self.root, path).ok()?
        } else {
            let pfd = sys::resolve_dir(&self.root, parent(path)).ok()?;
            sys::open_nofollow(&pfd, base(path), true).ok()?
        };
        let st = rfs::fstat(&fd).ok()?;
        ((st.st_dev, st.st_ino) == inode).then_some(fd)
    }

    fn node_metadata(&self, pfd: &OwnedFd, path: &Path, entry: &Entry) -> Result<()> {
        let name = base(path);
        if self.opts.owners == Owners::Set {
            rfs::chownat(
                pfd,
                name,
                uid(entry.uid),
                gid(entry.gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io("setting the owner of", path, e))?;
        }
        rfs::chmodat(
            pfd,
            name,
            FsMode::from_raw_mode(entry.mode),
            AtFlags::empty(),
        )
        .map_err(|e| Error::io("setting the mode of", path, e))?;
        rfs::utimensat(
            pfd,
            name,
            &sys::times(entry.mtime, entry.mtime_nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("setting the mtime of", path, e))
    }

    /// Gives a file or directory the entry's owner, as the options say:
    /// `chown`, or the override xattr where the ids cannot be had.
    fn own(&self, fd: impl AsFd, entry: &Entry, path: &Path) -> Result<()> {
        self.fanout.rules().own(fd, entry, path)
    }

    /// Sets the xattrs of an entry other than a regular file.
    fn set_xattrs(&mut self, fd: impl AsFd, entry: &Entry, path: &Path) -> Result<()> {
        let (skipped, set) = self.fanout.rules().set_xattrs(fd, entry, path)?;
        self.summary.skipped += skipped;
        if set.iter().any(|(k, _)| !crate::regular::kept_verbatim(k)) {
            self.xattrs_known = XattrsKnown::ReadBack;
        }
        Ok(())
    }

    /// Overlay mode: a directory this layer made only for whiteouts and
    /// opaque markers (it wrote nothing there, nor below), inside an opaque
    /// directory of the layer, hides nothing (the lowers' copy is hidden
    /// already) and holds nothing: it goes, with what it holds, as in umoci,
    /// where the outer directory's marker or whiteout has removed the
    /// directory by the time the entries below it find none.
    fn drop_hidden_dirs(&mut self) -> Result<()> {
        let hidden: Vec<PathBuf> = self
            .implied
            .iter()
            .chain(&self.opaque_dirs)
            .filter(|d| {
                !self.touched.contains(&crate::tree::key(d))
                    && d.ancestors().skip(1).any(|a| self.opaque_dirs.contains(a))
            })
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for dir in &hidden {
            if !self.implied.contains(dir) && !self.opaque_dirs.contains(dir) {
                continue; // gone with a hidden parent
            }
            // Where it was made, or nothing: a later entry may have put a
            // symlink in its place or in an ancestor's.
            let Ok(pfd) = sys::open_dir_no_symlinks(&self.root, parent(dir)) else {
                continue;
            };
            let is_dir = sys::lstat_at(&pfd, base(dir))
                .ok()
                .flatten()
                .is_some_and(|st| sys::file_type(&st) == FileType::Directory);
            if !is_dir {
                continue;
            }
            sys::remove_all_at(&pfd, base(dir)).map_err(|e| Error::io("removing", dir, e))?;
            self.forget_replaced(dir);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Summary> {
        self.settle()?;
        for dir in std::mem::take(&mut self.opaque) {
            // Gone already (an opaque parent or a whiteout took it), or
            // replaced by a symlink (its marker hides nothing there).
            if sys::open_dir_no_symlinks(&self.root, &dir).is_ok() {
                self.clear_lower(&dir)?;
            }
        }
        // Deepest first, so a parent's mtime is set after its children's.
        for (path, meta) in self.dirs.iter().rev() {
            let Some(fd) = self.same_dir(path, meta.inode) else {
                // Deleted or replaced by a later entry of the same layer.
                continue;
            };
            rfs::fchmod(&fd, FsMode::from_raw_mode(meta.mode))
                .map_err(|e| Error::io("setting the mode of", path, e))?;
            rfs::futimens(&fd, &sys::times(meta.mtime, meta.mtime_nsec))
                .map_err(|e| Error::io("setting the mtime of", path, e))?;
        }
        let listed: HashSet<(u64, u64)> = self.dirs.values().map(|m| m.inode).collect();
        for (inode, (path, mtime)) in &self.parent_mtimes {
            if listed.contains(inode) {
                continue;
            }
            if let Some(fd) = self.same_dir(path, *inode) {
                let times = rfs::Timestamps {
                    last_access: *mtime,
                    last_modification: *mtime,
                };
                rfs::futimens(&fd, &times)
                    .map_err(|e| Error::io("restoring the mtime of", path, e))?;
            }
        }
        self.summary.content = self.content.take().unwrap_or_default();
        if self.opts.mode == Mode::Overlay {
            self.drop_hidden_dirs()?;
            self.summary.fixups = Fixups {
                implied_dirs: std::mem::take(&mut self.implied).into_iter().collect(),
                lower_links: std::mem::take(&mut self.lower_links),
                whiteouts: std::mem::take(&mut self.whiteouts).into_iter().collect(),
                opaque_dirs: std::mem::take(&mut self.opaque_dirs).into_iter().collect(),
                root_listed: self.root_listed,
                zero_devices: std::mem::take(&mut self.zero_devices),
                overlay_xattr: self.opts.overlay_xattr,
            };
            self.summary.fixups.whiteouts.sort();
        }
        Ok(self.summary)
    }
}

/// Overlay mode: whether a non-directory of the layer (a file, a symlink
/// to one, a whiteout) is at `dir` or above it. Below it, the lowers are
/// hidden already.
fn hidden_by_a_non_dir(root: &OwnedFd, dir: &Path) -> bool {
    matches!(sys::resolve_dir(root, dir), Err(e) if e.raw_os_error() == Some(libc_enotdir()))
}

/// Removes `path` and every path below it from `set`, where a path's
/// descendants follow it (paths order by component).
fn remove_tree(set: &mut BTreeSet<PathBuf>, path: &Path) {
    for p in at_and_below(set.range::<Path, _>(from(path)), path) {
        set.remove(&p);
    }
}

/// The range of sorted paths from `path` on.
fn from(path: &Path) -> (std::ops::Bound<&Path>, std::ops::Bound<&Path>) {
    (std::ops::Bound::Included(path), std::ops::Bound::Unbounded)
}

/// The paths at and below `path` among `sorted`, which starts at `path`
/// (in component order they follow it, together).
fn at_and_below<'p>(sorted: impl Iterator<Item = &'p PathBuf>, path: &Path) -> Vec<PathBuf> {
    sorted
        .take_while(|p| p.starts_with(path))
        .cloned()
        .collect()
}

fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum XattrPolicy {
    Keep,
    Escape(String),
    Drop,
}

/// What to do with one xattr name from a layer. Pure, for unit tests.
pub(crate) fn overlay_xattr_policy(
    key: &str,
    opts: &Options,
    escape_supported: bool,
) -> XattrPolicy {
    // Either namespace: a layer directory made for one kind of mount must
    // not steer the other kind (a rootless `userxattr` mount obeys
    // `user.overlay.*`).
    // Nor may it say who owns its files: that record is strata's own.
    if key == crate::OVERRIDE_STAT_XATTR {
        return XattrPolicy::Drop;
    }
    let is_overlay = key.starts_with("trusted.overlay.") || key.starts_with("user.overlay.");
    if !is_overlay {
        return XattrPolicy::Keep;
    }
    let prefix = opts.overlay_xattr.prefix();
    match (opts.mode, key.strip_prefix(prefix)) {
        // The kernel (≥ 6.7) shows `PREFIXoverlay.X` in the merged view as `PREFIX X`.
        (Mode::Overlay, Some(rest)) if escape_supported => {
            Escape(format!("{prefix}overlay.{rest}"))
        }
        _ => XattrPolicy::Drop,
    }
}

use XattrPolicy::Escape;

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// A file's data from the stream: each sparse chunk at its offset (the rest
/// stays holes, unhashed: the tree digest reads such a file back), or the
/// whole of it, hashed when asked.
fn write_body(
    out: &mut std::fs::File,
    entry: &Entry,
    data: &mut dyn Read,
    buffer: &mut [u8],
    hashing: bool,
    path: &Path,
    label: &str,
) -> Result<(u64, Option<blake3::Hash>)> {
    let copy_error = |e| match e {
        CopyError::Read(e) => crate::entry::stream_error(e),
        CopyError::Write(e) => Error::io("writing", path, e),
    };
    let Some(sparse) = &entry.sparse else {
        let mut hasher = hashing.then(blake3::Hasher::new);
        let size = copy(data, out, buffer, hasher.as_mut()).map_err(copy_error)?;
        return Ok((size, hasher.map(|h| h.finalize())));
    };
    for (offset, len) in &sparse.chunks {
        std::io::Seek::seek(out, std::io::SeekFrom::Start(*offset))
            .map_err(|e| Error::io("writing", path, e))?;
        let got = copy(&mut data.take(*len), out, buffer, None).map_err(copy_error)?;
        if got != *len {
            return Err(Error::entry(
                label,
                "the sparse file's data ends before its map does",
            ));
        }
    }
    out.set_len(sparse.real_size)
        .map_err(|e| Error::io("writing", path, e))?;
    Ok((0, None))
}

fn copy(
    from: &mut dyn Read,
    to: &mut std::fs::File,
    buffer: &mut [u8],
    mut hasher: Option<&mut blake3::Hasher>,
) -> std::result::Result<u64, CopyError> {
    let mut total = 0;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&buffer[..n]);
        }
        total += n as u64;
    }
}

impl OverlayXattr {
    /// The namespace prefix, `trusted.overlay.` or `user.overlay.`.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Self::Trusted => "trusted.overlay.",
            Self::User => "user.overlay.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xattrs_from_a_layer_are_escaped_or_dropped() {
        let overlay = Options::default();
        let apply = Options {
            mode: Mode::Apply,
            ..Options::default()
        };
        let user = Options {
            overlay_xattr: OverlayXattr::User,
            ..Options::default()
        };
        assert_eq!(
            overlay_xattr_policy("user.mime", &overlay, true),
            XattrPolicy::Keep
        );
        assert_eq!(
            overlay_xattr_policy("security.capability", &apply, true),
            XattrPolicy::Keep
        );
        assert_eq!(
            overlay_xattr_policy("trusted.overlay.opaque", &overlay, true),
            XattrPolicy::Escape("trusted.overlay.overlay.opaque".into())
        );
        assert_eq!(
            overlay_xattr_policy("trusted.overlay.redirect", &overlay, true),
            XattrPolicy::Escape("trusted.overlay.overlay.redirect".into())
        );
        assert_eq!(
            overlay_xattr_policy("trusted.overlay.opaque", &overlay, false),
            XattrPolicy::Drop
        );
        assert_eq!(
            overlay_xattr_policy("user.overlay.metacopy", &overlay, true),
            XattrPolicy::Drop
        );
        assert_eq!(
            overlay_xattr_policy("user.overlay.metacopy", &user, true),
            XattrPolicy::Escape("user.overlay.overlay.metacopy".into())
        );
        assert_eq!(
            overlay_xattr_policy("trusted.overlay.opaque", &apply, true),
            XattrPolicy::Drop
        );
    }
}
