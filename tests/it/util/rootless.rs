//! Real unprivileged users for the rootless tests: one with a subuid and
//! subgid range (as `useradd` gives a login user on Debian), one without
//! (a system user). Made once per machine with shadow-utils, as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::require_tool;

/// An ordinary user strata runs as.
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}

fn ensure(name: &'static str, system: bool) -> User {
    require_tool("useradd", "passwd");
    if id_of(name, "-u").is_none() {
        let mut cmd = Command::new("useradd");
        if system {
            cmd.arg("--system");
        }
        let status = cmd
            .args(["--create-home", "--shell", "/bin/sh", name])
            .status()
            .expect("running useradd");
        // Two tests may race to create it.
        assert!(
            status.success() || id_of(name, "-u").is_some(),
            "useradd {name} failed (the rootless tests run as root to create their users)"
        );
    }
    User {
        name,
        uid: id_of(name, "-u").unwrap(),
        gid: id_of(name, "-g").unwrap(),
    }
}

fn has_range(file: &str, user: &User) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let who = l.split(':').next().unwrap_or("");
            who == user.name || who == user.uid.to_string()
        })
}

/// A user with a 65536-id subuid and subgid range.
pub fn with_range() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        require_tool("newuidmap", "uidmap");
        let user = ensure("strata-rootless", false);
        if !has_range("/etc/subuid", &user) || !has_range("/etc/subgid", &user) {
            let status = Command::new("usermod")
                .args([
                    "--add-subuids",
                    "300000-365535",
                    "--add-subgids",
                    "300000-365535",
                    user.name,
                ])
                .status()
                .expect("running usermod");
            assert!(status.success(), "usermod --add-subuids failed");
        }
        user
    })
}

/// A user without any subordinate ids.
pub fn without_range() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        let user = ensure("strata-norange", true);
        assert!(
            !has_range("/etc/subuid", &user) && !has_range("/etc/subgid", &user),
            "{} has a subordinate id range; remove it (usermod --del-subuids …)",
            user.name
        );
        user
    })
}

/// Makes a test image (umoci writes `index.json` 0600) readable by the
/// users; returns it.
pub fn readable(layout: &Path) -> &Path {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(layout)
        .status()
        .unwrap();
    assert!(status.success());
    layout
}

/// A scratch directory the user owns, with a home for it inside.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The user's default store (`$XDG_DATA_HOME/strata`).
    pub fn store(&self) -> PathBuf {
        self.path("home/.local/share/strata")
    }

    /// Whether the holder this store's record names (`ns/holder`,
    /// `PID:START`) is running: that process, started then, named
    /// `strata-holder`. Not any holder of the user's: other tests run their
    /// own stores, with their own holders, as the same user at once.
    pub fn holder_running(&self) -> bool {
        let Ok(record) = std::fs::read_to_string(self.store().join("ns/holder")) else {
            return false;
        };
        let Some((pid, start)) = record.trim().split_once(':') else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The command name (field 2) may hold spaces; the start time is
        // field 22, the 20th after it.
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            return false;
        };
        comm == "strata-holder" && rest.split(' ').nth(19) == Some(start)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A holder a failed test left behind is stopped (its mounts go
        // with it); only this scratch store's, never another test's.
        let record = std::fs::read_to_string(self.store().join("ns/holder")).unwrap_or_default();
        if let Some((pid, _)) = record.split_once(':') {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "strata-holder" {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
    }
}

impl User {
    /// A fresh scratch directory owned by the user.
    pub fn scratch(&self) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("strata-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home/.local/share")).unwrap();
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        Scratch { dir }
    }

    /// Runs `program` as the user, in `scratch`, with its home there.
    pub fn command(&self, scratch: &Scratch, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // By path: a test may give the user a PATH without it.
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(program)
            .current_dir(scratch.root())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", scratch.path("home"))
            .env("XDG_DATA_HOME", scratch.path("home/.local/share"))
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
            .env("STRATA_HOSTS_DIR", "");
        cmd
    }

    /// `strata` as the user.
    pub fn strata(&self, scratch: &Scratch) -> Command {
        self.command(scratch, env!("CARGO_BIN_EXE_strata"))
    }
}
