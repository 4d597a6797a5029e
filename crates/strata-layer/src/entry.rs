//! Entries, and where they come from: a tar stream, or a layer directory
//! already extracted in overlay form (the store's). One engine consumes both,
//! so the whiteout rules live in one place.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::names::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::sys;
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
    /// Extended attributes (from PAX `SCHILY.xattr.*`).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The name for messages.
    #[must_use]
    pub fn label(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
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

/// Entries of a tar stream (`tar` ≥ 0.4.45 for PAX sizes; entries are never
/// unpacked by the tar crate, only read).
pub(crate) struct TarSource<R: Read> {
    archive: tar::Archive<R>,
}

impl<R: Read> TarSource<R> {
    pub(crate) fn new(stream: R) -> Self {
        Self {
            archive: tar::Archive::new(stream),
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

fn pax_number(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let whole = text.split('.').next()?;
    whole.parse().ok()
}

impl<R: Read> EntrySource for TarSource<R> {
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()> {
        for item in self.archive.entries().map_err(stream_error)? {
            let mut tar_entry = item.map_err(stream_error)?;
            let header = tar_entry.header();
            let name = tar_entry.path_bytes().into_owned();
            let label = || String::from_utf8_lossy(&name).into_owned();
            let device = || {
                (
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                )
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
                tar::EntryType::Char => Kind::Char(device().0, device().1),
                tar::EntryType::Block => Kind::Block(device().0, device().1),
                tar::EntryType::Fifo => Kind::Fifo,
                other => {
                    tracing::warn!(entry = %label(), kind = ?other, "skipping a tar entry of a kind no filesystem holds");
                    continue;
                }
            };
            // Empty numeric fields read as 0, as Go's archive/tar (Docker,
            // containerd) reads them; only PAX values below override.
            let mut entry = Entry {
                name: name.clone(),
                kind,
                mode: header.mode().unwrap_or(0) & 0o7777,
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
                mtime: header.mtime().unwrap_or(0).try_into().unwrap_or(i64::MAX),
                xattrs: Vec::new(),
            };
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
                        entry.uid = pax_number(ext.value_bytes())
                            .and_then(|n| n.try_into().ok())
                            .unwrap_or(entry.uid);
                    } else if key == b"gid" {
                        entry.gid = pax_number(ext.value_bytes())
                            .and_then(|n| n.try_into().ok())
                            .unwrap_or(entry.gid);
                    } else if key == b"mtime" {
                        entry.mtime = pax_number(ext.value_bytes()).unwrap_or(entry.mtime);
                    }
                }
            }
            f(&entry, &mut tar_entry)?;
        }
        Ok(())
    }
}

/// Entries of a layer directory in overlay form, as the store holds them:
/// char 0:0 devices become `.wh.` whiteouts, opaque xattrs become
/// `.wh..wh..opq` markers, and files sharing an inode become hard links.
/// Parents come before children; names are sorted for a stable order.
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A source reading the layer directory `root`.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }
}

fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

fn stat_entry(
    name: Vec<u8>,
    st: &rustix::fs::Stat,
    kind: Kind,
    xattrs: Vec<(String, Vec<u8>)>,
) -> Entry {
    Entry {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        mtime: st.st_mtime,
        xattrs: xattrs
            .into_iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .collect(),
    }
}

impl DirSource {
    fn walk(
        &self,
        dir: &std::os::fd::OwnedFd,
        rel: &Path,
        links: &mut HashMap<(u64, u64), Vec<u8>>,
        f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        fn io<'a>(op: &'static str, p: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
            move |e| Error::io(op, p, e)
        }
        let mut names = sys::list_dir(dir).map_err(io("listing", rel))?;
        names.sort();
        for name in names {
            let path = rel.join(&name);
            let bytes = path.as_os_str().as_bytes().to_vec();
            let Some(st) = sys::lstat_at(dir, &name).map_err(io("reading", &path))? else {
                continue;
            };
            let no_data: &mut dyn Read = &mut std::io::empty();
            match sys::file_type(&st) {
                FileType::Directory => {
                    let fd = sys::open_nofollow(dir, &name, true).map_err(io("opening", &path))?;
                    let xattrs = sys::xattrs(&fd).map_err(io("reading xattrs of", &path))?;
                    let opaque = xattrs.iter().any(|(k, v)| {
                        (k == "trusted.overlay.opaque" || k == "user.overlay.opaque") && v == b"y"
                    });
                    f(&stat_entry(bytes.clone(), &st, Kind::Dir, xattrs), no_data)?;
                    if opaque {
                        let marker = path.join(OPAQUE_MARKER);
                        f(
                            &stat_entry(
                                marker.as_os_str().as_bytes().to_vec(),
                                &st,
                                Kind::File,
                                Vec::new(),
                            ),
                            no_data,
                        )?;
                    }
                    self.walk(&fd, &path, links, f)?;
                }
                FileType::CharacterDevice if st.st_rdev == 0 => {
                    let mut wh = rel.as_os_str().as_bytes().to_vec();
                    if !wh.is_empty() {
                        wh.push(b'/');
                    }
                    wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                    wh.extend_from_slice(name.as_bytes());
                    f(&stat_entry(wh, &st, Kind::File, Vec::new()), no_data)?;
                }
                FileType::RegularFile => {
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = links.get(&key) {
                            f(
                                &stat_entry(bytes, &st, Kind::Hardlink(first.clone()), Vec::new()),
                                no_data,
                            )?;
                            continue;
                        }
                        links.insert(key, bytes.clone());
                    }
                    let fd = sys::open_nofollow(dir, &name, false).map_err(io("opening", &path))?;
                    let xattrs = sys::xattrs(&fd).map_err(io("reading xattrs of", &path))?;
                    let mut file = std::fs::File::from(fd);
                    f(&stat_entry(bytes, &st, Kind::File, xattrs), &mut file)?;
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(dir.as_fd(), &name, Vec::new())
                        .map_err(|e| Error::io("reading", &path, e))?;
                    let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                    f(
                        &stat_entry(bytes, &st, Kind::Symlink(target), Vec::new()),
                        no_data,
                    )?;
                }
                FileType::CharacterDevice | FileType::BlockDevice => {
                    let (major, minor) =
                        (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
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
        }
        Ok(())
    }
}

impl EntrySource for DirSource {
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()> {
        let root = sys::resolve_read(
            sys::open_root(&self.root).map_err(|e| Error::io("opening", &self.root, e))?,
            Path::new(""),
        )
        .map_err(|e| Error::io("opening", &self.root, e))?;
        self.walk(&root, Path::new(""), &mut HashMap::new(), f)
    }
}
