//! The store of layers, and stacking them.
//!
//! `strata-stack` owns the on-disk store (layer directories keyed by chain
//! id, image and mount records, locks, gc) and mounting: a read-only overlay
//! of layer directories, or a writable one with an upper directory, through
//! the kernel's new mount API (`lowerdir+`, one layer per call, up to 500).
//!
//! It knows nothing of registries, HTTP or tar: it is handed directories and
//! records. Layer contents are written by `strata-layer`.

mod chain;
mod error;
mod fsck;
mod mount;
mod remove;
mod store;

pub use chain::chain_ids;
pub use error::{Error, Result};
pub use fsck::{FsckReport, Problem, TreeDigestFn};
pub use mount::{MAX_LOWER_LAYERS, MountSpec, Plan, is_mountpoint, mount, plan, unmount};
pub use store::{
    GcReport, ImageLayer, ImageRecord, LayerLock, LayerRecord, MountRecord, Store, StoreKind,
    TmpBlob, TmpLayer,
};
