//! The filesystem calls extraction makes, as thin safe wrappers over rustix.
//!
//! Every path that comes from a layer is resolved with `openat2` and
//! `RESOLVE_IN_ROOT`, so `..` and symlinks (absolute or relative, in this
//! layer or below) are resolved as if the target were `/`: nothing outside it
//! can be reached. The last component is always handled with `*at` calls on
//! the parent's descriptor and never followed.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps,
};

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens the target directory itself.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn openat2_retrying(root: impl AsFd, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    openat2_with(root, rel, flags, RESOLVE)
}

fn openat2_with(
    root: impl AsFd,
    rel: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rfs::openat2(
            root.as_fd(),
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(rustix::io::Errno::AGAIN) if tries < 16 => tries += 1,
            other => return Ok(other?),
        }
    }
}

/// Resolves `rel` inside `root` (symlinks followed, clamped to the root) to a
/// directory handle usable with `*at` calls.
pub(crate) fn resolve_dir(root: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    openat2_retrying(root, rel, OFlags::PATH | OFlags::DIRECTORY)
}

/// Opens the directory `rel` inside `root` only if no part of it is a
/// symlink: where an entry recorded a directory (its path as it resolved
/// then), and not wherever a symlink a later entry put there leads.
pub(crate) fn open_dir_no_symlinks(root: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    openat2_with(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY,
        RESOLVE.union(ResolveFlags::NO_SYMLINKS),
    )
}

/// Resolves `rel` inside `root` and opens it for reading (file or directory).
pub(crate) fn resolve_read(root: impl AsFd, rel: &Path) -> io::Result<OwnedFd> {
    openat2_retrying(root, rel, OFlags::RDONLY)
}

/// `lstat` of one name in a directory; `None` when absent.
pub(crate) fn lstat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file type of a stat result.
pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Opens a directory entry of `dir` for reading without following a symlink.
pub(crate) fn open_nofollow(dir: impl AsFd, name: &OsStr, directory: bool) -> io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    Ok(rfs::openat(dir, name, flags, Mode::empty())?)
}

/// Lists a directory's entries (without `.` and `..`).
pub(crate) fn list_dir(dir: impl AsFd) -> io::Result<Vec<std::ffi::OsString>> {
    Ok(list_dir_typed(dir)?
        .into_iter()
        .map(|listed| listed.name)
        .collect())
}

/// Whether a new file in `dir` starts without xattrs: no security module
/// labels it and no default ACL is inherited (tried on an unnamed file,
/// which leaves nothing behind; false where one cannot be made).
pub(crate) fn new_files_get_no_xattrs(dir: impl AsFd) -> bool {
    match rfs::openat(
        dir,
        ".",
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        rfs::Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => matches!(
            rfs::flistxattr_query(&fd),
            Ok(0) | Err(rustix::io::Errno::NOTSUP)
        ),
        Err(_) => false,
    }
}

/// A node's xattrs: (name, value), sorted by name where read.
pub(crate) type Xattrs = Vec<(String, Vec<u8>)>;

/// One name of a directory listing, with what the listing says of it.
pub(crate) struct Listed {
    pub(crate) name: std::ffi::OsString,
    pub(crate) ino: u64,
    /// `Unknown` where the file system does not say.
    pub(crate) kind: FileType,
}

/// The names in a directory with their inode numbers and types, as
/// `getdents` gives them (no stat), without `.` and `..`.
pub(crate) fn list_dir_typed(dir: impl AsFd) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(Listed {
                name: <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name).to_owned(),
                ino: entry.ino(),
                kind: entry.file_type(),
            });
        }
    }
    Ok(out)
}

/// Removes `name` from `dir`, recursively for directories, never following
/// a symlink. One directory descriptor is open at a time whatever the depth
/// (down with `openat`, up through `..`, checked by inode).
pub(crate) fn remove_all_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir.as_fd(), name)? else {
        return Ok(());
    };
    if file_type(&st) != FileType::Directory {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(());
    }
    let top = (st.st_dev, st.st_ino);
    let mut current = open_nofollow(dir.as_fd(), name, true)?;
    // (name, parent's identity) of each directory below `name` entered.
    let mut down: Vec<(std::ffi::OsString, (u64, u64))> = Vec::new();
    let mut here = top;
    loop {
        let mut subdir = None;
        for child in list_dir(&current)? {
            match lstat_at(&current, &child)? {
                Some(st) if file_type(&st) == FileType::Directory => {
                    subdir.get_or_insert((child, (st.st_dev, st.st_ino)));
                }
                Some(_) => rfs::unlinkat(&current, child.as_os_str(), AtFlags::empty())?,
                None => {}
            }
        }
        if let Some((child, id)) = subdir {
            let fd = open_nofollow(&current, &child, true)?;
            let st = rfs::fstat(&fd)?;
            if (st.st_dev, st.st_ino) != id {
                return Err(io::Error::other("a directory moved while it was removed"));
            }
            down.push((child, here));
            here = id;
            current = fd;
            continue;
        }
        let Some((child, parent)) = down.pop() else {
            drop(current);
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            return Ok(());
        };
        let up = open_nofollow(&current, OsStr::new(".."), true)?;
        let st = rfs::fstat(&up)?;
        if (st.st_dev, st.st_ino) != parent {
            return Err(io::Error::other("a directory moved while it was removed"));
        }
        current = up;
        here = parent;
        rfs::unlinkat(&current, child.as_os_str(), AtFlags::REMOVEDIR)?;
    }
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)`
/// would change it for a moment, under other threads creating files);
/// `0o777` when it cannot be read, so that every mode is set explicitly.
pub(crate) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// The path the kernel has for an open descriptor (`/proc/self/fd`), if
/// `/proc` is there.
pub(crate) fn fd_path(fd: impl AsFd) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).ok()
}

/// Where a regular file holds data, as (offset, length) runs, when it has
/// holes (`SEEK_DATA`/`SEEK_HOLE`); `None` for a file without holes, or on
/// a filesystem that cannot say. Leaves the offset at 0.
pub(crate) fn data_chunks(fd: impl AsFd, st: &Stat) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks)
        .unwrap_or(u64::MAX)
        .saturating_mul(512);
    if size == 0 || allocated >= size {
        return Ok(None);
    }
    let fd = fd.as_fd();
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < size {
        let data = match rfs::seek(fd, rfs::SeekFrom::Data(at)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let hole = rfs::seek(fd, rfs::SeekFrom::Hole(data))?.min(size);
        if hole > data {
            chunks.push((data, hole - data));
        }
        at = hole;
    }
    rfs::seek(fd, rfs::SeekFrom::Start(0))?;
    if chunks == [(0, size)] {
        return Ok(None);
    }
    Ok(Some(chunks))
}

/// Timestamps with atime = mtime.
pub(crate) fn times(secs: i64, nanos: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// All extended attributes of an open file.
pub(crate) fn xattrs(fd: impl AsFd) -> io::Result<Vec<(String, Vec<u8>)>> {
    let fd = fd.as_fd();
    collect_xattrs(
        || rfs::flistxattr_query(fd),
        |buf| rfs::flistxattr(fd, buf),
        |name| rfs::fgetxattr_query(fd, name),
        |name, buf| rfs::fgetxattr(fd, name, buf),
    )
}

/// All extended attributes of a path, not following a final symlink (a
/// symlink or a device node must not be opened to read them).
pub(crate) fn xattrs_nofollow(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    collect_xattrs(
        || rfs::llistxattr_query(path),
        |buf| rfs::llistxattr(path, buf),
        |name| rfs::lgetxattr_query(path, name),
        |name, buf| rfs::lgetxattr(path, name, buf),
    )
}

/// All extended attributes of `name` in `dir`, not following it (for
/// symlinks and device nodes, which must not be opened): through
/// `/proc/self/fd/DIR/NAME`, so the path given to the kernel stays short.
pub(crate) fn xattrs_at(dir: impl AsFd, name: &OsStr) -> io::Result<Vec<(String, Vec<u8>)>> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/proc/self/fd")
        .join(dir.as_fd().as_raw_fd().to_string())
        .join(name);
    xattrs_nofollow(&path)
}

/// A path for messages: long ones keep their head and tail, so that an
/// error line stays readable.
pub(crate) fn short_path(path: &Path) -> String {
    const HEAD: usize = 60;
    const TAIL: usize = 120;
    let text = path.to_string_lossy();
    if text.len() <= HEAD + TAIL + 20 {
        return text.into_owned();
    }
    let mut head = HEAD;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - TAIL;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}…({} bytes)…{}",
        &text[..head],
        text.len() - head - (text.len() - tail),
        &text[tail..]
    )
}

/// Lists and reads xattrs through the given calls (the `f*` or the `l*`
/// family), sorted by name.
fn collect_xattrs(
    list_len: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    value_len: impl Fn(&str) -> rustix::io::Result<usize>,
    value: impl Fn(&str, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let size = match list_len() {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size];
    let n = list(&mut names[..])?;
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut buf = vec![0u8; value_len(&name)?];
        let got = value(&name, &mut buf[..])?;
        buf.truncate(got);
        out.push((name, buf));
    }
    out.sort();
    Ok(out)
}

/// Whether the running kernel is at least `major.minor`.
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Whether the process runs as root (may chown, mknod devices, set trusted xattrs).
#[must_use]
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
