//! How one regular file is written: create (or replace), data, owner, mode,
//! xattrs, times, in as few calls as the guarantees allow. Shared by the
//! layer's own thread and the writer pool ([`crate::fanout`]), so a file is
//! written the same way whichever thread writes it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, Gid, Mode as FsMode, OFlags, Uid, XattrFlags};
use tracing::warn;

use crate::entry::Entry;
use crate::{Error, Options, Owners, Result, sys};

/// What every file of one layer is written with, fixed for the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRules {
    pub(crate) opts: Options,
    /// Whether the kernel shows escaped overlay xattrs (≥ 6.7), so a layer's
    /// own overlay xattrs can be kept escaped rather than dropped.
    pub(crate) escape_overlay_xattrs: bool,
    /// The process umask: a file whose mode it leaves whole is created
    /// with that mode, and needs no `fchmod`.
    pub(crate) umask: u32,
    /// Who a new file belongs to without an `fchown`.
    pub(crate) creator: (u64, u64),
}

/// One regular file to write.
pub(crate) struct NewFile<'a> {
    /// The open parent directory.
    pub(crate) parent: &'a OwnedFd,
    /// Where the file lands, relative to the target (for messages).
    pub(crate) path: &'a Path,
    pub(crate) entry: &'a Entry,
    /// Whether the parent is setgid (a new file takes its group).
    pub(crate) setgid: bool,
    /// Whether to report what the file became ([`Written::node`]), and how
    /// its xattrs are known.
    pub(crate) record: Option<XattrsKnown>,
}

/// How a written file's xattrs are known for [`Written::node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XattrsKnown {
    /// A new file here gets no xattrs but those set on it (no security
    /// label, no inherited ACL): those it was given in the user and trusted
    /// namespaces, which the kernel keeps as they are, are all it has. A
    /// file given any other (a capability, an ACL, which the kernel may
    /// rewrite or fold into the mode) has them read back.
    AsSet,
    /// Read back from the descriptor.
    ReadBack,
}

/// What writing one file did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Bytes of data written.
    pub(crate) size: u64,
    /// The data's hash, when the body computed one.
    pub(crate) hash: Option<blake3::Hash>,
    /// Xattrs that could not be set or were dropped.
    pub(crate) skipped: u64,
    /// What the file became, when [`NewFile::record`] asked: its inode
    /// number, stat and xattrs once complete, for the tree digest.
    pub(crate) node: Option<crate::tree::Node>,
}

impl FileRules {
    pub(crate) fn new(opts: Options) -> Self {
        Self {
            opts,
            escape_overlay_xattrs: opts.mode == crate::Mode::Overlay && sys::kernel_at_least(6, 7),
            umask: sys::umask(),
            creator: (
                u64::from(rustix::process::geteuid().as_raw()),
                u64::from(rustix::process::getegid().as_raw()),
            ),
        }
    }

    /// Writes `file`: an exclusive create (and only on `EEXIST` the old
    /// entry is replaced, whatever it is), the data from `body` (which
    /// returns its size and hash), the owner unless the creator's is the
    /// entry's, the mode unless the create gave it, xattrs, then the times
    /// on the open descriptor.
    pub(crate) fn write(
        &self,
        file: &NewFile<'_>,
        body: impl FnOnce(&mut File) -> Result<(u64, Option<blake3::Hash>)>,
    ) -> Result<Written> {
        let (entry, path) = (file.entry, file.path);
        let name = path.file_name().unwrap_or(OsStr::new("."));
        let permissions = entry.mode & 0o777;
        let mode_at_create = entry.mode & 0o7000 == 0 && permissions & self.umask == 0;
        let create = || {
            rfs::openat(
                file.parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                FsMode::from_raw_mode(if mode_at_create { permissions } else { 0o600 }),
            )
        };
        let fd = match create() {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                // An earlier entry (or a lower layer, in apply mode) has the
                // name: it goes, whatever it is, and the file takes its place.
                sys::remove_all_at(file.parent, name)
                    .map_err(|e| Error::io("replacing", path, e))?;
                create().map_err(|e| Error::io("creating", path, e))?
            }
            Err(e) => return Err(Error::io("creating", path, e)),
        };
        let mut out = File::from(fd);
        let (size, hash) = body(&mut out)?;
        // The creator's owner is the entry's unless the ids differ or a
        // setgid parent gave the file its group.
        if (entry.uid, entry.gid) != self.creator
            || file.setgid
            || self.opts.owners == Owners::Record
        {
            self.own(&out, entry, path)?;
        }
        // After the owner: a chown clears setuid and setgid bits.
        if !mode_at_create {
            rfs::fchmod(&out, FsMode::from_raw_mode(entry.mode))
                .map_err(|e| Error::io("setting the mode of", path, e))?;
        }
        let (skipped, mut set) = self.set_xattrs(&out, entry, path)?;
        rfs::futimens(&out, &sys::times(entry.mtime, entry.mtime_nsec))
            .map_err(|e| Error::io("setting the mtime of", path, e))?;
        let node = match file.record {
            None => None,
            Some(known) => {
                // The file is complete: what the kernel says of it now is
                // what the layer holds (one call, on the descriptor).
                let st = rfs::fstat(&out).map_err(|e| Error::io("reading back", path, e))?;
                if self.opts.owners == Owners::Record {
                    set.push((
                        crate::OVERRIDE_STAT_XATTR.to_owned(),
                        crate::override_stat::format(entry).into_bytes(),
                    ));
                }
                set.sort();
                // A name set twice (the layer named it twice, or two names
                // came to one once made UTF-8 or escaped) holds only one of
                // its values: read back what the file has.
                let as_set = known == XattrsKnown::AsSet
                    && set.iter().all(|(k, _)| kept_verbatim(k))
                    && set.windows(2).all(|w| w[0].0 != w[1].0);
                let xattrs = if as_set {
                    set
                } else {
                    sys::xattrs(&out).map_err(|e| Error::io("reading the xattrs of", path, e))?
                };
                Some(crate::tree::Node {
                    ino: st.st_ino,
                    meta: crate::tree::Meta::of(&st),
                    xattrs: xattrs.into(),
                })
            }
        };
        Ok(Written {
            size,
            hash,
            skipped,
            node,
        })
    }

    /// Gives `fd` the entry's owner, or records it (without a range of ids),
    /// as the options say.
    pub(crate) fn own(&self, fd: impl AsFd, entry: &Entry, path: &Path) -> Result<()> {
        match self.opts.owners {
            Owners::Set => rfs::fchown(fd, uid(entry.uid), gid(entry.gid))
                .map_err(|e| Error::io("setting the owner of", path, e)),
            Owners::Record => rfs::fsetxattr(
                fd,
                crate::OVERRIDE_STAT_XATTR,
                crate::override_stat::format(entry).as_bytes(),
                XattrFlags::empty(),
            )
            .map_err(|e| Error::io("recording the owner of", path, e)),
            Owners::Ignore => Ok(()),
        }
    }

    /// Sets an entry's xattrs; returns how many were skipped and those set,
    /// under the names set. Overlay's own namespaces never pass through as
    /// they are: a layer must not steer the overlay.
    pub(crate) fn set_xattrs(
        &self,
        fd: impl AsFd,
        entry: &Entry,
        path: &Path,
    ) -> Result<(u64, crate::sys::Xattrs)> {
        let (mut skipped, mut set) = (0, Vec::new());
        for (key, value) in &entry.xattrs {
            let key = match crate::engine::overlay_xattr_policy(
                key,
                &self.opts,
                self.escape_overlay_xattrs,
            ) {
                crate::engine::XattrPolicy::Keep => key.clone(),
                crate::engine::XattrPolicy::Escape(escaped) => escaped,
                crate::engine::XattrPolicy::Drop => {
                    warn!(entry = %path.display(), xattr = %key, "dropping an overlayfs xattr carried by the layer");
                    skipped += 1;
                    continue;
                }
            };
            match rfs::fsetxattr(fd.as_fd(), key.as_str(), value, XattrFlags::empty()) {
                Ok(()) => set.push((key, value.clone())),
                Err(e @ (rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM)) => {
                    warn!(entry = %path.display(), xattr = %key, error = %io::Error::from(e), "cannot set xattr here; skipped");
                    skipped += 1;
                }
                Err(e) => return Err(Error::io("setting an xattr on", path, e)),
            }
        }
        Ok((skipped, set))
    }
}

impl Written {
    /// What the tree digest keeps of the file, when it was recorded.
    pub(crate) fn recorded(self) -> Option<crate::tree::WrittenFile> {
        Some(crate::tree::WrittenFile {
            size: self.size,
            hash: *self.hash?.as_bytes(),
            node: self.node?,
        })
    }
}

/// Whether the kernel keeps an xattr of this name as it was set (and adds
/// nothing for it): true of the user and trusted namespaces; not of
/// `security.capability` (rewritten in a user namespace) or the ACLs
/// (`system.*`, which may be folded into the mode and dropped).
pub(crate) fn kept_verbatim(name: &str) -> bool {
    name.starts_with("user.") || name.starts_with("trusted.")
}

pub(crate) fn uid(n: u64) -> Option<Uid> {
    u32::try_from(n).ok().map(Uid::from_raw)
}

pub(crate) fn gid(n: u64) -> Option<Gid> {
    u32::try_from(n).ok().map(Gid::from_raw)
}
