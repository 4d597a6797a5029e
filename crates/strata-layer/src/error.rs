//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong turning a layer stream into a directory.
///
/// Each variant names the layer entry or path it concerns; messages are
/// lowercase and read well after "failed to …".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The uncompressed tar did not hash to the config's diff_id.
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The diff_id from the image config.
        expected: String,
        /// The sha256 of the uncompressed bytes received.
        actual: String,
    },

    /// The stream does not decompress or does not parse as tar.
    #[error("reading the layer stream ({what})")]
    Stream {
        /// What was being read: "gzip", "zstd", "tar header", …
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An entry is malformed or not allowed (e.g. `.wh..`, a symlink named `.`).
    #[error(
        "layer entry {:?}: {reason}",
        crate::sys::short_path(std::path::Path::new(entry))
    )]
    BadEntry {
        /// The entry's name as found in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A limit on the layer's size was exceeded.
    #[error("layer exceeds the limit of {limit} {what}; raise it if the image is trusted")]
    LimitExceeded {
        /// "decompressed bytes" or "entries".
        what: &'static str,
        /// The limit.
        limit: u64,
    },

    /// A filesystem operation failed.
    #[error("{op} {}", crate::sys::short_path(path))]
    Io {
        /// What was being done ("creating", "setting xattr on", …).
        op: &'static str,
        /// The path, relative to the target root.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
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

    pub(crate) fn entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
