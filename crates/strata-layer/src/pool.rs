//! The process's writer pool: a thread per core but one, on which small
//! files are written ([`crate::fanout`]) and the tree digest looks names up
//! ([`crate::tree`]).
//!
//! One core is left to the layer's own thread, which reads the tar and
//! writes files itself when the pool has enough in flight: one thread
//! creating files per core. A thread per core besides it made the kernel
//! work harder per file (threads creating files in one ext4 at once take
//! turns on its directory, inode-table and journal locks, and spin on
//! them): on two cores, the 200 000-file pull took 2.31 s (median of 5)
//! with two pool threads, 2.20 s with one (see BENCHMARKS.md).
//!
//! Its threads sleep on a channel between tasks. A work-stealing pool
//! (rayon, which strata used before) spins through rounds of
//! `sched_yield` each time it runs dry, and a layer's thread hands it files
//! one at a time with gaps between them: on two cores that spinning was a
//! fifth of a commit's samples, taken from the thread that reads the tree
//! (measured with `perf record -a`, see BENCHMARKS.md).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Task = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads taking tasks in order from one queue.
pub(crate) struct Pool {
    tasks: Sender<Task>,
    threads: usize,
}

/// The process's pool, started on first use.
pub(crate) fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Pool::new("strata-writer", cores.saturating_sub(1).max(1))
    })
}

impl Pool {
    fn new(name: &str, threads: usize) -> Self {
        let (tasks, queue) = channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&queue))
                .expect("starting the writer pool");
        }
        Self { tasks, threads }
    }

    /// How many threads the pool has.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task` on a pool thread. A task that panics ends the process
    /// (its caller would otherwise wait for it forever), as rayon does.
    pub(crate) fn spawn(&self, task: impl FnOnce() + Send + 'static) {
        self.tasks
            .send(Box::new(task))
            .expect("the writer pool's threads never stop");
    }
}

/// A pool thread: the next task, until the process ends.
fn work(queue: &Mutex<Receiver<Task>>) {
    loop {
        // The lock is held only while waiting: one thread waits on the
        // channel, the others on the lock, all of them asleep.
        let next = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(task) = next else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_the_pools_threads() {
        let pool = Pool::new("test-pool", 2);
        let (done, results) = channel();
        for i in 0..200 {
            let done = done.clone();
            pool.spawn(move || {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                done.send((i, name)).unwrap();
            });
        }
        let mut got: Vec<(i32, String)> = results.iter().take(200).collect();
        got.sort_unstable();
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..200).collect::<Vec<_>>()
        );
        assert!(
            got.iter().all(|(_, name)| name.starts_with("test-pool-")),
            "{got:?}"
        );
    }
}
