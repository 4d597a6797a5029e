//! Where images come from.
//!
//! `strata-registry` turns an image reference into verified bytes: it parses
//! references (Docker's normalisation and skopeo's `oci:`, `oci-archive:` and
//! `docker-archive:` transports), speaks the OCI distribution API (auth,
//! manifests, indexes, platform choice, retries, Range resume), reads local
//! OCI layouts and `docker save` archives, and hands every blob out as a
//! [`std::io::Read`] whose size and sha256 are checked as it is read.
//!
//! It writes images too: [`ImageDestination`] puts blobs and manifests into
//! a registry (skipping what it has, mounting what another repository of it
//! has, resuming broken uploads) or an OCI layout, and
//! [`ImageSource::plan_copy`] lists what a copy moves, in the order that
//! keeps a tag from ever naming missing blobs.
//!
//! It knows nothing of layer contents, the store or mounting: the layer
//! crate consumes the streams (and lends its decoder where a destination
//! wants layers uncompressed), the stack crate stores the results. The
//! tars it reads and writes are image layouts and archives, never layers.
//! Which hosts serve a reference (mirrors, rewrites) is decided in
//! [`hosts`].
//!
//! ```no_run
//! use strata_registry::{ImageRef, ImageSource, Options, Platform};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = ImageSource::open(&"alpine:latest".parse::<ImageRef>()?, &Options::default())?;
//! let image = source.resolve(&Platform::host())?;
//! for layer in image.layers()? {
//!     let mut stream = source.blob(&layer.descriptor, "layer")?;
//!     std::io::copy(&mut stream, &mut std::io::sink())?; // verified at the end
//! }
//! # Ok(()) }
//! ```

mod auth;
mod convert;
mod copy;
mod destination;
mod digest;
mod error;
pub mod hosts;
mod local;
mod manifest;
mod options;
mod platform;
mod reference;
mod remote;
mod source;
mod transport;

pub use auth::{Credentials, auth_files};
pub use convert::to_oci;
pub use copy::{CopyPlan, PlannedBlob};
pub use destination::{
    BlobOpener, BlobOutcome, Decompressor, DestinationOptions, ImageDestination,
};
pub use digest::{
    StreamHasher, VerifiedReader, check_digest, integrity_error, parse_digest, sha256_of,
};
pub use error::{Error, Result};
pub use manifest::{
    Compression, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Parsed, RawManifest,
    is_foreign_layer, layer_compression,
};
/// The OCI types this crate's API uses, re-exported so callers match versions.
pub use oci_spec;
pub use options::{Options, PlainHttp, RetryPolicy};
pub use platform::Platform;
pub use reference::{ArchiveImage, DOCKER_HUB, ImageRef, Reference};
pub use source::{BlobStream, ImageSource, Layer, ResolvedImage};
