//! Manifests and indexes, OCI and Docker schema2, as raw bytes and parsed.

use oci_spec::image::{Digest, ImageIndex, ImageManifest};

use crate::digest::{check_digest, sha256_of};
use crate::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config (schema2).
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header for manifest requests: every kind strata can use.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index strata reads (containerd uses the same bound).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config strata reads.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// How a layer's bytes are compressed, decided from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Whether a layer may be fetched only from its `urls` (Windows base layers).
#[must_use]
pub fn is_foreign_layer(media_type: &str) -> bool {
    media_type.contains(".foreign.") || media_type.contains(".nondistributable.")
}

/// The compression a layer media type implies, for every layer type OCI and
/// Docker define (Docker's non-standard `tar.zstd` included); `None` for types
/// that are not image layers.
#[must_use]
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// A manifest or index exactly as the source holds it.
///
/// The bytes are kept, not just the parsed form: the digest covers the bytes,
/// and `strata manifest` prints them unchanged.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The media type (from `Content-Type`, the descriptor, or the JSON).
    pub media_type: String,
    /// sha256 of `bytes`, verified.
    pub digest: Digest,
    /// The manifest's bytes.
    pub bytes: Vec<u8>,
}

/// A manifest or index, parsed.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A single-platform image manifest (OCI or Docker schema2).
    Manifest(Box<ImageManifest>),
    /// A multi-platform index (OCI index or Docker manifest list).
    Index(Box<ImageIndex>),
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    manifests: Option<serde_json::Value>,
}

impl RawManifest {
    /// Wraps bytes, computing their digest.
    #[must_use]
    pub fn new(media_type: Option<&str>, bytes: Vec<u8>) -> Self {
        let digest = sha256_of(&bytes)
            .parse()
            .expect("a sha256 we formatted parses");
        Self {
            media_type: media_type.unwrap_or_default().to_owned(),
            digest,
            bytes,
        }
    }

    /// Parses the bytes as manifest or index, refusing schema1 and unknown
    /// kinds with a message that names the image.
    ///
    /// The media type used is, in order: the JSON's own `mediaType`, then
    /// what the source said (a registry's `Content-Type` is often generic).
    ///
    /// # Errors
    /// [`Error::UnsupportedManifest`], [`Error::Json`], or an invalid digest in
    /// any descriptor.
    pub fn parse(&self, reference: &str) -> Result<Parsed> {
        let what = || format!("manifest {} of {reference}", self.digest);
        let probe: Probe =
            serde_json::from_slice(&self.bytes).map_err(|e| Error::json(what(), e))?;
        let media_type = probe
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.media_type.clone());
        let unsupported = |hint: &'static str| Error::UnsupportedManifest {
            reference: reference.to_owned(),
            media_type: media_type.clone(),
            hint,
        };
        if DOCKER_SCHEMA1.contains(&media_type.as_str()) || probe.schema_version == Some(1) {
            return Err(unsupported(
                "; Docker schema1 manifests are deprecated and not supported: push the image again with a current Docker or skopeo",
            ));
        }
        let is_index = match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            // An OCI layout's index.json and some registries omit mediaType.
            "" | "application/json" => probe.manifests.is_some(),
            _ => return Err(unsupported("")),
        };
        if is_index {
            let index: ImageIndex =
                serde_json::from_slice(&self.bytes).map_err(|e| Error::json(what(), e))?;
            for d in index.manifests() {
                check_digest(d.digest())?;
            }
            Ok(Parsed::Index(Box::new(index)))
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(&self.bytes).map_err(|e| Error::json(what(), e))?;
            check_digest(manifest.config().digest())?;
            for l in manifest.layers() {
                check_digest(l.digest())?;
            }
            Ok(Parsed::Manifest(Box::new(manifest)))
        }
    }
}

/// Checks that every layer of `manifest` is of a type strata can unpack.
///
/// # Errors
/// [`Error::UnsupportedLayer`] for the first that is not.
pub(crate) fn check_layers(manifest: &ImageManifest, reference: &str) -> Result<()> {
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if layer_compression(&media_type).is_none() {
            return Err(Error::UnsupportedLayer {
                reference: reference.to_owned(),
                digest: layer.digest().to_string(),
                media_type,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest_json(media_type: Option<&str>, layer_type: &str) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": DOCKER_CONFIG, "digest": format!("sha256:{D}"), "size": 0},
            "layers": [{"mediaType": layer_type, "digest": format!("sha256:{D}"), "size": 0}],
        });
        if let Some(m) = media_type {
            v["mediaType"] = m.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn docker_schema2_and_oci_manifests_parse() {
        for (mt, lt) in [
            (
                Some(DOCKER_MANIFEST),
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (
                Some(OCI_MANIFEST),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            (None, "application/vnd.oci.image.layer.v1.tar"),
        ] {
            let raw = RawManifest::new(Some(OCI_MANIFEST), manifest_json(mt, lt));
            let Parsed::Manifest(m) = raw.parse("img").unwrap() else {
                panic!("not a manifest")
            };
            check_layers(&m, "img").unwrap();
        }
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let raw = RawManifest::new(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.to_vec(),
        );
        let err = raw
            .parse("docker.io/library/old:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema1"), "{err}");
        assert!(err.contains("docker.io/library/old:1"), "{err}");
    }

    #[test]
    fn unknown_layer_types_are_named() {
        let raw = RawManifest::new(
            None,
            manifest_json(
                Some(OCI_MANIFEST),
                "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            ),
        );
        let Parsed::Manifest(m) = raw.parse("img").unwrap() else {
            panic!()
        };
        let err = check_layers(&m, "img").unwrap_err().to_string();
        assert!(err.contains("helm.chart"), "{err}");
    }

    #[test]
    fn index_without_media_type_is_recognised() {
        let raw = RawManifest::new(
            None,
            format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{D}","size":1}}]}}"#)
                .into_bytes(),
        );
        assert!(matches!(raw.parse("img").unwrap(), Parsed::Index(_)));
    }

    #[test]
    fn path_like_digests_in_descriptors_are_refused() {
        let json = manifest_json(Some(OCI_MANIFEST), "application/vnd.oci.image.layer.v1.tar")
            .into_iter()
            .map(char::from)
            .collect::<String>()
            .replacen(&format!("sha256:{D}"), "sha256:../../../../etc/passwd", 1);
        let raw = RawManifest::new(None, json.into_bytes());
        assert!(raw.parse("img").is_err());
    }

    #[test]
    fn compression_by_media_type() {
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(layer_compression("application/octet-stream"), None);
        assert!(is_foreign_layer(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        ));
        assert!(!is_foreign_layer(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
    }
}
