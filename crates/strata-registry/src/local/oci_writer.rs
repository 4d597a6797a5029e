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
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// layout already (strata does not write into other directories), and
    /// its `blobs/` and `blobs/sha256/` real directories, not symlinks
    /// (which would send the blobs elsewhere). Temp files a killed writer
    /// left are removed.
    pub(crate) fn dir(path: &Path, tag: Option<String>) -> Result<Self> {
        let not_layout = |detail: String| Error::InvalidLayout {
            path: path.to_owned(),
            format: FORMAT,
            detail,
        };
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() || m.file_type().is_symlink() => {}
            Ok(_) => return Err(not_layout("it is a file, not a directory".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(io_error(path))?;
            }
            Err(e) => return Err(io_error(path)(e)),
        }
        // One writer at a time sets a layout up or rewrites its index.
        let _lock = lock_dir(path)?;
        let marker = path.join("oci-layout");
        if !marker.exists() {
            let mut entries = fs::read_dir(path).map_err(io_error(path))?;
            if entries.next().is_some() {
                return Err(not_layout(
                    "it is a directory with other files and no oci-layout; name an empty or new directory, or an existing layout".into(),
                ));
            }
            write_new(&marker, LAYOUT).map_err(io_error(&marker))?;
        }
        for dir in [path.join("blobs"), path.join("blobs/sha256")] {
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(not_layout(format!(
                        "{} is a symlink or a file, not a directory; strata writes blobs only inside the layout",
                        dir.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(io_error(&dir))?;
                }
                Err(e) => return Err(io_error(&dir)(e)),
            }
        }
        remove_stale_temps(&path.join("blobs/sha256"));
        remove_stale_temps(path);
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
                let tmp = root.join("blobs/sha256").join(temp_name(hex));
                let created = create_new(&tmp).map_err(io_error(&tmp))?;
                let result = (|| {
                    let mut file = BufWriter::with_capacity(1 << 20, created);
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
        let existing = self.existing_index()?;
        let mut entries: Vec<Descriptor> = existing
            .as_ref()
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
        // An existing index keeps what else it says (its annotations).
        let index = match existing {
            Some(mut index) => {
                index.set_manifests(entries);
                index
            }
            None => ImageIndexBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageIndex)
                .manifests(entries)
                .build()
                .map_err(|e| Error::InvalidLayout {
                    path: PathBuf::from(&self.name),
                    format: FORMAT,
                    detail: format!("building index.json: {e}"),
                })?,
        };
        serde_json::to_vec(&index)
            .map_err(|e| Error::json(format!("index.json of {}", self.name), e))
    }
}

/// `.NAME.tmp-PID-N`: unique in this process, and telling which process
/// left it.
fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a file that must not exist yet (`O_EXCL`: a planted symlink is
/// an error, never followed).
fn create_new(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match create_new(path) {
        Ok(mut f) => f.write_all(bytes),
        // Another writer made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// An exclusive lock on the layout directory (`flock` on its descriptor),
/// held while the value lives.
fn lock_dir(path: &Path) -> Result<File> {
    let dir = File::open(path).map_err(io_error(path))?;
    dir.lock().map_err(io_error(path))?;
    Ok(dir)
}

/// Removes `.NAME.tmp-PID-N` files whose process is gone (a killed copy's).
pub(super) fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = stale_pid(name) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The PID in a temp name strata writes (`.X.tmp-PID` or `.X.tmp-PID-N`).
pub(super) fn stale_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, rest) = name.rsplit_once(".tmp-")?;
    rest.split('-').next()?.parse().ok()
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
        if manifest.media_type.starts_with("application/vnd.docker.") {
            tracing::warn!(
                destination = %self.name,
                media_type = %manifest.media_type,
                "the image keeps its Docker manifest (and so its digest); skopeo, podman and umoci read only OCI manifests from an OCI layout: for them, pass --format oci (the manifest digest changes, the blobs do not)"
            );
        }
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
        match &self.target {
            Target::Dir(root) => {
                // Read, change and replace index.json under the layout's
                // lock: two copies into one layout both keep their tags.
                let _lock = lock_dir(root)?;
                let index = self.index_with(top)?;
                let path = root.join("index.json");
                let tmp = root.join(temp_name("index.json"));
                let mut file = create_new(&tmp).map_err(io_error(&tmp))?;
                let result = (|| {
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
                let index = self.index_with(top)?;
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
