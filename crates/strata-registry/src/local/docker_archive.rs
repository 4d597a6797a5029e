//! `docker-archive:FILE[:NAME:TAG|:@N]`: a `docker save` tar.
//!
//! Such an archive has no registry manifest, only `manifest.json` naming a
//! config file and layer tars per image. strata synthesises the Docker
//! schema2 manifest that `docker push` would have produced for it (as skopeo
//! does), so the rest of the program sees one kind of image.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use oci_spec::image::Descriptor;

use super::archive::TarIndex;
use crate::digest::{parse_digest, sha256_of};
use crate::manifest::{
    DOCKER_CONFIG, DOCKER_MANIFEST, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, RawManifest,
};
use crate::reference::{ArchiveImage, Reference};
use crate::transport::Transport;
use crate::{Error, Result};

const FORMAT: &str = "docker-archive";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// One image of a `docker save` archive.
pub(crate) struct DockerArchive {
    tar: TarIndex,
    name: String,
    manifest: RawManifest,
    /// digest → member name, for the config and every layer.
    blobs: HashMap<String, String>,
}

fn normalise_tag(tag: &str) -> Option<String> {
    tag.parse::<Reference>().ok().map(|r| r.to_string())
}

impl DockerArchive {
    pub(crate) fn open(path: &Path, image: Option<ArchiveImage>) -> Result<Self> {
        let tar = TarIndex::open(path, FORMAT)?;
        let invalid = |detail: String| Error::InvalidLayout {
            path: path.to_owned(),
            format: FORMAT,
            detail,
        };
        if !tar.contains("manifest.json") {
            return Err(invalid(
                "it has no manifest.json (is it a `docker save` tar?)".into(),
            ));
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&tar.read_member("manifest.json", MAX_MANIFEST_BYTES)?)
                .map_err(|e| Error::json(format!("manifest.json of {}", path.display()), e))?;
        let describe_all = || {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let tags = e.repo_tags.clone().unwrap_or_default();
                    if tags.is_empty() {
                        format!("@{i}")
                    } else {
                        format!("@{i} ({})", tags.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (index, entry) = match &image {
            None if entries.len() == 1 => (0, &entries[0]),
            None => {
                return Err(invalid(format!(
                    "it holds {} images; name one as docker-archive:FILE:NAME:TAG or :@N: {}",
                    entries.len(),
                    describe_all()
                )));
            }
            Some(ArchiveImage::Index(i)) => (
                *i,
                entries.get(*i).ok_or_else(|| {
                    invalid(format!("it has no image @{i}; it has {}", describe_all()))
                })?,
            ),
            Some(ArchiveImage::Tag(t)) => {
                let want = normalise_tag(t);
                entries
                    .iter()
                    .enumerate()
                    .find(|(_, e)| {
                        e.repo_tags
                            .iter()
                            .flatten()
                            .any(|rt| normalise_tag(rt) == want)
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "it has no image tagged {t}; it has {}",
                            describe_all()
                        ))
                    })?
            }
        };
        let name = match &image {
            Some(ArchiveImage::Tag(t)) => format!("docker-archive:{}:{t}", path.display()),
            _ => format!("docker-archive:{}:@{index}", path.display()),
        };

        let config = tar.read_member(&entry.config, MAX_CONFIG_BYTES)?;
        let config_digest = sha256_of(&config);
        let diff_ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&config)
            .map_err(|e| Error::json(format!("config {} of {name}", entry.config), e))?
            .pointer("/rootfs/diff_ids")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        if diff_ids.len() != entry.layers.len() {
            return Err(invalid(format!(
                "image {name} lists {} layers but its config has {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            )));
        }

        let mut blobs = HashMap::new();
        blobs.insert(config_digest.clone(), entry.config.clone());
        let mut layers = Vec::new();
        for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let (mut reader, size) = tar.open_member(layer)?;
            let mut magic = [0u8; 4];
            let n = read_up_to(&mut reader, &mut magic).map_err(|e| Error::io(path, e))?;
            let (media_type, compressed) = if magic[..n].starts_with(&GZIP_MAGIC) {
                ("application/vnd.docker.image.rootfs.diff.tar.gzip", true)
            } else if magic[..n] == ZSTD_MAGIC {
                ("application/vnd.docker.image.rootfs.diff.tar.zstd", true)
            } else {
                ("application/vnd.docker.image.rootfs.diff.tar", false)
            };
            // The digest of an uncompressed layer is its diff_id; newer
            // archives also name blobs by digest. Otherwise hash it once.
            let digest = if let Some(hex) = layer.strip_prefix("blobs/sha256/") {
                format!("sha256:{hex}")
            } else if !compressed {
                diff_id.clone()
            } else {
                let mut hasher = crate::digest::StreamHasher::default();
                let (mut reader, _) = tar.open_member(layer)?;
                std::io::copy(&mut reader, &mut hasher).map_err(|e| Error::io(path, e))?;
                hasher.digest()
            };
            parse_digest(&digest)?;
            blobs.insert(digest.clone(), layer.clone());
            layers
                .push(serde_json::json!({"mediaType": media_type, "size": size, "digest": digest}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
            "layers": layers,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises");
        Ok(Self {
            tar,
            name,
            manifest: RawManifest::new(Some(DOCKER_MANIFEST), bytes),
            blobs,
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Transport for DockerArchive {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn top(&self) -> Result<RawManifest> {
        Ok(self.manifest.clone())
    }

    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        Err(Error::NotFound {
            reference: self.name.clone(),
            detail: format!(
                ": a docker-archive holds no manifest {}",
                descriptor.digest()
            ),
        })
    }

    fn blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = descriptor.digest().to_string();
        let member = self.blobs.get(&digest).ok_or_else(|| Error::NotFound {
            reference: self.name.clone(),
            detail: format!(": the archive has no blob {digest}"),
        })?;
        Ok(self.tar.open_member(member)?.0)
    }
}
