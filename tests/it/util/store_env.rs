//! A store and a scratch directory for tests that run `strata` as root
//! against one store, unmounting whatever they leave mounted.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_ok, strata};

pub fn require_root() {
    assert!(
        strata_layer::running_as_root(),
        "mount tests need root (CI runs `just test` as root; locally: sudo -E just test)"
    );
}

/// A store and a scratch area, unmounting whatever is left on drop.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        require_root();
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn strata(&self) -> Command {
        let mut c = strata();
        c.arg("--store").arg(self.store());
        c
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = run_ok(self.strata().arg("--json").args(args));
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out)))
    }

    pub fn layer_dirs_complete(&self) {
        for entry in std::fs::read_dir(self.store().join("layers")).unwrap() {
            let dir = entry.unwrap().path();
            assert!(
                dir.join("layer.json").is_file() && dir.join("diff").is_dir(),
                "partial layer in the store: {}",
                dir.display()
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.dir.path().to_string_lossy().into_owned();
        for line in info.lines().rev() {
            if let Some(mp) = line.split(' ').nth(4)
                && mp.starts_with(&root)
            {
                let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// Whether `path` is a mountpoint (false when it does not exist).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}
