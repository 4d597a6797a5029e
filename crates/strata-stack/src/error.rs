//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong in the store or while stacking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on the store or a mountpoint failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A record in the store does not parse.
    #[error("store record {} is corrupt", path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// No image of that name or digest in the store.
    #[error("no image {name:?} in the store at {}; pull it first", store.display())]
    UnknownImage {
        /// What was asked for.
        name: String,
        /// The store.
        store: PathBuf,
    },

    /// A mount cannot be made or undone as asked.
    #[error("{}: {reason}", path.display())]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong, with a hint where one helps.
        reason: String,
        /// The OS error, if there was one.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A store made by root opened rootless, or the other way round.
    #[error("{} is a {made} store and this strata runs {}: their layers differ (owners; trusted.overlay.* or user.overlay.* xattrs), so they are never mixed; use {hint}", store.display(), wanted.running())]
    WrongKind {
        /// The store.
        store: PathBuf,
        /// Who made it.
        made: crate::StoreKind,
        /// Who opened it.
        wanted: crate::StoreKind,
        /// Which store would do.
        hint: &'static str,
    },

    /// More layers than the kernel stacks in one overlay.
    #[error("the image has {layers} layers; overlayfs stacks at most {limit} lower layers")]
    TooManyLayers {
        /// The image's layer count.
        layers: usize,
        /// The kernel's limit.
        limit: usize,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// Whether the underlying cause is a full disk (ENOSPC or EDQUOT).
    #[must_use]
    pub fn is_no_space(&self) -> bool {
        let source = match self {
            Self::Io { source, .. } => Some(source),
            Self::Mount { source, .. } => source.as_ref(),
            _ => None,
        };
        source
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|c| {
                c == rustix::io::Errno::NOSPC.raw_os_error()
                    || c == rustix::io::Errno::DQUOT.raw_os_error()
            })
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
