//! `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]`: OCI image layouts.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use super::archive::TarIndex;
use crate::digest::{check_digest, verify_bytes};
use crate::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX, RawManifest};
use crate::transport::Transport;
use crate::{Error, Result};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const FORMAT: &str = "OCI image layout";

enum Files {
    Dir(PathBuf),
    Archive(TarIndex),
}

impl Files {
    fn root(&self) -> &Path {
        match self {
            Self::Dir(p) => p,
            Self::Archive(t) => t.path(),
        }
    }

    fn open(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Self::Dir(root) => {
                let path = root.join(rel);
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
                Ok((
                    Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                    size,
                ))
            }
            Self::Archive(t) => t.open_member(rel),
        }
    }

    fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        let (reader, size) = self.open(rel)?;
        if size > limit {
            return Err(Error::TooLarge {
                what: format!("{rel} in {}", self.root().display()),
                size,
                limit,
            });
        }
        let mut out = Vec::new();
        reader
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(self.root().join(rel), e))?;
        Ok(out)
    }
}

/// An OCI image layout, as a directory or inside a tar.
pub(crate) struct OciLayout {
    files: Files,
    tag: Option<String>,
    name: String,
}

fn blob_path(descriptor: &Descriptor) -> Result<String> {
    check_digest(descriptor.digest())?;
    Ok(format!("blobs/sha256/{}", descriptor.digest().digest()))
}

impl OciLayout {
    pub(crate) fn open_dir(path: &Path, tag: Option<String>) -> Result<Self> {
        Self::open(
            Files::Dir(path.to_owned()),
            tag,
            format!("oci:{}", path.display()),
        )
    }

    pub(crate) fn open_archive(path: &Path, tag: Option<String>) -> Result<Self> {
        let index = TarIndex::open(path, FORMAT)?;
        Self::open(
            Files::Archive(index),
            tag,
            format!("oci-archive:{}", path.display()),
        )
    }

    fn open(files: Files, tag: Option<String>, name: String) -> Result<Self> {
        let invalid = |detail: String| Error::InvalidLayout {
            path: files.root().to_owned(),
            format: FORMAT,
            detail,
        };
        let marker = files
            .read("oci-layout", 4096)
            .map_err(|_| invalid("it has no oci-layout file".into()))?;
        let marker: serde_json::Value = serde_json::from_slice(&marker)
            .map_err(|e| invalid(format!("oci-layout is not JSON: {e}")))?;
        if marker
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(invalid("oci-layout has no imageLayoutVersion".into()));
        }
        let name = match &tag {
            Some(t) => format!("{name}:{t}"),
            None => name,
        };
        Ok(Self { files, tag, name })
    }

    fn index(&self) -> Result<(Vec<u8>, ImageIndex)> {
        let bytes = self.files.read("index.json", MAX_MANIFEST_BYTES)?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("index.json of {}", self.name), e))?;
        Ok((bytes, index))
    }

    fn read_verified(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        if descriptor.size() > MAX_MANIFEST_BYTES {
            return Err(Error::TooLarge {
                what: format!("manifest {} of {}", descriptor.digest(), self.name),
                size: descriptor.size(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let bytes = self
            .files
            .read(&blob_path(descriptor)?, MAX_MANIFEST_BYTES)?;
        verify_bytes(
            &format!("manifest of {}", self.name),
            descriptor.digest(),
            &bytes,
        )?;
        let mut raw = RawManifest::new(Some(descriptor.media_type().as_ref()), bytes);
        raw.digest = descriptor.digest().clone();
        Ok(raw)
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

impl Transport for OciLayout {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn top(&self) -> Result<RawManifest> {
        let (bytes, index) = self.index()?;
        let entries = index.manifests();
        let chosen = match &self.tag {
            Some(tag) => entries.iter().find(|d| ref_name(d) == Some(tag.as_str())),
            None if entries.len() == 1 => entries.first(),
            // Several untagged platform manifests: index.json is the index.
            None if entries.iter().all(|d| ref_name(d).is_none()) => {
                return Ok(RawManifest::new(Some(OCI_INDEX), bytes));
            }
            None => None,
        };
        chosen.map_or_else(
            || {
                let tags: Vec<&str> = entries.iter().filter_map(ref_name).collect();
                Err(Error::NotFound {
                    reference: self.name.clone(),
                    detail: if tags.is_empty() {
                        ": the layout's index.json lists no image".into()
                    } else {
                        format!("; name one of its tags as oci:DIR:TAG: {}", tags.join(", "))
                    },
                })
            },
            |d| self.read_verified(d),
        )
    }

    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        self.read_verified(descriptor)
    }

    fn blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        Ok(self.files.open(&blob_path(descriptor)?)?.0)
    }
}
