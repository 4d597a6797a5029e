//! Small regular files written on a pool of threads while the layer's own
//! thread reads on.
//!
//! The tar is read in order on the layer's thread. A small file's data is
//! read into memory there and handed to the writer pool, which creates and
//! fills it ([`FileRules::write`]) while the layer's thread goes on to the
//! next entry. The pool is one per process, a thread per core but one
//! (the layer's thread writes too when the pool has enough in flight),
//! shared by every layer being written at once, so every core stays busy
//! whatever the image's shape: one layer of 200 000 files as much as seven
//! big ones.
//!
//! Order is kept by the layer's thread: before an entry that could touch a
//! file in flight (the same path, a path below one, a directory above one,
//! a path through a symlink, which a file in flight may replace) and before
//! any entry other than a file or directory (links, whiteouts,
//! opaque markers, devices), it waits for every file in flight
//! ([`Fanout::conflicts`], [`Fanout::settle`]). Directory metadata is set at
//! the layer's end, after the last wait. In flight are at most
//! [`MAX_FILES`] files and [`MAX_BYTES`] of data per layer; past that, or
//! for a bigger file, the layer's thread writes the file itself.

use std::collections::HashSet;
use std::io::Read;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::entry::Entry;
use crate::regular::{FileRules, NewFile, XattrsKnown};
use crate::tree::WrittenFile;
use crate::{Error, Result};

/// Files at most this big go to the pool; bigger ones are written by the
/// layer's thread (their cost is the data, not the calls).
pub(crate) const MAX_FILE: u64 = 256 << 10;
/// Files in flight per layer.
const MAX_FILES: usize = 128;
/// Paths remembered for conflicts (in flight or landed since the last wait)
/// before a wait forgets them: bounds the memory of a layer of many files.
const MAX_TRACKED: usize = 16 << 10;
/// Bytes of data in flight per layer (bounds the memory a layer holds).
const MAX_BYTES: usize = 2 << 20;
/// Files handed to a pool thread as one task: one wake-up of a sleeping
/// thread and one update of the shared progress for them, not one each
/// (per file, those wake-ups were a tenth of the layer thread's samples on
/// a layer of small files).
const BATCH: usize = 16;

#[cfg(test)]
thread_local! {
    /// Tests: how long the pool sleeps before each file of a layer begun
    /// on this thread, so that files are surely still in flight when the
    /// entries after them are read (the order rules must hold anyway).
    pub(crate) static TEST_DELAY: std::cell::Cell<std::time::Duration> =
        const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// One layer's files in flight.
pub(crate) struct Fanout {
    rules: Arc<FileRules>,
    /// Whether files go to the pool at all.
    enabled: bool,
    #[cfg(test)]
    delay: std::time::Duration,
    state: Arc<State>,
    /// Where the files in flight land, and every directory above them, by
    /// [`path_keys`] under this layer's random key: two paths that share a
    /// key only make an entry wait for nothing (every directory above a
    /// file is recorded, whatever is recorded already, so a shared key
    /// never hides one).
    files: HashSet<u64>,
    dirs: HashSet<u64>,
    keys: std::hash::RandomState,
    /// The directory of the last file submitted, as spelled: its
    /// directories are recorded (until the next wait forgets them).
    last_dir: Option<Vec<u8>>,
    /// Files submitted but not yet handed to the pool (fewer than [`BATCH`]).
    pending: Batch,
}

/// What the pool reports back, under one lock.
#[derive(Default)]
struct Progress {
    files: usize,
    bytes: usize,
    /// The first error a file met.
    error: Option<Error>,
    skipped: u64,
    /// Written files, when recorded, by [`crate::tree::key`] of their path.
    written: Vec<([u8; 16], WrittenFile)>,
}

#[derive(Default)]
struct State {
    progress: Mutex<Progress>,
    done: Condvar,
}

/// What the pool did since the last [`Fanout::settle`].
#[derive(Default)]
pub(crate) struct Settled {
    /// Whether any file went to the pool since the last settle.
    pub(crate) waited: bool,
    pub(crate) skipped: u64,
    /// Written files, by [`crate::tree::key`] of their path.
    pub(crate) written: Vec<([u8; 16], WrittenFile)>,
}

/// A file for the pool, as the layer's thread hands it over.
pub(crate) struct Job<'a> {
    pub(crate) parent: &'a Arc<OwnedFd>,
    /// Where the file lands (messages and hashes use it).
    pub(crate) path: &'a Path,
    /// Where the file lands, every link followed: what conflicts are found by.
    pub(crate) resolved: &'a Path,
    pub(crate) entry: &'a Entry,
    pub(crate) setgid: bool,
    /// Whether the file is hashed and recorded for the tree digest.
    pub(crate) record: Option<XattrsKnown>,
}

/// Files handed to a pool thread together: each file's path and data in one
/// buffer (one allocation for the batch, not three for each file, and all
/// of it freed at once on the pool's thread).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    files: Vec<Queued>,
}

/// A file of a [`Batch`]: everything the pool needs, owned.
struct Queued {
    parent: Arc<OwnedFd>,
    /// Where its path and its data lie in the batch's bytes.
    path: Range<usize>,
    data: Range<usize>,
    /// The entry's metadata (its name is the path above).
    entry: Entry,
    setgid: bool,
    record: Option<XattrsKnown>,
}

/// The keys of `path` and of each of its ancestors up to the root, deepest
/// first: a keyed hash (SipHash, `keys`' random key: a layer cannot choose
/// names that share one) of its parts (empty and `.` parts skipped, so `d/`
/// and `d/./x` are `d` and `d/x`), each prefix's from one pass over the
/// bytes.
pub(crate) fn path_keys<K: std::hash::BuildHasher<Hasher: Clone>>(
    path: &Path,
    keys: &K,
) -> impl Iterator<Item = u64> + use<K> {
    use std::hash::Hasher as _;
    let mut hasher = keys.build_hasher();
    let mut keys: smallvec::SmallVec<[u64; 16]> = smallvec::smallvec![hasher.clone().finish()];
    for part in path.as_os_str().as_bytes().split(|b| *b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if keys.len() > 1 {
            hasher.write_u8(b'/');
        }
        hasher.write(part);
        keys.push(hasher.clone().finish());
    }
    keys.into_iter().rev()
}

impl Fanout {
    pub(crate) fn new(rules: FileRules, enabled: bool) -> Self {
        Self {
            rules: Arc::new(rules),
            enabled,
            #[cfg(test)]
            delay: TEST_DELAY.with(std::cell::Cell::get),
            state: Arc::default(),
            files: HashSet::new(),
            dirs: HashSet::new(),
            keys: std::hash::RandomState::new(),
            last_dir: None,
            pending: Batch::default(),
        }
    }

    /// The rules the pool writes with (the layer's thread writes with the same).
    pub(crate) fn rules(&self) -> &FileRules {
        &self.rules
    }

    /// Whether an entry landing at `resolved` could touch a file in flight:
    /// it is one, it is below one, or it is a directory above one.
    pub(crate) fn conflicts(&self, resolved: &Path) -> bool {
        if !self.in_flight() {
            return false;
        }
        let mut keys = path_keys(resolved, &self.keys);
        let own = keys.next().expect("a path has its own key");
        self.dirs.contains(&own)
            || self.files.contains(&own)
            || keys.any(|k| self.files.contains(&k))
    }

    /// Whether any file went to the pool since the last wait.
    pub(crate) fn in_flight(&self) -> bool {
        !self.files.is_empty()
    }

    /// Whether a file of `size` bytes may go to the pool now. When it may
    /// not (too many in flight), the files not yet handed over go, so that
    /// the pool has them while the layer's thread writes this one itself.
    pub(crate) fn has_room(&mut self, size: u64) -> bool {
        if !self.enabled || size > MAX_FILE {
            return false;
        }
        let room = {
            let progress = self.state.progress.lock().expect("fanout lock");
            progress.files < MAX_FILES && progress.bytes + size as usize <= MAX_BYTES
        };
        if !room {
            self.flush();
        }
        room
    }

    /// Whether the paths remembered should be forgotten (with a wait).
    pub(crate) fn is_full(&self) -> bool {
        self.files.len() + self.dirs.len() >= MAX_TRACKED
    }

    /// Reads the file's data (its entry's size, less if the stream ends)
    /// and hands it to the pool. A file that failed before is reported
    /// here (after the others in flight ended), so a broken layer stops
    /// early.
    pub(crate) fn submit(&mut self, job: &Job<'_>, data: &mut dyn Read) -> Result<()> {
        let failed = self
            .state
            .progress
            .lock()
            .expect("fanout lock")
            .error
            .is_some();
        if failed {
            self.settle()?;
        }
        let batch = &mut self.pending;
        let path_start = batch.bytes.len();
        batch
            .bytes
            .extend_from_slice(job.path.as_os_str().as_bytes());
        let data_start = batch.bytes.len();
        read_into(
            data,
            &mut batch.bytes,
            usize::try_from(job.entry.size).unwrap_or(0),
        )
        .map_err(crate::entry::stream_error)?;
        let data_range = data_start..batch.bytes.len();
        {
            let mut progress = self.state.progress.lock().expect("fanout lock");
            progress.files += 1;
            progress.bytes += data_range.len();
        }
        let mut keys = path_keys(job.resolved, &self.keys);
        self.files
            .insert(keys.next().expect("a path has its own key"));
        let bytes = job.resolved.as_os_str().as_bytes();
        let dir = &bytes[..bytes.iter().rposition(|b| *b == b'/').unwrap_or(0)];
        if self.last_dir.as_deref() != Some(dir) {
            self.dirs.extend(keys);
            self.last_dir = Some(dir.to_vec());
        }
        batch.files.push(Queued {
            parent: Arc::clone(job.parent),
            path: path_start..data_start,
            data: data_range,
            entry: Entry {
                name: Vec::new(),
                kind: crate::Kind::File,
                xattrs: job.entry.xattrs.clone(),
                sparse: None,
                ..*job.entry
            },
            setgid: job.setgid,
            record: job.record,
        });
        if batch.files.len() >= BATCH {
            self.flush();
        }
        Ok(())
    }

    /// Hands the files submitted since the last hand-over to a pool thread,
    /// which writes them in order.
    fn flush(&mut self) {
        if self.pending.files.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let (rules, state) = (Arc::clone(&self.rules), Arc::clone(&self.state));
        #[cfg(test)]
        let delay = self.delay;
        crate::pool::pool().spawn(move || {
            let mut done = Progress::default();
            for file in &batch.files {
                #[cfg(test)]
                std::thread::sleep(delay);
                done.files += 1;
                done.bytes += file.data.len();
                let path = Path::new(std::ffi::OsStr::from_bytes(&batch.bytes[file.path.clone()]));
                match write(&rules, file, path, &batch.bytes[file.data.clone()]) {
                    Ok(written) => {
                        done.skipped += written.skipped;
                        if let Some(recorded) = written.recorded() {
                            done.written.push((crate::tree::key(path), recorded));
                        }
                    }
                    Err(e) => {
                        done.error.get_or_insert(e);
                    }
                }
            }
            drop(batch);
            let mut progress = state.progress.lock().expect("fanout lock");
            progress.files -= done.files;
            progress.bytes -= done.bytes;
            progress.skipped += done.skipped;
            progress.written.append(&mut done.written);
            if let Some(e) = done.error
                && progress.error.is_none()
            {
                progress.error = Some(e);
            }
            if progress.files == 0 {
                state.done.notify_all();
            }
        });
    }

    /// Waits for every file in flight; returns what they did, or the first
    /// error one met.
    pub(crate) fn settle(&mut self) -> Result<Settled> {
        self.flush();
        let waited = !self.files.is_empty();
        self.files.clear();
        self.dirs.clear();
        self.last_dir = None;
        let mut progress = self.state.progress.lock().expect("fanout lock");
        while progress.files > 0 {
            progress = self.state.done.wait(progress).expect("fanout lock");
        }
        if let Some(e) = progress.error.take() {
            return Err(e);
        }
        Ok(Settled {
            waited,
            skipped: std::mem::take(&mut progress.skipped),
            written: std::mem::take(&mut progress.written),
        })
    }
}

impl Drop for Fanout {
    /// A layer that stops early (an error) still waits for its files in
    /// flight: nothing writes into a target its caller is about to discard.
    fn drop(&mut self) {
        let _ = self.settle();
    }
}

/// Appends up to `size` bytes of `data` to `out` (fewer where it ends):
/// only the bytes about to be read are zeroed first, where `read_to_end`
/// would zero all the room the buffer has.
fn read_into(data: &mut dyn Read, out: &mut Vec<u8>, size: usize) -> std::io::Result<()> {
    let start = out.len();
    out.resize(start + size, 0);
    let (filled, error) = crate::compression::fill(data, &mut out[start..]);
    if let Some(e) = error {
        out.truncate(start);
        return Err(e);
    }
    out.truncate(start + filled);
    Ok(())
}

/// Writes one file of a batch on a pool thread.
fn write(
    rules: &FileRules,
    file: &Queued,
    path: &Path,
    data: &[u8],
) -> Result<crate::regular::Written> {
    let new = NewFile {
        parent: &file.parent,
        path,
        entry: &file.entry,
        setgid: file.setgid,
        record: file.record,
    };
    rules.write(&new, |out| {
        std::io::Write::write_all(out, data).map_err(|e| Error::io("writing", path, e))?;
        Ok((
            data.len() as u64,
            file.record.is_some().then(|| blake3::hash(data)),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path's keys are those of its ancestors, deepest first, however the
    /// path is spelled: a conflict is found between `d/` (a directory
    /// resolved through the kernel) and a file in flight below `d`.
    #[test]
    fn a_paths_keys_are_its_ancestors_whatever_the_spelling() {
        let state = std::hash::RandomState::new();
        let keys = |p: &str| path_keys(Path::new(p), &state).collect::<Vec<_>>();
        let abc = keys("a/b/c");
        assert_eq!(abc.len(), 4, "a/b/c, a/b, a and the root");
        assert_eq!(abc[1..], keys("a/b")[..]);
        assert_eq!(abc[2..], keys("a")[..]);
        assert_eq!(abc[3..], keys("")[..]);
        for other in ["a/b/c/", "a//b/./c", "./a/b/c"] {
            assert_eq!(keys(other), abc, "{other}");
        }
        for different in ["a/bc", "ab/c", "a/b/cd", "a/b"] {
            assert_ne!(keys(different)[0], abc[0], "{different}");
        }
    }
}
