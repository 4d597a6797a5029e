//! Writing `docker-archive:FILE[:NAME:TAG]`: the tar `docker load` reads.
//!
//! Such an archive holds one platform's image: its config as
//! `<config hex>.json`, each layer as an uncompressed `<diff_id hex>.tar`
//! (the format has no compressed layers; skopeo writes the same names) and
//! `manifest.json` naming them with the image's tag. There is no registry
//! manifest in it, so the manifest digest is not kept; the config, and with
//! it the image ID and every diff_id, are. Each layer is decompressed (by
//! the caller's [`Decompressor`]: this crate does not know layer formats)
//! into a temp file beside the archive, hashed on the way, then appended:
//! a tar entry needs its size first. `finish` checks every hash against the
//! config's `rootfs.diff_ids` before the archive is renamed into place.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;

use oci_spec::image::Descriptor;

use super::tar_out::{ArchiveFile, blob_error};
use crate::destination::{BlobOpener, Decompressor, Destination};
use crate::digest::{StreamHasher, check_digest};
use crate::manifest::{MAX_CONFIG_BYTES, Parsed, RawManifest};
use crate::{Error, Result};

const FORMAT: &str = "docker-archive destination";

/// A layer as written: its file in the archive and the digest of its
/// uncompressed bytes.
struct Written {
    diff_id: String,
}

/// A `docker save` archive being written.
pub(crate) struct DockerArchiveWriter {
    file: ArchiveFile,
    /// `NAME:TAG` for `RepoTags`, when the reference gave one.
    tag: Option<String>,
    name: String,
    decompress: Decompressor,
    layers: Mutex<HashMap<String, Written>>,
    configs: Mutex<HashMap<String, Vec<u8>>>,
    top: Mutex<Option<RawManifest>>,
}

fn is_config(descriptor: &Descriptor) -> bool {
    let media_type = descriptor.media_type().to_string();
    media_type.ends_with("container.image.v1+json") || media_type.ends_with("image.config.v1+json")
}

impl DockerArchiveWriter {
    pub(crate) fn create(
        path: &Path,
        tag: Option<String>,
        decompress: Decompressor,
    ) -> Result<Self> {
        let name = match &tag {
            Some(t) => format!("docker-archive:{}:{t}", path.display()),
            None => format!("docker-archive:{}", path.display()),
        };
        Ok(Self {
            file: ArchiveFile::create(path, FORMAT)?,
            tag,
            name,
            decompress,
            layers: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            top: Mutex::new(None),
        })
    }

    /// Decompresses a layer into a temp file beside the archive, hashing
    /// it; returns the file (rewound), its size and its digest.
    fn unpack_layer(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
    ) -> Result<(File, u64, String)> {
        let tmp_path = self.file.scratch_path("layer");
        let result = (|| -> Result<(File, u64, String)> {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp_path)
                .map_err(|e| Error::io(&tmp_path, e))?;
            // Unlinked at once: the descriptor is all that is needed, and
            // a kill leaves nothing behind.
            let _ = fs::remove_file(&tmp_path);
            let source = open()?;
            let mut plain = (self.decompress)(source, descriptor.media_type().as_ref())
                .map_err(|e| blob_error(e, what, &tmp_path))?;
            let mut hasher = StreamHasher::default();
            let mut out = BufWriter::with_capacity(1 << 20, &mut file);
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = plain
                    .read(&mut buf)
                    .map_err(|e| blob_error(e, what, &tmp_path))?;
                if n == 0 {
                    break;
                }
                hasher
                    .write_all(&buf[..n])
                    .map_err(|e| Error::io(&tmp_path, e))?;
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io(&tmp_path, e))?;
                size += n as u64;
            }
            out.flush().map_err(|e| Error::io(&tmp_path, e))?;
            drop(out);
            file.rewind().map_err(|e| Error::io(&tmp_path, e))?;
            Ok((file, size, hasher.digest()))
        })();
        let _ = fs::remove_file(&tmp_path);
        result
    }
}

impl Destination for DockerArchiveWriter {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        check_digest(descriptor.digest())?;
        let digest = descriptor.digest().to_string();
        Ok(self.layers.lock().expect("lock").contains_key(&digest)
            || self.configs.lock().expect("lock").contains_key(&digest))
    }

    fn put_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
        _session: Option<String>,
    ) -> Result<()> {
        check_digest(descriptor.digest())?;
        let digest = descriptor.digest().to_string();
        if is_config(descriptor) {
            if descriptor.size() > MAX_CONFIG_BYTES {
                return Err(Error::TooLarge {
                    what: what.to_owned(),
                    size: descriptor.size(),
                    limit: MAX_CONFIG_BYTES,
                });
            }
            let mut bytes = Vec::new();
            open()?
                .read_to_end(&mut bytes)
                .map_err(|e| blob_error(e, what, self.file.path()))?;
            self.configs.lock().expect("lock").insert(digest, bytes);
            return Ok(());
        }
        let (mut file, size, diff_id) = self.unpack_layer(descriptor, what, open)?;
        let name = format!("{}.tar", diff_id.trim_start_matches("sha256:"));
        self.file.append(&name, size, &mut file, what)?;
        self.layers
            .lock()
            .expect("lock")
            .insert(digest, Written { diff_id });
        Ok(())
    }

    fn put_manifest(&self, manifest: &RawManifest, _reference: &str) -> Result<()> {
        if let Ok(Parsed::Index(_)) = manifest.parse(&self.name) {
            return Err(Error::InvalidLayout {
                path: self.file.path().to_owned(),
                format: FORMAT,
                detail: "a docker archive holds one platform's image, not an index; copy without --all (and with --platform to choose)".into(),
            });
        }
        *self.top.lock().expect("lock") = Some(manifest.clone());
        Ok(())
    }

    fn finish(&self, top: Option<&RawManifest>) -> Result<()> {
        let Some(top) = top else { return Ok(()) };
        let invalid = |detail: String| Error::InvalidLayout {
            path: self.file.path().to_owned(),
            format: FORMAT,
            detail,
        };
        let Parsed::Manifest(manifest) = top.parse(&self.name)? else {
            return Err(invalid("the image is an index".into()));
        };
        let config_digest = manifest.config().digest().to_string();
        let config = self
            .configs
            .lock()
            .expect("lock")
            .get(&config_digest)
            .cloned()
            .ok_or_else(|| invalid(format!("the config {config_digest} was not written")))?;
        let diff_ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&config)
            .map_err(|e| Error::json(format!("config {config_digest}"), e))?
            .pointer("/rootfs/diff_ids")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let layers = self.layers.lock().expect("lock");
        let mut files = Vec::new();
        for (i, layer) in manifest.layers().iter().enumerate() {
            let written = layers.get(&layer.digest().to_string()).ok_or_else(|| {
                invalid(format!(
                    "layer {} ({}) was not written",
                    i + 1,
                    layer.digest()
                ))
            })?;
            let expected = diff_ids.get(i).cloned().unwrap_or_default();
            if written.diff_id != expected {
                return Err(Error::DigestMismatch {
                    what: format!(
                        "layer {} ({}) uncompressed, against the config's diff_id",
                        i + 1,
                        layer.digest()
                    ),
                    expected,
                    actual: written.diff_id.clone(),
                });
            }
            files.push(format!(
                "{}.tar",
                written.diff_id.trim_start_matches("sha256:")
            ));
        }
        let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
        self.file.append(
            &config_name,
            config.len() as u64,
            &mut &config[..],
            "the config",
        )?;
        let entry = serde_json::json!([{
            "Config": config_name,
            "RepoTags": self.tag.iter().collect::<Vec<_>>(),
            "Layers": files,
        }]);
        let bytes = serde_json::to_vec(&entry).expect("JSON serialises");
        self.file.append(
            "manifest.json",
            bytes.len() as u64,
            &mut &bytes[..],
            "manifest.json",
        )?;
        self.file.finish()
    }
}
