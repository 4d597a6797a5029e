//! Entries, and where they come from: a tar stream, or a layer directory
//! already extracted in overlay form (the store's). One engine consumes both,
//! so the whiteout rules live in one place.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FileType;

use crate::names::{self, Name, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::sparse::SparseRecords;
use crate::sys;
use crate::tar_framing::{Framing, PadAtEof};
use crate::{Error, Result};

/// What kind of file an entry makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file; its bytes follow.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to this target (stored as is, never followed).
    Symlink(PathBuf),
    /// A hard link to an earlier entry (a name inside the layer).
    Hardlink(Vec<u8>),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
    /// An OCI whiteout: the entry's name is `DIR/.wh.NAME`, and `DIR/NAME`
    /// is deleted from the layers below. Sources decide what is a whiteout
    /// (a tar by name, a layer directory by overlay form), so a directory
    /// that is literally named `.wh.x` is never taken for one.
    Whiteout,
    /// An opaque marker: the entry's name is `DIR/.wh..wh..opq`, and what the
    /// layers below hold in `DIR` is hidden.
    Opaque,
}

/// One entry's metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as the source spells it (tar names may be absolute or hold `..`).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The modification time's nanoseconds (PAX `mtime` fractions).
    pub mtime_nsec: u32,
    /// How many bytes of data follow (a regular file's size; for a sparse
    /// file, the chunks' bytes); 0 for every other kind.
    pub size: u64,
    /// Extended attributes (from PAX `SCHILY.xattr.*`).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// A sparse file's layout (PAX sparse): the data holds only the chunks.
    pub sparse: Option<crate::Sparse>,
}

impl Entry {
    /// The name for messages (borrowed unless the name is not UTF-8: every
    /// entry takes one, most never show it).
    #[must_use]
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The cleaned path and what the entry does there: the one place where
    /// the source's kind and the whiteout naming rules meet (extraction and
    /// the index both ask here).
    pub(crate) fn meaning(&self) -> Result<(PathBuf, Name)> {
        let path = names::clean(&self.name)?;
        if !matches!(self.kind, Kind::Whiteout | Kind::Opaque) {
            return Ok((path, Name::Plain));
        }
        match (&self.kind, names::classify(&path, &self.label())?) {
            (Kind::Whiteout, name @ Name::Whiteout(_)) | (Kind::Opaque, name @ Name::Opaque(_)) => {
                Ok((path, name))
            }
            _ => Err(Error::entry(
                self.label(),
                "a whiteout or opaque marker whose name does not say what it hides",
            )),
        }
    }
}

/// A source of entries, visited in order; a file entry's bytes are readable
/// from the reader passed with it.
pub trait EntrySource {
    /// Calls `f` for each entry, in order.
    ///
    /// # Errors
    /// The source's read errors, or the first error `f` returns.
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()>;
}

/// The nanoseconds of a PAX time (`1700000000.123456789`), 0 without a
/// fraction (digits past the ninth are dropped, as Go's archive/tar does).
fn pax_nanoseconds(value: &[u8]) -> u32 {
    let Some(dot) = value.iter().position(|&b| b == b'.') else {
        return 0;
    };
    let digits: Vec<u8> = value[dot + 1..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .take(9)
        .collect();
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + u32::from(digits.get(i).map_or(0, |d| d - b'0'));
    }
    nsec
}

/// A PAX time as (seconds, nanoseconds) with the nanoseconds counted
/// forward: `-1.5` is 1.5 s before 1970, (-2, 500 000 000).
fn pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let secs = pax_number(value)?;
    let nsec = pax_nanoseconds(value);
    if value.starts_with(b"-") && nsec > 0 {
        return Some((secs.checked_sub(1)?, 1_000_000_000 - nsec));
    }
    Some((secs, nsec))
}

fn pax_number(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let whole = text.split('.').next()?;
    whole.parse().ok()
}

/// A uid or gid: anything a filesystem cannot hold is refused, never
/// mapped to root (a setuid file would become setuid root).
fn owner_id(value: Option<i64>, what: &str, label: &dyn Fn() -> String) -> Result<u64> {
    value
        .and_then(|n| u32::try_from(n).ok())
        .map(u64::from)
        .ok_or_else(|| {
            Error::entry(
                label(),
                format!("its {what} is not a number from 0 to 4294967295"),
            )
        })
}

/// Whether a GNU header's numeric field holds a number (octal digits with
/// spaces or NULs around them, or base-256).
fn is_numeric_field(field: &[u8]) -> bool {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return true;
    }
    field
        .iter()
        .filter(|b| !matches!(b, b' ' | b'\0'))
        .all(|b| (b'0'..=b'7').contains(b))
}

/// The ustar `prefix` of a header that carries GNU magic but whose atime and
/// ctime fields are not numbers: such "GNU" headers are ustar ones with a
/// wrong magic, and Go, GNU tar and Python read the prefix there.
fn misnamed_gnu_prefix(header: &tar::Header) -> Option<&[u8]> {
    header.as_gnu()?;
    let raw = header.as_bytes();
    if is_numeric_field(&raw[345..357]) && is_numeric_field(&raw[357..369]) {
        return None;
    }
    let prefix = &raw[345..500];
    let prefix = &prefix[..prefix.iter().position(|b| *b == 0).unwrap_or(prefix.len())];
    (!prefix.is_empty()).then_some(prefix)
}

/// Entries of a tar stream (`tar` ≥ 0.4.45 for PAX sizes; entries are never
/// unpacked by the tar crate, only read).
pub(crate) struct TarSource<R: Read> {
    archive: tar::Archive<Framing<PadAtEof<R>>>,
    real_end: Arc<AtomicU64>,
}

impl<R: Read> TarSource<R> {
    pub(crate) fn new(stream: R) -> Self {
        let padded = PadAtEof::new(stream);
        let real_end = padded.real_end();
        Self {
            archive: tar::Archive::new(Framing::new(padded)),
            real_end,
        }
    }
}

pub(crate) fn stream_error(e: std::io::Error) -> Error {
    // A limit error raised inside the stream keeps its own type.
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::LimitExceeded { what, limit }) => Error::LimitExceeded {
            what,
            limit: *limit,
        },
        _ => Error::Stream {
            what: "tar",
            source: e,
        },
    }
}

impl<R: Read> EntrySource for TarSource<R> {
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()> {
        let real_end = Arc::clone(&self.real_end);
        for item in self.archive.entries().map_err(stream_error)? {
            let mut tar_entry = item.map_err(stream_error)?;
            let header = tar_entry.header();
            let mut name = tar_entry.path_bytes().into_owned();
            if name == header.path_bytes().as_ref()
                && let Some(prefix) = misnamed_gnu_prefix(header)
            {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
            let label = || String::from_utf8_lossy(&name).into_owned();
            let device = |what: &str, field: std::io::Result<Option<u32>>| {
                field.map(Option::unwrap_or_default).map_err(|_| {
                    Error::entry(
                        label(),
                        format!("its device {what} number does not fit in 32 bits"),
                    )
                })
            };
            let link = || {
                tar_entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default()
            };
            let kind = match header.entry_type() {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => {
                    Kind::Symlink(PathBuf::from(std::ffi::OsStr::from_bytes(&link())))
                }
                tar::EntryType::Link => Kind::Hardlink(link()),
                tar::EntryType::Char => Kind::Char(
                    device("major", header.device_major())?,
                    device("minor", header.device_minor())?,
                ),
                tar::EntryType::Block => Kind::Block(
                    device("major", header.device_major())?,
                    device("minor", header.device_minor())?,
                ),
                tar::EntryType::Fifo => Kind::Fifo,
                other => {
                    tracing::warn!(entry = %label(), kind = ?other, "skipping a tar entry of a kind no filesystem holds");
                    continue;
                }
            };
            // Empty numeric fields read as 0, as Go's archive/tar (Docker,
            // containerd) reads them; only PAX values below override.
            let header_id =
                |field: std::io::Result<u64>| field.map_or(Some(0), |n| i64::try_from(n).ok());
            let kind_has_data = kind == Kind::File;
            let uid = owner_id(header_id(header.uid()), "uid", &label)?;
            let gid = owner_id(header_id(header.gid()), "gid", &label)?;
            let mut entry = Entry {
                name,
                kind,
                mode: header.mode().unwrap_or(0) & 0o7777,
                uid,
                gid,
                mtime: header.mtime().unwrap_or(0).try_into().unwrap_or(i64::MAX),
                mtime_nsec: 0,
                size: if kind_has_data { tar_entry.size() } else { 0 },
                xattrs: Vec::new(),
                sparse: None,
            };
            let mut sparse = SparseRecords::default();
            if let Some(pax) = tar_entry.pax_extensions().map_err(stream_error)? {
                for ext in pax {
                    let ext = ext.map_err(stream_error)?;
                    let key = ext.key_bytes();
                    if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                        entry.xattrs.push((
                            String::from_utf8_lossy(attr).into_owned(),
                            ext.value_bytes().to_vec(),
                        ));
                    } else if key == b"uid" {
                        let label = || entry.label().into_owned();
                        entry.uid = owner_id(pax_number(ext.value_bytes()), "PAX uid", &label)?;
                    } else if key == b"gid" {
                        let label = || entry.label().into_owned();
                        entry.gid = owner_id(pax_number(ext.value_bytes()), "PAX gid", &label)?;
                    } else if key == b"mtime" {
                        (entry.mtime, entry.mtime_nsec) =
                            pax_time(ext.value_bytes()).unwrap_or((entry.mtime, 0));
                    } else {
                        sparse.take(key, ext.value_bytes());
                    }
                }
            }
            if entry.kind == Kind::File
                && let Some((real_name, layout)) = sparse.resolve(&mut tar_entry, &entry.label())?
            {
                entry.name = real_name;
                entry.size = layout.chunks.iter().map(|(_, len)| len).sum();
                entry.sparse = Some(layout);
            }
            // Only a name with `.wh.` in it can be a whiteout or a marker
            // (the consumer cleans every name again, and refuses a bad one).
            if names::may_be_whiteout(&entry.name) {
                match names::classify(&names::clean(&entry.name)?, &entry.label())? {
                    Name::AufsMeta => continue,
                    Name::Whiteout(_) => entry.kind = Kind::Whiteout,
                    Name::Opaque(_) => entry.kind = Kind::Opaque,
                    Name::Plain => {}
                }
            }
            let (start, size) = (tar_entry.raw_file_position(), tar_entry.size());
            f(&entry, &mut tar_entry)?;
            if start + size > real_end.load(Ordering::Relaxed) {
                return Err(Error::entry(
                    entry.label(),
                    format!(
                        "the layer ends inside this entry's data ({size} bytes from offset {start})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Entries of a layer directory in overlay form, as the store holds them:
/// char 0:0 devices become `.wh.` whiteouts, opaque xattrs become
/// `.wh..wh..opq` markers, and files sharing an inode become hard links.
/// Parents come before children; names are sorted for a stable order. The
/// root comes first, as `./`, carrying the layer root's metadata.
///
/// Only what the overlay form itself says is a whiteout: a directory that is
/// literally named `.wh.x` (from a tar entry `.wh.x/file`) is a directory.
pub struct DirSource {
    root: PathBuf,
    /// The namespace whose `overlay.*` xattrs are the overlay's; the other
    /// namespace's are the layer's own data.
    overlay_xattr: crate::OverlayXattr,
    zero_devices: HashMap<PathBuf, crate::ZeroDevice>,
    lower_links: HashMap<PathBuf, PathBuf>,
    readahead: bool,
}

impl DirSource {
    /// A source reading the layer directory `root`.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            overlay_xattr: crate::OverlayXattr::Trusted,
            zero_devices: HashMap::new(),
            lower_links: HashMap::new(),
            readahead: false,
        }
    }

    /// Reads the tree ahead on a second thread: it opens each file a little
    /// before the walk does and asks the kernel for its first blocks, for a
    /// tree that is likely cold (an upper to commit), whose small files
    /// would otherwise be waited for one by one.
    #[must_use]
    pub fn with_readahead(mut self) -> Self {
        self.readahead = true;
        self
    }

    /// Reads a directory an overlay uses with this xattr namespace (a
    /// rootless `userxattr` mount's: `user.overlay.*`); by default
    /// `trusted.overlay.*`, a mount made by root.
    #[must_use]
    pub fn with_overlay_xattr(mut self, namespace: crate::OverlayXattr) -> Self {
        self.overlay_xattr = namespace;
        self
    }

    /// Reads the directory with what extraction noted beside it
    /// ([`crate::Summary::notes`]): real 0:0 devices come back, and copies of
    /// lower files are links again.
    #[must_use]
    pub fn with_notes(mut self, notes: crate::FormNotes) -> Self {
        self.zero_devices
            .extend(notes.zero_devices.into_iter().map(|d| (d.path.clone(), d)));
        self.lower_links.extend(notes.lower_links);
        self
    }
}

/// The xattrs of a file in a layer directory (or an upper) as the layer's
/// tar holds them: the overlay's own (`opaque`, `origin`, `impure`,
/// `nlink`, …) are not the layer's, an escaped `P.overlay.overlay.X` (the
/// kernel's form, ≥ 6.7, of a `P.overlay.X` set in the merged view) is
/// `P.overlay.X` again, and a redirect or metacopy is refused: the file's
/// data or its directory's content are then elsewhere, and no tar can say so.
fn layer_xattrs(
    raw: Vec<(String, Vec<u8>)>,
    path: &Path,
    namespace: crate::OverlayXattr,
) -> Result<Vec<(String, Vec<u8>)>> {
    let prefix = namespace.prefix();
    let mut out = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let Some(rest) = key.strip_prefix(prefix) else {
            if key.starts_with("trusted.overlay.") || key.starts_with("user.overlay.") {
                // The other namespace: data to this overlay, but extraction
                // drops it from every layer (a mount of the other kind would
                // obey it), so no layer can carry it.
                tracing::warn!(path = %path.display(), xattr = %key, "dropping an overlay xattr of the other namespace: no layer can carry it");
            } else {
                out.push((key, value));
            }
            continue;
        };
        if let Some(escaped) = rest.strip_prefix("overlay.") {
            out.push((format!("{prefix}{escaped}"), value));
        } else if rest == "redirect" || rest == "metacopy" {
            return Err(Error::entry(
                path.to_string_lossy(),
                format!(
                    "it carries {key}: an overlay mounted with redirect_dir or metacopy \
                     made it (or it was written into the directory by hand), and its \
                     content then lives in a lower layer, which no layer tar can say \
                     (strata mounts with redirect_dir=off,metacopy=off)"
                ),
            ));
        }
    }
    Ok(out)
}

/// An entry from a file's metadata. Where the file carries an override
/// record (a rootless store without a subuid range wrote it), the record's
/// owner is the entry's, and the record itself is not an xattr of the
/// entry. The mode stays the file's: strata writes the record's mode onto
/// the file as well, and a `chmod` in a merged view changes the file (its
/// copy-up), never the record.
fn stat_entry(
    name: Vec<u8>,
    st: &rustix::fs::Stat,
    kind: Kind,
    mut xattrs: Vec<(String, Vec<u8>)>,
) -> Entry {
    let size = if kind == Kind::File {
        u64::try_from(st.st_size).unwrap_or(0)
    } else {
        0
    };
    let mut entry = Entry {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        mtime: st.st_mtime,
        mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        size,
        xattrs: Vec::new(),
        sparse: None,
    };
    if let Some(i) = xattrs
        .iter()
        .position(|(k, _)| k == crate::OVERRIDE_STAT_XATTR)
    {
        let (_, value) = xattrs.remove(i);
        if let Some(record) = crate::parse_override_stat(&value) {
            entry.uid = record.uid;
            entry.gid = record.gid;
        }
    }
    entry.xattrs = xattrs;
    entry
}

impl DirSource {
    /// Visits the tree depth first without recursion: each directory is
    /// closed while a subdirectory is walked and reopened through `..`
    /// (checked by inode), so at most two descriptors are open and the stack
    /// does not grow whatever the depth.
    fn walk(
        &self,
        root: std::os::fd::OwnedFd,
        progress: Option<&crate::readahead::Progress>,
        f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        struct Level {
            rel: PathBuf,
            names: std::vec::IntoIter<std::ffi::OsString>,
            /// The parent's identity, to check `..` against.
            parent: Option<(u64, u64)>,
        }
        let mut links = HashMap::new();
        let mut dir = root;
        let mut levels = vec![Level {
            rel: PathBuf::new(),
            names: self.names(&dir, Path::new(""))?.into_iter(),
            parent: None,
        }];
        while let Some(level) = levels.last_mut() {
            let Some(name) = level.names.next() else {
                let done = levels.pop().expect("a level");
                let Some(parent) = done.parent else { break };
                let rel = levels
                    .last()
                    .map_or(Path::new(""), |l| l.rel.as_path())
                    .to_owned();
                dir = sys::open_nofollow(&dir, std::ffi::OsStr::new(".."), true)
                    .map_err(|e| Error::io("reopening", &rel, e))?;
                let back = rustix::fs::fstat(&dir).map_err(|e| Error::io("reading", &rel, e))?;
                if (back.st_dev, back.st_ino) != parent {
                    return Err(Error::io(
                        "reading",
                        &rel,
                        std::io::Error::other("the directory moved while it was read"),
                    ));
                }
                continue;
            };
            if let Some(progress) = progress {
                progress.passed();
            }
            let rel = level.rel.clone();
            if let Some(child) = self.visit(&dir, &rel, &name, &mut links, f)? {
                let here = rustix::fs::fstat(&dir).map_err(|e| Error::io("reading", &rel, e))?;
                let path = rel.join(&name);
                dir = child;
                levels.push(Level {
                    names: self.names(&dir, &path)?.into_iter(),
                    rel: path,
                    parent: Some((here.st_dev, here.st_ino)),
                });
            }
        }
        Ok(())
    }

    /// Whether the layer directory itself holds `rel` (a file, or a
    /// whiteout): then a noted link to the lower `rel` cannot be replayed as
    /// a link (the layer replaced or deleted its target after linking), and
    /// the copy the directory holds is the entry.
    fn layer_holds(&self, rel: &Path) -> bool {
        let Ok(root) = sys::open_root(&self.root) else {
            return false;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Some(name) = rel.file_name() else {
            return false;
        };
        sys::resolve_dir(&root, parent)
            .ok()
            .and_then(|pfd| sys::lstat_at(&pfd, name).ok().flatten())
            .is_some()
    }

    /// The names to visit in `dir` (at `rel`), sorted, with the noted real
    /// 0:0 devices the directory itself does not hold.
    fn names(&self, dir: &std::os::fd::OwnedFd, rel: &Path) -> Result<Vec<std::ffi::OsString>> {
        let mut names = sys::list_dir(dir).map_err(|e| Error::io("listing", rel, e))?;
        names.extend(
            self.zero_devices
                .keys()
                .filter(|p| p.parent() == Some(rel))
                .filter_map(|p| p.file_name().map(std::ffi::OsStr::to_owned)),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Emits the entry for `name` in `dir` (at `rel`); a directory's handle
    /// is returned for the walk to enter.
    fn visit(
        &self,
        dir: &std::os::fd::OwnedFd,
        rel: &Path,
        name: &std::ffi::OsStr,
        links: &mut HashMap<(u64, u64), Vec<u8>>,
        f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
    ) -> Result<Option<std::os::fd::OwnedFd>> {
        fn io<'a>(op: &'static str, p: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
            move |e| Error::io(op, p, e)
        }
        let path = rel.join(name);
        let bytes = path.as_os_str().as_bytes().to_vec();
        let no_data: &mut dyn Read = &mut std::io::empty();
        if let Some(dev) = self.zero_devices.get(&path) {
            let entry = Entry {
                name: bytes,
                kind: Kind::Char(0, 0),
                mode: dev.mode,
                uid: dev.uid,
                gid: dev.gid,
                mtime: dev.mtime,
                mtime_nsec: 0,
                size: 0,
                xattrs: Vec::new(),
                sparse: None,
            };
            f(&entry, no_data)?;
            return Ok(None);
        }
        let Some(st) = sys::lstat_at(dir, name).map_err(io("reading", &path))? else {
            return Ok(None);
        };
        match sys::file_type(&st) {
            FileType::Directory => {
                let fd = sys::open_nofollow(dir, name, true).map_err(io("opening", &path))?;
                let raw = sys::xattrs(&fd).map_err(io("reading xattrs of", &path))?;
                let opaque = is_opaque(&raw, self.overlay_xattr);
                let xattrs = layer_xattrs(raw, &path, self.overlay_xattr)?;
                f(&stat_entry(bytes.clone(), &st, Kind::Dir, xattrs), no_data)?;
                if opaque {
                    emit_opaque(&path, &st, f)?;
                }
                return Ok(Some(fd));
            }
            FileType::CharacterDevice if st.st_rdev == 0 => {
                let mut wh = rel.as_os_str().as_bytes().to_vec();
                if !wh.is_empty() {
                    wh.push(b'/');
                }
                wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name.as_bytes());
                f(&stat_entry(wh, &st, Kind::Whiteout, Vec::new()), no_data)?;
            }
            FileType::RegularFile | FileType::Symlink | FileType::Fifo
                if self.lower_links.contains_key(&path)
                    && !self.layer_holds(&self.lower_links[&path]) =>
            {
                let target = self.lower_links[&path].as_os_str().as_bytes().to_vec();
                f(
                    &stat_entry(bytes, &st, Kind::Hardlink(target), Vec::new()),
                    no_data,
                )?;
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&key) {
                        f(
                            &stat_entry(bytes, &st, Kind::Hardlink(first.clone()), Vec::new()),
                            no_data,
                        )?;
                        return Ok(None);
                    }
                    links.insert(key, bytes.clone());
                }
                let fd = sys::open_nofollow(dir, name, false).map_err(io("opening", &path))?;
                let xattrs = layer_xattrs(
                    sys::xattrs(&fd).map_err(io("reading xattrs of", &path))?,
                    &path,
                    self.overlay_xattr,
                )?;
                let chunks = sys::data_chunks(&fd, &st).map_err(io("reading", &path))?;
                let mut entry = stat_entry(bytes, &st, Kind::File, xattrs);
                let mut file = std::fs::File::from(fd);
                match chunks {
                    // Holes stay holes: only the data chunks are read.
                    Some(chunks) => {
                        let sparse = crate::Sparse {
                            real_size: entry.size,
                            chunks,
                        };
                        entry.size = sparse.chunks.iter().map(|(_, len)| len).sum();
                        let mut data = crate::sparse::ChunkReader::new(file, &sparse);
                        entry.sparse = Some(sparse);
                        f(&entry, &mut data)?;
                    }
                    None => f(&entry, &mut file)?,
                }
            }
            FileType::Symlink if st.st_nlink > 1 && links.contains_key(&(st.st_dev, st.st_ino)) => {
                let first = links[&(st.st_dev, st.st_ino)].clone();
                f(
                    &stat_entry(bytes, &st, Kind::Hardlink(first), Vec::new()),
                    no_data,
                )?;
            }
            FileType::Symlink => {
                if st.st_nlink > 1 {
                    links.insert((st.st_dev, st.st_ino), bytes.clone());
                }
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| Error::io("reading", &path, e))?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                f(
                    &stat_entry(bytes, &st, Kind::Symlink(target), Vec::new()),
                    no_data,
                )?;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                let kind = if sys::file_type(&st) == FileType::CharacterDevice {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                };
                f(&stat_entry(bytes, &st, kind, Vec::new()), no_data)?;
            }
            FileType::Fifo => f(&stat_entry(bytes, &st, Kind::Fifo, Vec::new()), no_data)?,
            _ => {
                tracing::warn!(path = %path.display(), "skipping a socket or unknown file in a layer directory")
            }
        }
        Ok(None)
    }
}

fn emit_opaque(
    dir: &Path,
    st: &rustix::fs::Stat,
    f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let marker = dir.join(OPAQUE_MARKER);
    f(
        &stat_entry(
            marker.as_os_str().as_bytes().to_vec(),
            st,
            Kind::Opaque,
            Vec::new(),
        ),
        &mut std::io::empty(),
    )
}

fn is_opaque(xattrs: &[(String, Vec<u8>)], namespace: crate::OverlayXattr) -> bool {
    let name = format!("{}opaque", namespace.prefix());
    xattrs.iter().any(|(k, v)| *k == name && v == b"y")
}

impl EntrySource for DirSource {
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()> {
        let root = sys::resolve_read(
            sys::open_root(&self.root).map_err(|e| Error::io("opening", &self.root, e))?,
            Path::new(""),
        )
        .map_err(|e| Error::io("opening", &self.root, e))?;
        let st = rustix::fs::fstat(&root).map_err(|e| Error::io("reading", &self.root, e))?;
        let raw = sys::xattrs(&root).map_err(|e| Error::io("reading xattrs of", &self.root, e))?;
        let opaque = is_opaque(&raw, self.overlay_xattr);
        let xattrs = layer_xattrs(raw, Path::new("/"), self.overlay_xattr)?;
        f(
            &stat_entry(b"./".to_vec(), &st, Kind::Dir, xattrs),
            &mut std::io::empty(),
        )?;
        if opaque {
            emit_opaque(Path::new(""), &st, f)?;
        }
        let Some(ahead) = self.readahead.then(|| root.try_clone().ok()).flatten() else {
            return self.walk(root, None, f);
        };
        let progress = crate::readahead::Progress::default();
        std::thread::scope(|scope| {
            scope.spawn(|| crate::readahead::run(ahead, &progress));
            // Ends the read-ahead however the walk ends (a panic too: the
            // scope waits for it).
            let _finish = progress.finish_on_drop();
            self.walk(root, Some(&progress), f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upper_gives_back_the_layers_xattrs_and_refuses_what_no_tar_can_say() {
        let raw = |pairs: &[&str]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|k| ((*k).to_owned(), b"v".to_vec()))
                .collect()
        };
        let kept = layer_xattrs(
            raw(&[
                "user.k",
                "trusted.overlay.opaque",
                "trusted.overlay.origin",
                "trusted.overlay.impure",
                "trusted.overlay.nlink",
                "trusted.overlay.overlay.mine",
                "user.overlay.overlay.theirs",
                "user.overlay.opaque",
                "security.capability",
            ]),
            Path::new("d"),
            crate::OverlayXattr::Trusted,
        )
        .unwrap();
        let names: Vec<&str> = kept.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["user.k", "trusted.overlay.mine", "security.capability"]
        );
        // On a mount made by root, `user.overlay.*` is the user's own
        // xattr; on a `userxattr` mount it is the overlay's.
        for (refused, namespace) in [
            ("trusted.overlay.redirect", crate::OverlayXattr::Trusted),
            ("user.overlay.metacopy", crate::OverlayXattr::User),
        ] {
            let err = layer_xattrs(raw(&[refused]), Path::new("usr/lib"), namespace)
                .unwrap_err()
                .to_string();
            assert!(err.contains("usr/lib") && err.contains(refused), "{err}");
        }
    }

    #[test]
    fn pax_fractions_become_nanoseconds() {
        assert_eq!(pax_nanoseconds(b"1700000000"), 0);
        assert_eq!(pax_nanoseconds(b"1700000000.5"), 500_000_000);
        assert_eq!(pax_nanoseconds(b"1700000000.123456789123"), 123_456_789);
        assert_eq!(pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(pax_time(b"-0.25"), Some((-1, 750_000_000)));
        assert_eq!(pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(pax_time(b"12.000000001"), Some((12, 1)));
    }
}
