//! An archive being written: a tar beside its target, named
//! `.NAME.tmp-PID`, entries appended as they come, renamed over the target
//! by `finish`. A broken or killed write leaves the old file (or none),
//! never half of one; an unfinished temp file is removed on drop.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result};

pub(crate) struct ArchiveFile {
    path: PathBuf,
    tmp: PathBuf,
    format: &'static str,
    tar: Mutex<Option<tar::Builder<BufWriter<File>>>>,
    /// Entries are owned by whoever writes the archive, as tar's are:
    /// skopeo, unpacking as an ordinary user, chowns to what they say.
    owner: (u32, u32),
    finished: Mutex<bool>,
}

impl ArchiveFile {
    pub(crate) fn create(path: &Path, format: &'static str) -> Result<Self> {
        let invalid = |detail: String| Error::InvalidLayout {
            path: path.to_owned(),
            format,
            detail,
        };
        let file_name = match path.file_name() {
            Some(n) if !path.as_os_str().to_string_lossy().ends_with('/') => n,
            _ => {
                return Err(invalid(
                    "it names a directory; name the archive file".into(),
                ));
            }
        };
        if path.is_dir() {
            return Err(invalid("it is a directory; name the archive file".into()));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(invalid(format!(
                "its directory {} does not exist",
                parent.display()
            )));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".{}.tmp-{}-{}",
            file_name.to_string_lossy(),
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        remove_stale_archives(&parent, &file_name.to_string_lossy());
        // O_EXCL: a symlink planted at the temp name is an error, never
        // followed.
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| invalid(format!("creating {}: {e}", tmp.display())))?;
        let owner = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = file.metadata().map_err(|e| Error::io(&tmp, e))?;
            (meta.uid(), meta.gid())
        };
        Ok(Self {
            path: path.to_owned(),
            tmp,
            format,
            tar: Mutex::new(Some(tar::Builder::new(BufWriter::with_capacity(
                1 << 20,
                file,
            )))),
            owner,
            finished: Mutex::new(false),
        })
    }

    /// The target.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A scratch file name beside the archive (same filesystem).
    pub(crate) fn scratch_path(&self, what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tmp.with_extension(format!("{what}-{n}"))
    }

    fn abandoned(&self) -> Error {
        Error::InvalidLayout {
            path: self.tmp.clone(),
            format: self.format,
            detail: "an earlier write failed; the archive is abandoned".into(),
        }
    }

    /// A directory entry.
    pub(crate) fn append_dir(&self, name: &str) -> Result<()> {
        let mut guard = self.tar.lock().expect("archive lock poisoned");
        let builder = guard.as_mut().ok_or_else(|| self.abandoned())?;
        let mut header = tar::Header::new_ustar();
        let result = (|| {
            header.set_path(name)?;
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(self.owner.0.into());
            header.set_gid(self.owner.1.into());
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, io::empty())
        })();
        result.map_err(|e| {
            *guard = None;
            Error::io(&self.tmp, e)
        })
    }

    /// A file entry of exactly `size` bytes from `data`, read to its end
    /// (a verifying stream checks its digest there; a longer one fails).
    pub(crate) fn append(
        &self,
        name: &str,
        size: u64,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<()> {
        let mut guard = self.tar.lock().expect("archive lock poisoned");
        let builder = guard.as_mut().ok_or_else(|| self.abandoned())?;
        let mut header = tar::Header::new_ustar();
        let result = (|| {
            header.set_path(name)?;
            header.set_size(size);
            header.set_mode(0o644);
            header.set_uid(self.owner.0.into());
            header.set_gid(self.owner.1.into());
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            let mut counted = Counted { inner: data, n: 0 };
            builder.append(&header, &mut Read::take(&mut counted, size))?;
            if counted.n != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name}: {} of {size} bytes", counted.n),
                ));
            }
            if counted.inner.read(&mut [0u8; 1])? != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: more than {size} bytes"),
                ));
            }
            Ok(())
        })();
        result.map_err(|e| {
            // A tar with half an entry is no archive: stop writing it.
            *guard = None;
            blob_error(e, what, &self.tmp)
        })
    }

    /// Ends the tar, syncs it and renames it over the target.
    pub(crate) fn finish(&self) -> Result<()> {
        let builder = self.tar.lock().expect("archive lock poisoned").take();
        let Some(builder) = builder else {
            return Err(self.abandoned());
        };
        let result = (|| {
            let file = builder
                .into_inner()?
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            fs::rename(&self.tmp, &self.path)
        })();
        result.map_err(|e| Error::io(&self.path, e))?;
        *self.finished.lock().expect("lock") = true;
        Ok(())
    }
}

impl Drop for ArchiveFile {
    fn drop(&mut self) {
        if !*self.finished.lock().expect("lock") {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Removes the temp files of `name` a killed writer left beside it.
fn remove_stale_archives(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if !file.starts_with(&prefix) {
            continue;
        }
        let Some(pid) = super::oci_writer::stale_pid(file) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A source error (integrity included) stays what it is; anything else is
/// the destination's file.
pub(crate) fn blob_error(e: io::Error, what: &str, path: &Path) -> Error {
    if crate::digest::integrity_error(&e).is_some() {
        return crate::source::integrity_from_io(e);
    }
    Error::Io {
        path: path.to_owned(),
        source: io::Error::new(e.kind(), format!("writing {what}: {e}")),
    }
}

struct Counted<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
