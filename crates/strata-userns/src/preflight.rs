//! Checks made before a rootless strata writes anything.

use std::path::Path;

use rustix::fs::{Mode, OFlags, XattrFlags};

use crate::{Error, Result};

/// Whether `dir` (created if missing) can hold `user.*` xattrs, which a
/// rootless store's layers need.
///
/// # Errors
/// [`Error::NoUserXattrs`] when the filesystem refuses them.
pub fn check_user_xattrs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let probe = dir.join(format!(".xattr-probe-{}", std::process::id()));
    let fd = rustix::fs::open(
        &probe,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io("creating", &probe, e))?;
    let result = rustix::fs::fsetxattr(&fd, "user.strata.probe", b"1", XattrFlags::empty());
    drop(fd);
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| Error::NoUserXattrs {
        store: dir.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_temporary_directory_holds_user_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        super::check_user_xattrs(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe is gone"
        );
    }
}
