//! One API over every place an image can come from.

use std::io::Read;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest};
use tracing::debug;

use crate::digest::{VerifiedReader, check_digest};
use crate::local::{DockerArchive, OciLayout};
use crate::manifest::{MAX_CONFIG_BYTES, Parsed, RawManifest, check_layers};
use crate::options::Options;
use crate::platform::{Platform, choose};
use crate::reference::ImageRef;
use crate::transport::Transport;
use crate::{Error, Result};

/// A blob's bytes, verified as they are read.
pub type BlobStream = VerifiedReader<Box<dyn Read + Send>>;

/// An opened image source: a registry repository, an OCI layout (directory or
/// tar) or a `docker save` archive. Safe to share across threads, so that
/// every layer can be read at once.
pub struct ImageSource {
    reference: ImageRef,
    transport: Box<dyn Transport>,
}

/// One layer of a resolved image: where its bytes are and what they must
/// hash to once decompressed.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The descriptor from the manifest (digest of the compressed bytes).
    pub descriptor: Descriptor,
    /// The config's `rootfs.diff_ids` entry: sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// An image resolved to one platform: verified manifest and config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as given.
    pub reference: String,
    /// The index the reference named, if it named one.
    pub index: Option<RawManifest>,
    /// The platform manifest, verified.
    pub manifest: RawManifest,
    /// The platform manifest, parsed.
    pub parsed_manifest: ImageManifest,
    /// The config blob, verified against the manifest.
    pub config_bytes: Vec<u8>,
    /// The config, parsed.
    pub config: ImageConfiguration,
}

impl ResolvedImage {
    /// The layers, bottom first, each with its diff_id.
    ///
    /// # Errors
    /// When the config has a different number of diff_ids than the manifest
    /// has layers, or an invalid one.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let descriptors = self.parsed_manifest.layers();
        let diff_ids = self.config.rootfs().diff_ids();
        if descriptors.len() != diff_ids.len() {
            return Err(Error::InvalidLayout {
                path: self.reference.clone().into(),
                format: "image",
                detail: format!(
                    "the manifest lists {} layers but the config has {} diff_ids",
                    descriptors.len(),
                    diff_ids.len()
                ),
            });
        }
        descriptors
            .iter()
            .zip(diff_ids)
            .map(|(d, id)| {
                Ok(Layer {
                    descriptor: d.clone(),
                    diff_id: crate::digest::parse_digest(id)?,
                })
            })
            .collect()
    }
}

impl ImageSource {
    /// Opens a source: for a registry this pings it and settles scheme and
    /// authentication; for local files it reads their index.
    ///
    /// # Errors
    /// Whatever stops the source from being read: network, auth, a missing
    /// or malformed file.
    pub fn open(reference: &ImageRef, options: &Options) -> Result<Self> {
        let transport: Box<dyn Transport> = match reference {
            ImageRef::Registry(r) => crate::remote::open_source(r, options)?,
            ImageRef::OciDir { path, tag } => Box::new(OciLayout::open_dir(path, tag.clone())?),
            ImageRef::OciArchive { path, tag } => {
                Box::new(OciLayout::open_archive(path, tag.clone())?)
            }
            ImageRef::DockerArchive { path, image } => {
                Box::new(DockerArchive::open(path, image.clone())?)
            }
        };
        Ok(Self {
            reference: reference.clone(),
            transport,
        })
    }

    /// The reference this source was opened with.
    #[must_use]
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    /// The digest of the manifest or index the reference names, when the
    /// source gives it without sending the manifest (a registry's `HEAD`,
    /// which Docker Hub does not count against pull limits). Lets a caller
    /// that already holds the image skip fetching it again.
    ///
    /// # Errors
    /// Network, auth, not found.
    pub fn top_digest(&self) -> Result<Option<Digest>> {
        self.transport.top_digest()
    }

    /// The manifest or index the reference names, as the source holds it
    /// (what `crane manifest` prints).
    ///
    /// # Errors
    /// Network, auth, not found, digest mismatch.
    pub fn raw_manifest(&self) -> Result<RawManifest> {
        self.transport.top()
    }

    /// Resolves the reference to one platform's manifest and config, verifying
    /// every digest on the way.
    ///
    /// # Errors
    /// As [`ImageSource::raw_manifest`], plus [`Error::NoMatchingPlatform`],
    /// unsupported manifests or layers, and an invalid config.
    pub fn resolve(&self, platform: &Platform) -> Result<ResolvedImage> {
        let name = self.transport.describe();
        let top = self.transport.top()?;
        let (index, manifest) = match top.parse(&name)? {
            Parsed::Manifest(m) => (None, (top, *m)),
            Parsed::Index(index) => {
                let chosen = choose(&index, platform, &name)?;
                debug!(digest = %chosen.digest(), %platform, "chose platform manifest");
                let raw = self.transport.manifest(chosen)?;
                match raw.parse(&name)? {
                    Parsed::Manifest(m) => (Some(top), (raw, *m)),
                    Parsed::Index(_) => {
                        return Err(Error::UnsupportedManifest {
                            reference: name,
                            media_type: raw.media_type,
                            hint: "; an index inside an index is not supported",
                        });
                    }
                }
            }
        };
        let (manifest, parsed_manifest) = manifest;
        check_layers(&parsed_manifest, &name)?;
        let config_descriptor = parsed_manifest.config();
        check_digest(config_descriptor.digest())?;
        if config_descriptor.size() > MAX_CONFIG_BYTES {
            return Err(Error::TooLarge {
                what: format!("config of {name}"),
                size: config_descriptor.size(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let mut config_bytes = Vec::new();
        self.blob(config_descriptor, "config")?
            .read_to_end(&mut config_bytes)
            .map_err(|e| match crate::digest::integrity_error(&e) {
                Some(_) => integrity_from_io(e),
                None => Error::io(
                    format!("config {} of {name}", config_descriptor.digest()),
                    e,
                ),
            })?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::json(
                format!("config {} of {name}", config_descriptor.digest()),
                e,
            )
        })?;
        Ok(ResolvedImage {
            reference: name,
            index,
            manifest,
            parsed_manifest,
            config_bytes,
            config,
        })
    }

    /// A manifest an index names, verified against its descriptor.
    ///
    /// # Errors
    /// Network, auth, not found, digest mismatch.
    pub fn child_manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        check_digest(descriptor.digest())?;
        self.transport.manifest(descriptor)
    }

    /// A blob as a stream whose size and digest are verified as it is read
    /// (see [`VerifiedReader`]). `what` names it in errors ("layer 3").
    ///
    /// # Errors
    /// When the blob cannot be opened. Later errors come from `read`.
    pub fn blob(&self, descriptor: &Descriptor, what: &str) -> Result<BlobStream> {
        self.blob_served(descriptor, what).map(|(r, _)| r)
    }

    /// As [`ImageSource::blob`], and the mirror that serves it, if one
    /// does (a mismatch names it too).
    ///
    /// # Errors
    /// As [`ImageSource::blob`].
    pub fn blob_served(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<(BlobStream, Option<String>)> {
        check_digest(descriptor.digest())?;
        let (inner, host) = self.transport.blob_served(descriptor)?;
        let served = host
            .as_ref()
            .map(|h| format!(" served by mirror {h}"))
            .unwrap_or_default();
        Ok((
            VerifiedReader::new(
                inner,
                format!("{what} of {}{served}", self.transport.describe()),
                descriptor.digest().clone(),
                descriptor.size(),
            ),
            host,
        ))
    }
}

/// Turns an `io::Error` carrying one of this crate's errors back into it.
pub(crate) fn integrity_from_io(e: std::io::Error) -> Error {
    match e.into_inner().map(|b| b.downcast::<Error>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => Error::io("<stream>", std::io::Error::other(other)),
        None => Error::io("<stream>", std::io::Error::other("unknown error")),
    }
}
