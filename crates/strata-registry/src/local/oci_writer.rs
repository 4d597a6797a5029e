//! Writing `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]`.
//!
//! A directory gets each blob as `blobs/sha256/.HEX.tmp-PID`, renamed into
//! place once the bytes verified, so a layout never holds a blob under a
//! name it does not hash to; `index.json` is rewritten (temp file, rename)
//! by `finish` only, after every blob and manifest is in. An archive is a
//! tar written beside the target as `.NAME.tmp-PID`, blobs appended as they
//! come, `index.json` last, renamed over the target at the end: a broken
//! copy leaves the old file (or none), never half of one.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, MediaType};

use super::tar_out::{ArchiveFile, blob_error};
use crate::destination::{BlobOpener, Destination};
use crate::digest::check_digest;
use crate::manifest::{MAX_MANIFEST_BYTES, RawManifest};
use crate::{Error, Result};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const FORMAT: &str = "OCI image layout";

enum Target {
    Dir(PathBuf),
    Archive {
        file: ArchiveFile,
        written: Mutex<HashSet<String>>,
    },
}

/// An OCI image layout being written.
pub(crate) struct OciLayoutWriter {
    target: Target,
    tag: Option<String>,
    name: String,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

fn hex_of(descriptor: &Descriptor) -> Result<String> {
    check_digest(descriptor.digest())?;
    Ok(descriptor.digest().digest().to_owned())
}

impl OciLayoutWriter {
    /// A layout directory: created when missing; an existing one must be a
    /// layout already (strata does not write into other directories).
    pub(crate) fn dir(path: &Path, tag: Option<String>) -> Result<Self> {
        let not_layout = |detail: String| Error::InvalidLayout {
            path: path.to_owned(),
            format: FORMAT,
            detail,
        };
        match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() && !path.join("oci-layout").exists() {
                    return Err(not_layout(
                        "it is a directory with other files and no oci-layout; name an empty or new directory, or an existing layout".into(),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(io_error(path))?;
            }
            Err(e) => return Err(io_error(path)(e)),
        }
        let blobs = path.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_error(&blobs))?;
        let marker = path.join("oci-layout");
        if !marker.exists() {
            fs::write(&marker, LAYOUT).map_err(io_error(&marker))?;
        }
        Ok(Self {
            target: Target::Dir(path.to_owned()),
            name: with_tag(format!("oci:{}", path.display()), tag.as_deref()),
            tag,
        })
    }

    /// A layout tar, written beside `path` and renamed over it by `finish`.
    pub(crate) fn archive(path: &Path, tag: Option<String>) -> Result<Self> {
        let file = ArchiveFile::create(path, "oci-archive destination")?;
        file.append_dir("blobs/")?;
        file.append_dir("blobs/sha256/")?;
        file.append(
            "oci-layout",
            LAYOUT.len() as u64,
            &mut &LAYOUT[..],
            "oci-layout",
        )?;
        Ok(Self {
            target: Target::Archive {
                file,
                written: Mutex::new(HashSet::new()),
            },
            name: with_tag(format!("oci-archive:{}", path.display()), tag.as_deref()),
            tag,
        })
    }

    fn write_bytes(&self, hex: &str, what: &str, size: u64, data: &mut dyn io::Read) -> Result<()> {
        match &self.target {
            Target::Dir(root) => {
                let dest = root.join("blobs/sha256").join(hex);
                let tmp = root
                    .join("blobs/sha256")
                    .join(format!(".{hex}.tmp-{}", std::process::id()));
                let result = (|| {
                    let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
                    io::copy(data, &mut file)?;
                    file.into_inner()
                        .map_err(io::IntoInnerError::into_error)?
                        .sync_all()
                })();
                if let Err(e) = result {
                    let _ = fs::remove_file(&tmp);
                    return Err(blob_error(e, what, &dest));
                }
                fs::rename(&tmp, &dest).map_err(io_error(&dest))
            }
            Target::Archive { file, written } => {
                file.append(&format!("blobs/sha256/{hex}"), size, data, what)?;
                written
                    .lock()
                    .expect("archive lock poisoned")
                    .insert(hex.to_owned());
                Ok(())
            }
        }
    }

    fn existing_index(&self) -> Result<Option<ImageIndex>> {
        let Target::Dir(root) = &self.target else {
            return Ok(None);
        };
        let path = root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) if bytes.len() as u64 <= MAX_MANIFEST_BYTES => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::json(format!("index.json of {}", self.name), e)),
            Ok(bytes) => Err(Error::TooLarge {
                what: format!("index.json of {}", self.name),
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_BYTES,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// `index.json` with `top` added under the tag, replacing what had
    /// that tag (or, untagged, the same digest without one).
    fn index_with(&self, top: &RawManifest) -> Result<Vec<u8>> {
        let mut entries: Vec<Descriptor> = self
            .existing_index()?
            .map(|i| i.manifests().clone())
            .unwrap_or_default();
        entries.retain(|d| {
            let name = d.annotations().as_ref().and_then(|a| a.get(REF_NAME));
            match &self.tag {
                Some(tag) => name != Some(tag),
                None => name.is_some() || d.digest() != &top.digest,
            }
        });
        let mut builder = DescriptorBuilder::default()
            .media_type(MediaType::from(top.media_type.as_str()))
            .digest(top.digest.clone())
            .size(top.bytes.len() as u64);
        if let Some(tag) = &self.tag {
            builder = builder.annotations(
                [(REF_NAME.to_owned(), tag.clone())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        entries.push(builder.build().map_err(|e| Error::InvalidLayout {
            path: PathBuf::from(&self.name),
            format: FORMAT,
            detail: format!("building its index entry: {e}"),
        })?);
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(entries)
            .build()
            .map_err(|e| Error::InvalidLayout {
                path: PathBuf::from(&self.name),
                format: FORMAT,
                detail: format!("building index.json: {e}"),
            })?;
        serde_json::to_vec(&index)
            .map_err(|e| Error::json(format!("index.json of {}", self.name), e))
    }
}

fn with_tag(name: String, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{name}:{t}"),
        None => name,
    }
}

impl Destination for OciLayoutWriter {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        let hex = hex_of(descriptor)?;
        Ok(match &self.target {
            Target::Dir(root) => fs::metadata(root.join("blobs/sha256").join(&hex))
                .is_ok_and(|m| m.is_file() && m.len() == descriptor.size()),
            Target::Archive { written, .. } => written
                .lock()
                .expect("archive lock poisoned")
                .contains(&hex),
        })
    }

    fn put_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
        _session: Option<String>,
    ) -> Result<()> {
        let hex = hex_of(descriptor)?;
        let mut source = open()?;
        self.write_bytes(&hex, what, descriptor.size(), &mut source)
    }

    fn put_manifest(&self, manifest: &RawManifest, _reference: &str) -> Result<()> {
        let hex = manifest.digest.digest().to_owned();
        let exists = match &self.target {
            Target::Dir(root) => root.join("blobs/sha256").join(&hex).is_file(),
            Target::Archive { written, .. } => written
                .lock()
                .expect("archive lock poisoned")
                .contains(&hex),
        };
        if exists {
            return Ok(());
        }
        self.write_bytes(
            &hex,
            &format!("manifest {}", manifest.digest),
            manifest.bytes.len() as u64,
            &mut &manifest.bytes[..],
        )
    }

    fn finish(&self, top: Option<&RawManifest>) -> Result<()> {
        let Some(top) = top else { return Ok(()) };
        let index = self.index_with(top)?;
        match &self.target {
            Target::Dir(root) => {
                let path = root.join("index.json");
                let tmp = root.join(format!(".index.json.tmp-{}", std::process::id()));
                let result = (|| {
                    let mut file = File::create(&tmp)?;
                    file.write_all(&index)?;
                    file.sync_all()?;
                    fs::rename(&tmp, &path)
                })();
                result.map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    io_error(&path)(e)
                })
            }
            Target::Archive { file, .. } => {
                file.append(
                    "index.json",
                    index.len() as u64,
                    &mut &index[..],
                    "index.json",
                )?;
                file.finish()
            }
        }
    }
}
