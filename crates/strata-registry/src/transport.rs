//! The traits each kind of image location implements: [`Transport`] reads
//! (registry, OCI layout, docker archive), and the shared verification and
//! platform logic sits on top in [`crate::ImageSource`].

use std::io::Read;

use oci_spec::image::{Descriptor, Digest};

use crate::Result;
use crate::manifest::RawManifest;

/// What each kind of source provides; the verification and platform logic
/// on top is shared in [`ImageSource`].
pub(crate) trait Transport: Send + Sync {
    /// The reference, for messages.
    fn describe(&self) -> String;
    /// The manifest or index the reference names.
    fn top(&self) -> Result<RawManifest>;
    /// A manifest an index points to (bytes verified against the descriptor).
    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest>;
    /// A blob's bytes, not yet verified.
    fn blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>>;
    /// A blob's bytes, not yet verified, and the host that served them
    /// when that is worth naming (a mirror's).
    fn blob_served(
        &self,
        descriptor: &Descriptor,
    ) -> Result<(Box<dyn Read + Send>, Option<String>)> {
        Ok((self.blob(descriptor)?, None))
    }
    /// The digest of what the reference names, if it can be had cheaply
    /// (a registry's `HEAD`); `None` otherwise.
    fn top_digest(&self) -> Result<Option<Digest>> {
        Ok(None)
    }
}
