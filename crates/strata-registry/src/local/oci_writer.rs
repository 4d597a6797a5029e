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
        path: PathBuf,
        tmp: PathBuf,
        tar: Mutex<Option<tar::Builder<BufWriter<File>>>>,
        owner: (u32, u32),
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
        let file_name = path.file_name().ok_or_else(|| Error::InvalidLayout {
            path: path.to_owned(),
            format: "oci-archive destination",
            detail: "it names no file".into(),
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(io_error(&tmp))?;
        // Entries are owned by whoever writes the archive, as tar's are:
        // skopeo, unpacking as an ordinary user, chowns to what they say.
        let owner = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = file.metadata().map_err(io_error(&tmp))?;
            (meta.uid(), meta.gid())
        };
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let start = (|| {
            for dir in ["blobs/", "blobs/sha256/"] {
                let mut header = tar::Header::new_ustar();
                header.set_path(dir)?;
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_uid(owner.0.into());
                header.set_gid(owner.1.into());
                header.set_size(0);
                header.set_cksum();
                tar.append(&header, io::empty())?;
            }
            append(
                &mut tar,
                owner,
                "oci-layout",
                LAYOUT.len() as u64,
                &mut &LAYOUT[..],
            )
        })();
        start.map_err(io_error(&tmp))?;
        Ok(Self {
            target: Target::Archive {
                path: path.to_owned(),
                tmp,
                tar: Mutex::new(Some(tar)),
                owner,
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
            Target::Archive {
                tmp,
                tar,
                written,
                owner,
                ..
            } => {
                let mut guard = tar.lock().expect("archive lock poisoned");
                let builder = guard.as_mut().ok_or_else(|| Error::InvalidLayout {
                    path: tmp.clone(),
                    format: "oci-archive destination",
                    detail: "an earlier write failed; the archive is abandoned".into(),
                })?;
                if let Err(e) = append(builder, *owner, &format!("blobs/sha256/{hex}"), size, data)
                {
                    // A tar with half an entry is no archive: stop writing it.
                    *guard = None;
                    return Err(blob_error(e, what, tmp));
                }
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

/// A source error (integrity included) stays what it is; anything else is
/// the destination's file.
fn blob_error(e: io::Error, what: &str, path: &Path) -> Error {
    if crate::digest::integrity_error(&e).is_some() {
        return crate::source::integrity_from_io(e);
    }
    Error::Io {
        path: path.to_owned(),
        source: io::Error::new(e.kind(), format!("writing {what}: {e}")),
    }
}

fn append(
    tar: &mut tar::Builder<BufWriter<File>>,
    owner: (u32, u32),
    name: &str,
    size: u64,
    data: &mut dyn io::Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(owner.0.into());
    header.set_gid(owner.1.into());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    // A short source would leave the tar misaligned: take exactly `size`
    // and check that is what came.
    let mut counted = Counted { inner: data, n: 0 };
    tar.append(&header, &mut io::Read::take(&mut counted, size))?;
    if counted.n != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{name}: {} of {size} bytes", counted.n),
        ));
    }
    // One more read: a verifying stream checks its digest at its end, and
    // a longer one is caught.
    if counted.inner.read(&mut [0u8; 1])? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: more than {size} bytes"),
        ));
    }
    Ok(())
}

struct Counted<'a> {
    inner: &'a mut dyn io::Read,
    n: u64,
}

impl io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
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
            Target::Archive {
                path,
                tmp,
                tar,
                owner,
                ..
            } => {
                let builder = tar.lock().expect("archive lock poisoned").take();
                let Some(mut builder) = builder else {
                    return Err(Error::InvalidLayout {
                        path: tmp.clone(),
                        format: "oci-archive destination",
                        detail: "an earlier write failed; the archive is abandoned".into(),
                    });
                };
                let result = (|| {
                    append(
                        &mut builder,
                        *owner,
                        "index.json",
                        index.len() as u64,
                        &mut &index[..],
                    )?;
                    let file = builder
                        .into_inner()?
                        .into_inner()
                        .map_err(io::IntoInnerError::into_error)?;
                    file.sync_all()?;
                    fs::rename(tmp, path)
                })();
                result.map_err(io_error(path))
            }
        }
    }
}

impl Drop for OciLayoutWriter {
    fn drop(&mut self) {
        // An archive that was not finished is removed; a finished one was
        // renamed away, so this finds nothing.
        if let Target::Archive { tmp, .. } = &self.target {
            let _ = fs::remove_file(tmp);
        }
    }
}
