//! The store of layers, and stacking them.
//!
//! Not yet filled in: the stack issue brings the store (layers keyed by chain
//! id, image and mount records, locks, gc) and stacking (overlay mount,
//! unmount, flatten, runtime bundle). It will know nothing of registries or HTTP.
