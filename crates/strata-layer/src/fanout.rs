//! Small regular files written on a pool of threads while the layer's own
//! thread reads on.
//!
//! The tar is read in order on the layer's thread. A small file's data is
//! read into memory there and handed to the writer pool, which creates and
//! fills it ([`FileRules::write`]) while the layer's thread goes on to the
//! next entry. The pool is one per process, a thread per core, shared by
//! every layer being written at once, so both cores stay busy whatever the
//! image's shape: one layer of 200 000 files as much as seven big ones.
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
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
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
    /// Where the files in flight land, and every directory above them.
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    /// Files submitted but not yet handed to the pool (fewer than [`BATCH`]).
    pending: Vec<Job>,
}

/// What the pool reports back, under one lock.
#[derive(Default)]
struct Progress {
    files: usize,
    bytes: usize,
    /// The first error a file met.
    error: Option<Error>,
    skipped: u64,
    /// Written files, when recorded.
    written: Vec<(PathBuf, WrittenFile)>,
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
    pub(crate) written: Vec<(PathBuf, WrittenFile)>,
}

/// A file for the pool: everything it needs, owned.
pub(crate) struct Job {
    pub(crate) parent: Arc<OwnedFd>,
    /// Where the file lands (messages and hashes use it).
    pub(crate) path: PathBuf,
    /// Where the file lands, every link followed: what conflicts are found by.
    pub(crate) resolved: PathBuf,
    pub(crate) entry: Entry,
    pub(crate) setgid: bool,
    pub(crate) data: Vec<u8>,
    /// Whether the file is hashed and recorded for the tree digest.
    pub(crate) record: Option<XattrsKnown>,
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
            pending: Vec::new(),
        }
    }

    /// The rules the pool writes with (the layer's thread writes with the same).
    pub(crate) fn rules(&self) -> &FileRules {
        &self.rules
    }

    /// Whether an entry landing at `resolved` could touch a file in flight:
    /// it is one, it is below one, or it is a directory above one.
    pub(crate) fn conflicts(&self, resolved: &Path) -> bool {
        self.in_flight()
            && (self.dirs.contains(resolved)
                || resolved.ancestors().any(|a| self.files.contains(a)))
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

    /// Hands `job` to the pool. A file that failed before is reported here
    /// (after the others in flight ended), so a broken layer stops early.
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
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
        {
            let mut progress = self.state.progress.lock().expect("fanout lock");
            progress.files += 1;
            progress.bytes += job.data.len();
        }
        let mut dir = job.resolved.parent();
        while let Some(d) = dir {
            if self.dirs.contains(d) {
                break;
            }
            self.dirs.insert(d.to_owned());
            dir = d.parent();
        }
        self.files.insert(job.resolved.clone());
        self.pending.push(job);
        if self.pending.len() >= BATCH {
            self.flush();
        }
        Ok(())
    }

    /// Hands the files submitted since the last hand-over to a pool thread,
    /// which writes them in order.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.pending);
        let (rules, state) = (Arc::clone(&self.rules), Arc::clone(&self.state));
        #[cfg(test)]
        let delay = self.delay;
        crate::pool::pool().spawn(move || {
            let mut done = Progress::default();
            for job in jobs {
                #[cfg(test)]
                std::thread::sleep(delay);
                done.files += 1;
                done.bytes += job.data.len();
                match write(&rules, &job) {
                    Ok(written) => {
                        done.skipped += written.skipped;
                        if let Some(file) = written.recorded() {
                            done.written.push((job.path, file));
                        }
                    }
                    Err(e) => {
                        done.error.get_or_insert(e);
                    }
                }
            }
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

/// Writes one file of a batch on a pool thread.
fn write(rules: &FileRules, job: &Job) -> Result<crate::regular::Written> {
    let file = NewFile {
        parent: &job.parent,
        path: &job.path,
        entry: &job.entry,
        setgid: job.setgid,
        record: job.record,
    };
    rules.write(&file, |out| {
        std::io::Write::write_all(out, &job.data)
            .map_err(|e| Error::io("writing", &job.path, e))?;
        Ok((
            job.data.len() as u64,
            job.record.is_some().then(|| blake3::hash(&job.data)),
        ))
    })
}
