//! strata's user and mount namespace, and the holder process that keeps it.
//!
//! The holder is strata itself, started with [`HOLDER_ENV`] set: it calls
//! `unshare(CLONE_NEWUSER | CLONE_NEWNS)`, says so on its stdout, waits
//! while its parent writes the id maps (`newuidmap`/`newgidmap`, which only
//! a process outside the namespace may run), makes its mounts private, says
//! it is ready, and then sleeps until `SIGTERM`. Its pid and start time are
//! the store's record (`STATE/holder`); a record whose process is gone or is
//! another process with the same pid is stale and replaced.
//!
//! Every strata process that works on a rootless store joins the holder's
//! namespaces with `setns` and holds a shared `flock` on `STATE/users`
//! while it is in them (`strata unshare` passes it to the command it runs).
//! The holder is stopped only with that lock had exclusively, so it never
//! goes away under a process that uses it. Starting and stopping are
//! serialised by `STATE/lock` (flock cannot turn a lock from exclusive to
//! shared without a moment of holding none).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::FlockOperation;
use rustix::thread::LinkNameSpaceType;
use tracing::debug;

use crate::privilege::{Mapping, User};
use crate::{Error, Result, sys};

/// Set in the environment of a strata process that is to be a holder.
const HOLDER_ENV: &str = "_STRATA_NAMESPACE_HOLDER";

/// A holder process: its pid and its start time (in clock ticks since
/// boot, from `/proc/PID/stat`), which tell it from a later process that got
/// the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// The start time.
    pub start: u64,
}

impl Holder {
    /// Whether the process is still this holder.
    #[must_use]
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// `PID:START`, as mount records keep it.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}:{}", self.pid, self.start)
    }

    /// Parses [`Holder::id`]'s form.
    #[must_use]
    pub fn from_id(id: &str) -> Option<Self> {
        let (pid, start) = id.trim().split_once(':')?;
        Some(Self {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    fn read(dir: &Path) -> Option<Self> {
        Self::from_id(&std::fs::read_to_string(dir.join("holder")).ok()?)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("holder.tmp-{}", std::process::id()));
        std::fs::write(&tmp, self.id()).map_err(|e| Error::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, dir.join("holder")).map_err(|e| Error::io("renaming", &tmp, e))
    }
}

/// The start time of process `pid`, if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process, inside strata's namespace for one store.
#[derive(Debug)]
pub struct Namespace {
    dir: PathBuf,
    holder: Holder,
    users: File,
}

fn lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

fn flock(file: &File, op: FlockOperation, path: &Path) -> Result<()> {
    rustix::fs::flock(file, op).map_err(|e| Error::io("locking", path, e))
}

impl Namespace {
    /// Finds the holder recorded in `state_dir` (starting one for `user`
    /// when there is none alive) and moves this process into its user and
    /// mount namespaces. The working directory is kept.
    ///
    /// Call it before the process starts a thread: the kernel refuses to
    /// move a multi-threaded process into a user namespace.
    ///
    /// # Errors
    /// Each refusal says what to do: [`Error::MissingTool`],
    /// [`Error::UsernsDisabled`], [`Error::MapRefused`], or a failed join.
    pub fn enter(state_dir: &Path, user: &User) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io("creating", state_dir, e))?;
        let (lock_path, users_path) = (state_dir.join("lock"), state_dir.join("users"));
        let lock = lock_file(&lock_path)?;
        flock(&lock, FlockOperation::LockExclusive, &lock_path)?;
        let holder = match Holder::read(state_dir).filter(Holder::alive) {
            Some(holder) => holder,
            None => {
                let holder = start(user)?;
                holder.write(state_dir)?;
                debug!(pid = holder.pid, "started the namespace holder");
                holder
            }
        };
        let users = lock_file(&users_path)?;
        flock(&users, FlockOperation::LockShared, &users_path)?;
        join(holder)?;
        drop(lock);
        Ok(Self {
            dir: state_dir.to_owned(),
            holder,
            users,
        })
    }

    /// The holder this process joined.
    #[must_use]
    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// Lets a program this process `exec`s keep the shared lock, so that
    /// the holder outlives it (`strata unshare`).
    ///
    /// # Errors
    /// When the descriptor flags cannot be changed.
    pub fn pass_to_exec(&self) -> Result<()> {
        rustix::io::fcntl_setfd(&self.users, rustix::io::FdFlags::empty())
            .map_err(|e| Error::io("passing on", self.dir.join("users"), e))
    }

    /// Leaves the holder running when `needed` (mounts live in it), else
    /// stops it, unless another strata process is in its namespace.
    pub fn leave(self, needed: bool) {
        if needed {
            return;
        }
        let lock_path = self.dir.join("lock");
        let Ok(lock) = lock_file(&lock_path) else {
            return;
        };
        if flock(&lock, FlockOperation::LockExclusive, &lock_path).is_err()
            || rustix::fs::flock(&self.users, FlockOperation::NonBlockingLockExclusive).is_err()
        {
            return;
        }
        if Holder::read(&self.dir) == Some(self.holder) && self.holder.alive() {
            let _ = std::fs::remove_file(self.dir.join("holder"));
            if let Some(pid) = rustix::process::Pid::from_raw(self.holder.pid.cast_signed()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            debug!(pid = self.holder.pid, "stopped the namespace holder");
        }
    }
}

/// Starts a holder and maps its namespace for `user`.
fn start(user: &User) -> Result<Holder> {
    let ranges = match (user.mapping(), user.uids, user.gids) {
        (Mapping::Ranges, Some(uids), Some(gids)) => {
            for tool in ["newuidmap", "newgidmap"] {
                find_tool(tool)?;
            }
            Some((uids, gids))
        }
        _ => None,
    };
    let mut child = Command::new("/proc/self/exe")
        .env(HOLDER_ENV, "1")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Holder(format!("running /proc/self/exe: {e}")))?;
    let pid = child.id();
    let (Some(mut to_child), Some(from_child)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(Error::Holder("no pipes to the holder".into()));
    };
    let mut from_child = BufReader::new(from_child);
    let mut said = || -> Result<String> {
        let mut line = String::new();
        from_child
            .read_line(&mut line)
            .map_err(|e| Error::Holder(format!("reading from the holder: {e}")))?;
        Ok(line.trim_end().to_owned())
    };
    let fail = |child: &mut std::process::Child, e: Error| {
        let _ = child.kill();
        let _ = child.wait();
        e
    };
    match said()?.as_str() {
        "unshared" => {}
        answer => {
            let _ = child.wait();
            let errno = answer
                .strip_prefix("error ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<i32>().ok());
            return Err(userns_refusal(errno, answer));
        }
    }
    let mapped = match ranges {
        Some((uids, gids)) => map_ranges(pid, user, uids, gids),
        None => map_single(pid, user),
    };
    if let Err(e) = mapped {
        return Err(fail(&mut child, e));
    }
    if let Err(e) = writeln!(to_child, "mapped") {
        return Err(fail(
            &mut child,
            Error::Holder(format!("writing to the holder: {e}")),
        ));
    }
    match said()?.as_str() {
        "ready" => {}
        answer => {
            return Err(fail(
                &mut child,
                Error::Holder(format!("the holder said {answer:?}")),
            ));
        }
    }
    let start = start_time(pid).ok_or_else(|| Error::Holder("the holder exited".into()))?;
    Ok(Holder { pid, start })
}

fn find_tool(tool: &'static str) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
        Ok(())
    } else {
        Err(Error::MissingTool { tool })
    }
}

/// Namespace 0 is the user, 1.. the range: podman's layout, so that an
/// image's root is the user and its other ids are the user's subordinates.
fn map_ranges(pid: u32, user: &User, uids: crate::SubIds, gids: crate::SubIds) -> Result<()> {
    for (tool, own, range) in [("newuidmap", user.uid, uids), ("newgidmap", user.gid, gids)] {
        let args = [
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ];
        let out = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingTool { tool },
                _ => Error::Holder(format!("running {tool}: {e}")),
            })?;
        if !out.status.success() {
            return Err(Error::MapRefused {
                tool,
                what: format!(
                    "0 to {own} and 1-{} to {}-{} for {}",
                    range.count,
                    range.start,
                    u64::from(range.start) + u64::from(range.count) - 1,
                    user.label()
                ),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// Without a range a process may map only its own ids, and only after
/// giving up `setgroups`.
fn map_single(pid: u32, user: &User) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    for (file, text) in [
        ("uid_map", format!("0 {} 1\n", user.uid)),
        ("setgroups", "deny".to_owned()),
        ("gid_map", format!("0 {} 1\n", user.gid)),
    ] {
        let path = proc.join(file);
        std::fs::write(&path, text).map_err(|e| Error::io("writing", &path, e))?;
    }
    Ok(())
}

/// Why `unshare(CLONE_NEWUSER)` failed, naming the setting that refuses.
fn userns_refusal(errno: Option<i32>, answer: &str) -> Error {
    let sysctl = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|v| v.trim().to_owned())
    };
    let why = if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        "kernel.unprivileged_userns_clone is 0; as root: `sysctl kernel.unprivileged_userns_clone=1`".to_owned()
    } else if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
        == Some("1")
    {
        "AppArmor restricts them: kernel.apparmor_restrict_unprivileged_userns is 1 (as on Ubuntu 24.04); as root: `sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or give strata an AppArmor profile that allows `userns`".to_owned()
    } else if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        "user.max_user_namespaces is 0; as root: `sysctl user.max_user_namespaces=15000`".to_owned()
    } else {
        match errno {
            Some(n) => format!(
                "unshare(CLONE_NEWUSER) failed: {}",
                std::io::Error::from_raw_os_error(n)
            ),
            None => format!("the holder said {answer:?}"),
        }
    };
    Error::UsernsDisabled { why }
}

/// Moves this process into the holder's user, then mount namespace.
fn join(holder: Holder) -> Result<()> {
    let cwd = std::env::current_dir().ok();
    let open = |ns: &str| {
        let path = format!("/proc/{}/ns/{ns}", holder.pid);
        File::open(&path).map_err(|e| Error::io("opening", path, e))
    };
    let (user_ns, mount_ns) = (open("user")?, open("mnt")?);
    // Opened, then checked: a pid reused in between is not joined.
    if !holder.alive() {
        return Err(Error::Join {
            pid: holder.pid,
            source: std::io::Error::other("the holder exited"),
        });
    }
    let join_err = |e: rustix::io::Errno| {
        let source = if e == rustix::io::Errno::INVAL {
            std::io::Error::other(
                "the kernel refuses a multi-threaded process (strata must enter before it starts threads)",
            )
        } else {
            e.into()
        };
        Error::Join {
            pid: holder.pid,
            source,
        }
    };
    rustix::thread::move_into_link_name_space(user_ns.as_fd(), Some(LinkNameSpaceType::User))
        .map_err(join_err)?;
    rustix::thread::move_into_link_name_space(mount_ns.as_fd(), Some(LinkNameSpaceType::Mount))
        .map_err(join_err)?;
    // Joining a mount namespace moves the root and working directory to
    // its root; the same path is the same directory there.
    if let Some(cwd) = cwd {
        std::env::set_current_dir(&cwd).map_err(|e| Error::io("returning to", cwd, e))?;
    }
    Ok(())
}

/// If this process was started as a holder, serves as one and never
/// returns; else returns at once. `main` calls it first.
pub fn serve_if_holder() {
    if std::env::var_os(HOLDER_ENV).is_none() {
        return;
    }
    std::process::exit(serve());
}

fn serve() -> i32 {
    // Its own session: a terminal's ^C or hangup does not reach it.
    let _ = rustix::process::setsid();
    let _ = rustix::thread::set_name(c"strata-holder");
    let mut out = std::io::stdout();
    if let Err(e) = sys::unshare_user_and_mount() {
        let _ = writeln!(out, "error {} {e}", e.raw_os_error().unwrap_or(0));
        return 1;
    }
    let _ = writeln!(out, "unshared");
    let _ = out.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "mapped" {
        return 1;
    }
    // Mounts made in here stay in here.
    let private =
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC;
    if let Err(e) = rustix::mount::mount_change("/", private) {
        let _ = writeln!(out, "error {} making / private: {e}", e.raw_os_error());
        return 1;
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_round_trip_and_this_process_has_a_start_time() {
        let me = Holder {
            pid: std::process::id(),
            start: start_time(std::process::id()).expect("our own /proc/PID/stat"),
        };
        assert!(me.alive());
        assert_eq!(Holder::from_id(&me.id()), Some(me));
        let other = Holder {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive(), "a different start time is another process");
        assert_eq!(Holder::from_id("12"), None);
    }
}
