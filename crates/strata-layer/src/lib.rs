//! One layer stream into one directory.
//!
//! `strata-layer` reads a layer (gzip, zstd or plain tar), checks its diff_id,
//! and writes its entries into a directory in one of two modes:
//!
//! - [`Mode::Overlay`]: the directory becomes one overlayfs lower layer. OCI
//!   whiteouts (`.wh.NAME`) become char devices 0:0, opaque markers
//!   (`.wh..wh..opq`) become the `overlay.opaque` xattr. What depends on the
//!   layers below is reported in [`Summary::fixups`] and resolved by
//!   [`fix_up`] once they exist.
//! - [`Mode::Apply`]: the directory already holds the layers below (a
//!   flattened rootfs); whiteouts delete from it, and nothing the same layer
//!   wrote is removed, whatever the order of entries.
//!
//! Every path is resolved inside the target with `openat2(RESOLVE_IN_ROOT)`:
//! `..`, absolute names and symlinks (in this layer or below) cannot lead
//! out of it. The rules are written down in `docs/whiteouts.md`.
//!
//! It knows nothing of registries, stores or mounts: the caller hands it a
//! `Read` and a directory.

mod blob;
mod compression;
mod engine;
mod entry;
mod error;
mod fanout;
mod fixup;
mod index;
mod names;
mod override_stat;
mod pool;
mod readahead;
mod regular;
mod report;
mod sparse;
mod sys;
mod tar_framing;
mod tar_writer;
#[cfg(test)]
mod tests;
mod tree;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use blob::{Blob, BlobOptions, write_blob};
pub use compression::{Compression, decompress};
pub use entry::{DirSource, Entry, EntrySource, Kind};
pub use error::{Error, Result};
pub use fixup::fix_up;
pub use index::{ChangeKind, LayerIndex, Merged, Node, Visible, index_source, index_stream, merge};
pub use override_stat::{OverrideStat, parse as parse_override_stat};
pub use report::{Waste, WastedPath, waste};
pub use sparse::Sparse;
pub use sys::running_as_root;
pub use tar_writer::TarWriter;
pub use tree::{WrittenFiles, tree_digest};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One overlayfs layer directory per layer.
    #[default]
    Overlay,
    /// Onto a directory that holds the layers below (flattening).
    Apply,
}

/// Which xattr namespace the overlay reads (`userxattr` mounts read `user.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattr {
    /// `trusted.overlay.*`, for mounts made by root.
    #[default]
    Trusted,
    /// `user.overlay.*`, for rootless mounts with `userxattr`.
    User,
}

/// What the writer does with an entry's owner: the caller decides it once,
/// from its privilege, and passes it (the writer never asks the euid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// `chown` to the entry's ids: root, or root in a user namespace that
    /// maps them (a rootless pull with a subuid range).
    Set,
    /// Leave the creator as owner and record the entry's owner and mode in
    /// the `user.containers.override_stat` xattr, as containers/storage and
    /// fuse-overlayfs do (a user without a subuid range). Regular files and
    /// directories only: the kernel allows `user.*` on nothing else.
    Record,
    /// Leave the creator as owner: the image's owners are lost.
    Ignore,
}

impl Owners {
    /// `Set` for root, else `Ignore`: the default for callers that do not
    /// say (the CLI always does).
    #[must_use]
    pub fn of_process() -> Self {
        if sys::running_as_root() {
            Self::Set
        } else {
            Self::Ignore
        }
    }
}

/// The xattr holding an entry's image owner and mode where the files cannot
/// be owned by it ([`Owners::Record`]): `UID:GID:MODE:TYPE`, the mode in
/// octal, as containers/storage writes it.
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// Default limit on a layer's decompressed size: 64 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Default limit on a layer's entry count: 10 million.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Overlay or apply.
    pub mode: Mode,
    /// The overlay xattr namespace (overlay mode).
    pub overlay_xattr: OverlayXattr,
    /// What becomes of entries' owners.
    pub owners: Owners,
    /// Whether device nodes are made (only root in the initial user
    /// namespace can); else they are skipped with a warning.
    pub devices: bool,
    /// Stop a layer that decompresses to more than this many bytes.
    pub max_bytes: u64,
    /// Stop a layer with more entries than this.
    pub max_entries: u64,
    /// Hash each file's content while writing it ([`Summary::content`]), so
    /// that [`tree_digest`] of the result need not read it back.
    pub content_hashes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Overlay,
            overlay_xattr: OverlayXattr::Trusted,
            owners: Owners::of_process(),
            devices: sys::running_as_root(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            content_hashes: false,
        }
    }
}

/// What needs the lower layers to finish (overlay mode); see [`fix_up`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixups {
    /// Directories created for entries below them but not listed themselves.
    pub implied_dirs: Vec<PathBuf>,
    /// Hard links (path, target) whose target is not in this layer.
    pub lower_links: Vec<(PathBuf, PathBuf)>,
    /// Whiteout devices made: each is dropped when nothing below it is
    /// visible (a whiteout applies only to lower layers; one that hides
    /// nothing would show as a device in a bind mount or a ghost entry).
    pub whiteouts: Vec<PathBuf>,
    /// Directories marked opaque: the mark is dropped when no directory is
    /// visible there below.
    pub opaque_dirs: Vec<PathBuf>,
    /// Whether the layer listed its root (`./`); if not, the root takes the
    /// metadata of the root below, as an implied directory does.
    pub root_listed: bool,
    /// Real char 0:0 devices, left out of the directory (see [`FormNotes`]).
    pub zero_devices: Vec<ZeroDevice>,
    /// The xattr namespace the layer was extracted for (opaque marks the
    /// fix-up makes use it).
    pub overlay_xattr: OverlayXattr,
}

impl Fixups {
    /// Whether [`fix_up`] has anything to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.implied_dirs.is_empty()
            && self.lower_links.is_empty()
            && self.whiteouts.is_empty()
            && self.opaque_dirs.is_empty()
            && self.root_listed
    }
}

/// What one layer held.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Tar entries read.
    pub entries: u64,
    /// Decompressed (tar) bytes.
    pub bytes: u64,
    /// `.wh.` whiteouts.
    pub whiteouts: u64,
    /// Opaque-directory markers.
    pub opaque_dirs: u64,
    /// Entries or attributes not written (devices without root, aufs
    /// metadata, overlay xattrs, xattrs the filesystem refused).
    pub skipped: u64,
    /// The sha256 of the decompressed tar, as `sha256:<hex>`.
    pub diff_id: String,
    /// Work left for [`fix_up`] (overlay mode).
    pub fixups: Fixups,
    /// What [`Options::content_hashes`] asked for (else empty).
    pub content: WrittenFiles,
}

impl Summary {
    /// Overlay mode, after [`fix_up`]: what the layer directory cannot say
    /// by itself. The caller keeps it beside the directory and hands it back
    /// to [`DirSource::with_notes`].
    #[must_use]
    pub fn notes(&self) -> FormNotes {
        FormNotes {
            zero_devices: self.fixups.zero_devices.clone(),
            lower_links: self.fixups.lower_links.clone(),
        }
    }
}

/// What a layer directory in overlay form cannot hold, kept beside it (the
/// store's `layer.json`) so that reading it back gives the layer's tar
/// entries exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FormNotes {
    /// Real char 0:0 devices. An overlay takes any such device for a
    /// whiteout, so they are left out of the directory (the mount lacks
    /// them, with a warning at extraction) and flatten makes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zero_devices: Vec<ZeroDevice>,
    /// Hard links (path, target) to files of lower layers: the directory
    /// holds copies, flatten makes links again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower_links: Vec<(PathBuf, PathBuf)>,
}

impl FormNotes {
    /// Whether there is nothing to note.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.zero_devices.is_empty() && self.lower_links.is_empty()
    }
}

/// A real char 0:0 device of a layer and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZeroDevice {
    /// Where, relative to the layer root.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds.
    pub mtime: i64,
}

/// Extracts one layer stream into `target`, which must exist.
///
/// The stream is read to its end (also past the tar's end marker) so that
/// both the diff_id here and a digest check in the reader see every byte.
/// On a diff_id mismatch the error names both digests; the caller must
/// discard `target` then.
///
/// # Errors
/// A bad stream, a refused entry, a limit, an I/O error, or the mismatch.
pub fn extract<R: Read + Send>(
    reader: R,
    hint: Option<Compression>,
    expected_diff_id: Option<&str>,
    target: &Path,
    options: &Options,
) -> Result<Summary> {
    let mut summary = compression::pipeline(reader, hint, options.max_bytes, |stream| {
        let mut summary =
            engine::Writer::new(target, options)?.run(&mut entry::TarSource::new(&mut *stream))?;
        summary.diff_id = stream.finish()?;
        summary.bytes = stream.decompressed_bytes();
        Ok(summary)
    })?;
    if let Some(expected) = expected_diff_id
        && summary.diff_id != expected
    {
        return Err(Error::DiffIdMismatch {
            expected: expected.to_owned(),
            actual: std::mem::take(&mut summary.diff_id),
        });
    }
    Ok(summary)
}

/// Applies entries from any source (e.g. a store layer directory through
/// [`DirSource`]) onto `target` with the same rules as [`extract`].
///
/// # Errors
/// As [`extract`], without the stream errors.
pub fn apply_source(
    source: &mut dyn EntrySource,
    target: &Path,
    options: &Options,
) -> Result<Summary> {
    engine::Writer::new(target, options)?.run(source)
}
