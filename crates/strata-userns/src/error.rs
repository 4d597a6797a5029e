//! Errors: each names what was refused and says what to do about it.

use std::path::PathBuf;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting up or entering strata's namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `newuidmap` or `newgidmap` is not installed.
    #[error(
        "{tool} is not on PATH: a rootless strata maps the subuid range with it; install it (Debian: `apt-get install uidmap`)"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
    },
    /// The kernel refuses unprivileged user namespaces.
    #[error("this system does not let an ordinary user create a user namespace ({why})")]
    UsernsDisabled {
        /// The setting that refuses, and how to change it.
        why: String,
    },
    /// `newuidmap`/`newgidmap` refused the mapping.
    #[error("{tool} refused to map {what}: {stderr}")]
    MapRefused {
        /// The program.
        tool: &'static str,
        /// The mapping asked for.
        what: String,
        /// What it said.
        stderr: String,
    },
    /// The holder process failed to start or answered wrongly.
    #[error("starting strata's namespace holder: {0}")]
    Holder(String),
    /// Joining the holder's namespaces failed.
    #[error("entering strata's namespace (holder process {pid}): {source}")]
    Join {
        /// The holder.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store's filesystem refuses `user.*` xattrs.
    #[error(
        "the store at {} is on a filesystem that refuses user.* xattrs ({source}); a rootless store keeps overlay markers (user.overlay.*) and image owners (user.containers.override_stat) in them: use --store on ext4, xfs, btrfs or tmpfs",
        store.display()
    )]
    NoUserXattrs {
        /// The store.
        store: PathBuf,
        /// The refusal.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source: source.into(),
        }
    }
}
