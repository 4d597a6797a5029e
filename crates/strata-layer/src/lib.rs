//! One layer stream into one directory.
//!
//! Not yet filled in: the layer issue brings the extractor (overlay and apply
//! modes, whiteout translation, path safety, diff_id verification). It will
//! know nothing of registries, stores or mounts.
