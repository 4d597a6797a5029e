//! One API over every place an image can be written to: a registry
//! repository, an OCI layout (directory or tar), a `docker save` tar.
//!
//! The order is the caller's promise and the reason this is safe: every
//! blob first, then the manifests, children before the index, the tag last.
//! A registry never holds a tag whose blobs are missing, and a layout's
//! `index.json` is written only by [`ImageDestination::finish`].

use std::io::Read;

use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::digest::check_digest;
use crate::local::{DockerArchiveWriter, OciLayoutWriter};
use crate::manifest::RawManifest;
use crate::options::Options;
use crate::reference::{ArchiveImage, ImageRef, Reference};
use crate::remote::Access;
use crate::{Error, Result};

/// Opens a blob's bytes when the destination lacks them. Called again when
/// an upload has to start over, so it must give the same bytes each time,
/// verified against the descriptor as they are read ([`crate::ImageSource::blob`]
/// streams are; wrap anything else in a [`crate::VerifiedReader`]).
pub type BlobOpener<'a> = &'a (dyn Fn() -> Result<Box<dyn Read + Send>> + Sync);

/// Decompresses a layer blob (its bytes and media type) into the tar it
/// holds: what a `docker-archive:` destination needs, as that format has
/// only uncompressed layers. The layer crate knows the formats; the CLI
/// passes its decoder in, so this crate stays without one.
pub type Decompressor = std::sync::Arc<
    dyn Fn(Box<dyn Read + Send>, &str) -> std::io::Result<Box<dyn Read + Send>> + Send + Sync,
>;

/// How a destination is written, decided by the caller before it opens.
#[derive(Clone, Default)]
pub struct DestinationOptions {
    /// Repositories of the destination's registry blobs may be mounted
    /// from (the token asks `pull` on each).
    pub mount_from: Vec<String>,
    /// The layer decoder, for `docker-archive:`.
    pub decompress: Option<Decompressor>,
}

/// What became of one blob at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobOutcome {
    /// The destination had it already: nothing was sent.
    Present,
    /// The registry linked it from another repository: nothing was sent.
    Mounted,
    /// Its bytes were sent.
    Uploaded,
}

/// What a mount request gave.
pub(crate) enum Mount {
    /// The blob is linked in: nothing to send.
    Mounted,
    /// Not mountable (absent there, or no access to it): the registry
    /// opened an ordinary upload session, at this URL, to use instead.
    Upload(String),
    /// The destination has no such thing.
    Unsupported,
}

/// What each kind of destination provides; the order and the checks are in
/// [`ImageDestination`].
pub(crate) trait Destination: Send + Sync {
    /// The reference, for messages.
    fn describe(&self) -> String;
    /// Whether the destination holds the blob already.
    fn has_blob(&self, descriptor: &Descriptor) -> Result<bool>;
    /// Links the blob from another repository of the same registry.
    fn mount_blob(&self, descriptor: &Descriptor, from: &str) -> Result<Mount> {
        let _ = (descriptor, from);
        Ok(Mount::Unsupported)
    }
    /// Writes the blob from `open`'s bytes (`session`: an upload a failed
    /// mount opened).
    fn put_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
        session: Option<String>,
    ) -> Result<()>;
    /// Stores a manifest under `reference`: its digest, or the tag.
    fn put_manifest(&self, manifest: &RawManifest, reference: &str) -> Result<()>;
    /// Makes what was written visible (a layout's `index.json`, an
    /// archive's rename into place).
    fn finish(&self, top: Option<&RawManifest>) -> Result<()> {
        let _ = top;
        Ok(())
    }
}

/// An opened destination. Safe to share across threads: blobs may be
/// written at once.
pub struct ImageDestination {
    reference: ImageRef,
    sink: Box<dyn Destination>,
}

impl ImageDestination {
    /// Opens a destination. For a registry this settles scheme and
    /// authentication with a token for `pull,push` on the repository, and
    /// `pull` on each repository of `writing.mount_from`; a layout
    /// directory is created when missing; an archive is started beside its
    /// target.
    ///
    /// # Errors
    /// Network and auth errors, an unwritable path, a `docker-archive:`
    /// destination without a decoder or naming an image by index.
    pub fn open(
        reference: &ImageRef,
        options: &Options,
        writing: &DestinationOptions,
    ) -> Result<Self> {
        let sink: Box<dyn Destination> = match reference {
            ImageRef::Registry(r) => Box::new(crate::remote::open_destination(
                r,
                options,
                Access::Push {
                    mount_from: writing.mount_from.clone(),
                },
            )?),
            ImageRef::OciDir { path, tag } => Box::new(OciLayoutWriter::dir(path, tag.clone())?),
            ImageRef::OciArchive { path, tag } => {
                Box::new(OciLayoutWriter::archive(path, tag.clone())?)
            }
            ImageRef::DockerArchive { path, image } => {
                let tag = match image {
                    None => None,
                    Some(ArchiveImage::Tag(t)) => Some(t.clone()),
                    Some(ArchiveImage::Index(i)) => {
                        return Err(Error::InvalidReference {
                            input: reference.to_string(),
                            reason: format!(
                                "@{i} picks an image to read; to write, name it docker-archive:FILE[:NAME:TAG]"
                            ),
                        });
                    }
                };
                let decompress =
                    writing
                        .decompress
                        .clone()
                        .ok_or_else(|| Error::InvalidLayout {
                            path: path.clone(),
                            format: "docker-archive destination",
                            detail: "no layer decoder was given to write its uncompressed layers"
                                .into(),
                        })?;
                Box::new(DockerArchiveWriter::create(path, tag, decompress)?)
            }
        };
        Ok(Self {
            reference: reference.clone(),
            sink,
        })
    }

    /// The reference this destination was opened with.
    #[must_use]
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    /// How many blobs may be written at once: one for an archive (a tar is
    /// written in order), any number elsewhere.
    #[must_use]
    pub fn max_parallel(&self) -> usize {
        match self.reference {
            ImageRef::OciArchive { .. } | ImageRef::DockerArchive { .. } => 1,
            ImageRef::Registry(_) | ImageRef::OciDir { .. } => usize::MAX,
        }
    }

    /// The repository a blob in `source` can be mounted from when written
    /// to `destination`: the source's, when both are repositories of one
    /// registry; `None` otherwise. Decide it before [`ImageDestination::open`]
    /// (the token's scopes include it) and pass it to each blob.
    #[must_use]
    pub fn mount_source(destination: &ImageRef, source: &ImageRef) -> Option<String> {
        match (destination, source) {
            (ImageRef::Registry(to), ImageRef::Registry(from))
                if same_registry(to, from) && to.repository != from.repository =>
            {
                Some(from.repository.clone())
            }
            _ => None,
        }
    }

    /// Makes sure the destination holds a blob: nothing when it has it, a
    /// mount from `mount_from` when the registry allows, else the bytes
    /// from `open`. `what` names the blob in errors ("layer 2").
    ///
    /// # Errors
    /// An invalid digest, the source's errors (integrity included), the
    /// destination's refusals.
    pub fn put_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        mount_from: Option<&str>,
        open: BlobOpener<'_>,
    ) -> Result<BlobOutcome> {
        check_digest(descriptor.digest())?;
        let what = format!(
            "{what} ({}) to {}",
            descriptor.digest(),
            self.sink.describe()
        );
        if self.sink.has_blob(descriptor)? {
            return Ok(BlobOutcome::Present);
        }
        let mut session = None;
        if let Some(from) = mount_from {
            match self.sink.mount_blob(descriptor, from)? {
                Mount::Mounted => return Ok(BlobOutcome::Mounted),
                Mount::Upload(url) => session = Some(url),
                Mount::Unsupported => {}
            }
        }
        self.sink.put_blob(descriptor, &what, open, session)?;
        Ok(BlobOutcome::Uploaded)
    }

    /// Checks, before anything is sent, that `top` is what the destination
    /// may name: a destination pinned to a digest takes only that image.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`] naming the destination.
    pub fn check_top(&self, top: &RawManifest) -> Result<()> {
        if let ImageRef::Registry(r) = &self.reference
            && let Some(pinned) = &r.digest
            && pinned != &top.digest
        {
            return Err(Error::DigestMismatch {
                what: format!("destination {} (pinned to a digest)", self.reference),
                expected: pinned.to_string(),
                actual: top.digest.to_string(),
            });
        }
        Ok(())
    }

    /// Stores a manifest by digest; the top one (`top`) also under the
    /// destination's tag. Call children before their index, and only once
    /// every blob they name is in.
    ///
    /// # Errors
    /// The destination's refusals, or a registry that stored other bytes.
    pub fn put_manifest(&self, manifest: &RawManifest, top: bool) -> Result<()> {
        let tag = match &self.reference {
            ImageRef::Registry(r) if top => r.digest.is_none().then(|| r.manifest_reference()),
            _ => None,
        };
        if top {
            self.check_top(manifest)?;
        }
        self.sink
            .put_manifest(manifest, tag.as_deref().unwrap_or(manifest.digest.as_ref()))
    }

    /// Makes the image visible where that is a separate step (a layout's
    /// `index.json` naming `top`, an archive's rename into place). A
    /// registry's tag was set by the top manifest already.
    ///
    /// # Errors
    /// Writing the index or the archive.
    pub fn finish(self, top: &RawManifest) -> Result<()> {
        self.sink.finish(Some(top))
    }
}

fn same_registry(a: &Reference, b: &Reference) -> bool {
    a.api_host() == b.api_host()
}
