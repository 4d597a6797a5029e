//! The on-disk store.
//!
//! ```text
//! STORE/layers/<chain id hex>/diff/        a layer in overlay form
//! STORE/layers/<chain id hex>/layer.json   what it is (diff_id, sizes, counts)
//! STORE/images/<manifest digest hex>.json  manifest, config, layer list
//! STORE/refs.json                          name → manifest digest
//! STORE/blobs/sha256/<hex>                 compressed layer blobs strata made (commit)
//! STORE/mounts/<id>/{mount.json,upper,work}
//! STORE/locks/                             one lock file per layer being made
//! STORE/tmp/                               layers being made
//! STORE/lock                               shared by every strata process
//! ```
//!
//! A layer directory appears only whole: it is made in `tmp/` and renamed
//! into `layers/` after its digests verified and its fix-up ran, with
//! `layer.json` already inside. A killed run leaves only `tmp/`, which the
//! next process that finds itself alone on the store removes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::remove::remove_tree;
use crate::{Error, Result};

/// What the store knows of one extracted layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The chain id (the directory's key).
    pub chain_id: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The compressed blob's digest.
    pub digest: String,
    /// The blob's media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    /// Tar entries.
    pub entries: u64,
    /// Whiteouts.
    pub whiteouts: u64,
    /// Opaque markers.
    pub opaque_dirs: u64,
    /// The digest of `diff/` as it was committed (strata-layer's
    /// `tree_digest`), which `strata fsck` checks it against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_digest: Option<String>,
    /// What `diff/` cannot hold in overlay form (strata-layer's
    /// `FormNotes`: real 0:0 devices, links to lower files), kept as the
    /// layer crate wrote it; this crate does not read it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub form_notes: serde_json::Value,
}

/// One layer of a stored image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageLayer {
    /// The compressed blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The chain id: where the layer lives in the store.
    pub chain_id: String,
    /// The blob's media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
}

/// A stored image: enough to mount, inspect or bundle it offline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The platform manifest's digest.
    pub digest: String,
    /// The digest of what the reference named (the index, for a
    /// multi-platform image; else the manifest): a warm pull matches it
    /// against the registry's `HEAD` and fetches nothing.
    #[serde(default)]
    pub source_digest: Option<String>,
    /// Where the image's blobs can be fetched again (the reference it was
    /// pulled from, local paths made absolute): `strata push` streams the
    /// layers the store keeps no blob of from here. A committed image
    /// carries its base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The platform it was resolved for (`os/arch[/variant]`).
    pub platform: String,
    /// The manifest, as the source held it.
    pub manifest: String,
    /// The config, as the source held it.
    pub config: String,
    /// The layers, bottom first.
    pub layers: Vec<ImageLayer>,
}

/// A live (or once live) mount made by strata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    /// The record's id (its directory under `mounts/`).
    pub id: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The image, as the user named it.
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// The layers it stacks, bottom first (gc keeps them).
    pub chain_ids: Vec<String>,
    /// Whether it has an upper directory.
    pub writable: bool,
    /// Unmounted with `--keep`: only the upper is left, for the user (and
    /// `strata commit`). Never reused by a later mount, never removed
    /// implicitly; its layers stay (the upper means nothing without them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// A rootless mount: the holder process whose mount namespace holds it
    /// (`PID:START`). When that process is gone, so is the mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Chain ids of removed layers.
    pub removed: Vec<String>,
    /// Digests of removed blobs (of committed images no name points at).
    pub removed_blobs: Vec<String>,
    /// Bytes freed (apparent sizes of the removed files).
    pub freed_bytes: u64,
}

/// An open store. Holds a shared lock on `STORE/lock` for its lifetime.
pub struct Store {
    root: PathBuf,
    lock: File,
    kind: StoreKind,
}

/// Exclusive ownership of making one layer (held until committed or dropped).
pub struct LayerLock {
    _file: File,
    hex: String,
}

/// A layer being made in `tmp/`; removed on drop unless committed.
pub struct TmpLayer {
    dir: PathBuf,
    /// `layers/`: the layer goes to `layers/<its chain id>`.
    layers: PathBuf,
    committed: bool,
}

/// A blob being written in `tmp/`; removed on drop unless committed.
pub struct TmpBlob {
    path: PathBuf,
    blobs: PathBuf,
    committed: bool,
}

pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

pub(crate) fn valid_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Opens (creating) a file used only for `flock`.
fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

/// Writes `bytes` to `path` atomically (temp file in `tmp_dir` + rename),
/// unless the file already holds exactly them (a warm pull rewrites
/// nothing). The temp file lives in the store's `tmp/`, so that a kill
/// between write and rename leaves nothing beside the records.
fn write_atomic(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = tmp_dir.join(format!(".{name}.{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io("writing", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Corrupt {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(std::result::Result::ok)
                .map(|e| dir_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Who a store's layers were made by. Root's layers carry the image's
/// owners and `trusted.overlay.*`; a rootless store's carry mapped owners (or
/// override records) and `user.overlay.*`. A store serves its own kind only,
/// written in `STORE/kind` when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Made by root in the initial user namespace.
    Root,
    /// Made by an ordinary user, inside strata's user namespace.
    Rootless,
}

impl StoreKind {
    fn word(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Rootless => "rootless",
        }
    }
}

impl StoreKind {
    /// How a process of this kind runs, for messages.
    #[must_use]
    pub fn running(self) -> &'static str {
        match self {
            Self::Root => "as root",
            Self::Rootless => "rootless",
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Root => "root-made",
            Self::Rootless => "rootless",
        })
    }
}

fn read_kind(root: &Path) -> Result<Option<StoreKind>> {
    let path = root.join("kind");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "root" => Ok(Some(StoreKind::Root)),
            "rootless" => Ok(Some(StoreKind::Rootless)),
            other => Err(Error::io(
                "reading",
                &path,
                std::io::Error::other(format!("unknown store kind {other:?}")),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", &path, e)),
    }
}

/// Who made the store at `root`, if anyone yet. A store from before kinds
/// were written was made by root: a rootless strata could not make one that
/// holds layers.
fn made_by(root: &Path) -> Result<Option<StoreKind>> {
    if let Some(kind) = read_kind(root)? {
        return Ok(Some(kind));
    }
    let has_layers = std::fs::read_dir(root.join("layers"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    Ok(has_layers.then_some(StoreKind::Root))
}

fn write_kind(root: &Path, kind: StoreKind) -> Result<()> {
    let path = root.join("kind");
    if path.exists() {
        return Ok(());
    }
    let tmp = root.join(format!("kind.tmp-{}", std::process::id()));
    std::fs::write(&tmp, kind.word()).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming", &tmp, e))
}

impl Store {
    /// The default location for a kind: `/var/lib/strata` for root, else
    /// `$XDG_DATA_HOME/strata` or `~/.local/share/strata`.
    #[must_use]
    pub fn default_root(kind: StoreKind) -> PathBuf {
        if kind == StoreKind::Root {
            return PathBuf::from("/var/lib/strata");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("strata")
    }

    /// Opens (creating) the store at `root` for `kind`. If no other strata
    /// process is using it, leftovers of killed runs are removed first.
    ///
    /// # Errors
    /// When the directories cannot be created or the lock taken;
    /// [`Error::WrongKind`] when the store was made by the other kind.
    pub fn open(root: &Path, kind: StoreKind) -> Result<Self> {
        for sub in ["layers", "images", "mounts", "locks", "tmp", "blobs/sha256"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io("creating the store directory", &dir, e))?;
        }
        let root = std::fs::canonicalize(root).map_err(|e| Error::io("resolving", root, e))?;
        Self::check_kind(&root, kind)?;
        write_kind(&root, kind)?;
        let lock_path = root.join("lock");
        let lock = open_lock_file(&lock_path)?;
        let store = Self { root, lock, kind };
        if store.lock.try_lock().is_ok() {
            store.clean_tmp()?;
            store
                .lock
                .unlock()
                .map_err(|e| Error::io("unlocking", &lock_path, e))?;
        }
        store
            .lock
            .lock_shared()
            .map_err(|e| Error::io("locking", &lock_path, e))?;
        Ok(store)
    }

    /// Who made the store (and opened it).
    #[must_use]
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Checks that the store at `root` (if there is one) was made by
    /// `kind`, before anything is created in it.
    ///
    /// # Errors
    /// [`Error::WrongKind`], or when `STORE/kind` cannot be read.
    pub fn check_kind(root: &Path, kind: StoreKind) -> Result<()> {
        match made_by(root)? {
            Some(made) if made != kind => Err(Error::WrongKind {
                store: root.to_owned(),
                made,
                wanted: kind,
                hint: match kind {
                    StoreKind::Root => "another --store for root (the default is /var/lib/strata)",
                    StoreKind::Rootless => {
                        "the user's own store (the default, $XDG_DATA_HOME/strata) or another --store"
                    }
                },
            }),
            _ => Ok(()),
        }
    }

    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io("listing", &tmp, e))? {
            let path = entry.map_err(|e| Error::io("listing", &tmp, e))?.path();
            tracing::info!(path = %path.display(), "removing the leftover of an interrupted run");
            // A leftover that cannot go (a mount inside it) never stops the
            // store from opening; the next exclusive open tries again.
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover in tmp/");
            }
        }
        Ok(())
    }

    /// The store's directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn layer_root(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(chain_id))
    }

    /// The overlay-form directory of a layer (present or not).
    #[must_use]
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.layer_root(chain_id).join("diff")
    }

    /// The directory of short layer links (`l/`), for mount(2) on kernels
    /// without `lowerdir+`.
    #[must_use]
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }

    /// A short name in [`Store::links_dir`] for a layer: a symlink
    /// `l/<12 hex>` → `../layers/<chain hex>/diff`, made if missing.
    ///
    /// # Errors
    /// When the link cannot be made, or another layer holds the name.
    pub fn short_link(&self, chain_id: &str) -> Result<String> {
        let hex = hex_of(chain_id);
        let name = hex[..12.min(hex.len())].to_owned();
        let dir = self.links_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let link = dir.join(&name);
        let target = PathBuf::from(format!("../layers/{hex}/diff"));
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(name),
            Ok(_) => {
                return Err(Error::io(
                    "creating the short link",
                    &link,
                    std::io::Error::other("the name is taken by another layer"),
                ));
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(name),
            Err(e) => Err(Error::io("creating the short link", &link, e)),
        }
    }

    /// Whether a complete layer with this chain id is in the store.
    #[must_use]
    pub fn has_layer(&self, chain_id: &str) -> bool {
        self.layer_root(chain_id).join("layer.json").is_file()
    }

    /// The record of a stored layer.
    ///
    /// # Errors
    /// When the record cannot be read.
    pub fn layer_record(&self, chain_id: &str) -> Result<Option<LayerRecord>> {
        read_json(&self.layer_root(chain_id).join("layer.json"))
    }

    /// Takes the exclusive right to make a layer, waiting for another process
    /// that is making it. Check [`Store::has_layer`] again after this returns.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn lock_layer(&self, chain_id: &str) -> Result<LayerLock> {
        let hex = hex_of(chain_id).to_owned();
        assert!(valid_hex(&hex), "chain ids are sha256 digests");
        let path = self.root.join("locks").join(format!("{hex}.lock"));
        let file = open_lock_file(&path)?;
        file.lock().map_err(|e| Error::io("locking", &path, e))?;
        Ok(LayerLock { _file: file, hex })
    }

    /// Starts making a layer in `tmp/` (removing what a killed run of it left).
    ///
    /// # Errors
    /// When the directory cannot be made.
    pub fn begin_layer(&self, lock: &LayerLock) -> Result<TmpLayer> {
        let tmp = self.root.join("tmp");
        // We hold the layer's lock: any tmp dir of it is a dead run's.
        for entry in std::fs::read_dir(&tmp)
            .map_err(|e| Error::io("listing", &tmp, e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&lock.hex) {
                remove_tree(&entry.path())?;
            }
        }
        self.tmp_layer(tmp.join(format!("{}-{}", lock.hex, std::process::id())))
    }

    /// Starts making a layer whose chain id is known only once it is made
    /// (a commit's): take [`Store::lock_layer`] of it before
    /// [`TmpLayer::commit`].
    ///
    /// # Errors
    /// When the directory cannot be made.
    pub fn begin_new_layer(&self) -> Result<TmpLayer> {
        self.tmp_layer(self.tmp_dir().join(format!("new-{}", unique_suffix())))
    }

    fn tmp_layer(&self, dir: PathBuf) -> Result<TmpLayer> {
        let diff = dir.join("diff");
        std::fs::create_dir_all(&diff).map_err(|e| Error::io("creating", &diff, e))?;
        Ok(TmpLayer {
            layers: self.root.join("layers"),
            dir,
            committed: false,
        })
    }

    /// Where a blob strata made is kept (present or not).
    #[must_use]
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex_of(digest))
    }

    /// Starts writing a blob in `tmp/`.
    ///
    /// # Errors
    /// When the file cannot be made.
    pub fn begin_blob(&self) -> Result<TmpBlob> {
        let path = self.tmp_dir().join(format!("blob-{}", unique_suffix()));
        File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
        Ok(TmpBlob {
            path,
            blobs: self.root.join("blobs/sha256"),
            committed: false,
        })
    }

    /// Stores an image record and points `names` at it.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn put_image(&self, record: &ImageRecord, names: &[String]) -> Result<()> {
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&record.digest)));
        let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
        // Under the names' lock: an `rm` of the last name of this digest
        // cannot remove the record between its write and the new names.
        self.with_refs(|refs| {
            write_atomic(&path, &bytes, &self.tmp_dir())?;
            for name in names {
                refs.insert(name.clone(), record.digest.clone());
            }
            Ok(())
        })
    }

    pub(crate) fn update_refs(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<()> {
        self.with_refs(|refs| {
            change(refs);
            Ok(())
        })
    }

    /// Runs `change` on the names while holding their lock (it may write
    /// records too), then writes the names.
    fn with_refs<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock_refs()?;
        let mut refs = self.refs()?;
        let out = change(&mut refs)?;
        self.write_refs(&refs)?;
        Ok(out)
    }

    /// The lock every change of the names holds (released on drop).
    fn lock_refs(&self) -> Result<File> {
        let lock_path = self.root.join("refs.lock");
        let lock = open_lock_file(&lock_path)?;
        lock.lock()
            .map_err(|e| Error::io("locking", &lock_path, e))?;
        Ok(lock)
    }

    fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<()> {
        write_atomic(
            &self.root.join("refs.json"),
            &serde_json::to_vec_pretty(refs).expect("refs serialise"),
            &self.tmp_dir(),
        )
    }

    /// Every name → manifest digest.
    ///
    /// # Errors
    /// When refs.json cannot be read.
    pub fn refs(&self) -> Result<BTreeMap<String, String>> {
        Ok(read_json(&self.root.join("refs.json"))?.unwrap_or_default())
    }

    /// Finds an image by a name it was pulled as, or by manifest digest.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] when there is none.
    pub fn find_image(&self, name: &str) -> Result<ImageRecord> {
        let refs = self.refs()?;
        let digest = refs.get(name).cloned().unwrap_or_else(|| name.to_owned());
        let hex = hex_of(&digest);
        let record = if valid_hex(hex) {
            read_json(&self.root.join("images").join(format!("{hex}.json")))?
        } else {
            None
        };
        record.ok_or_else(|| Error::UnknownImage {
            name: name.to_owned(),
            store: self.root.clone(),
        })
    }

    /// Every stored image with the names pointing at it.
    ///
    /// # Errors
    /// When a record cannot be read.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let refs = self.refs()?;
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(record): Option<ImageRecord> = read_json(&path)? else {
                continue;
            };
            let names: Vec<String> = refs
                .iter()
                .filter(|(_, d)| **d == record.digest)
                .map(|(n, _)| n.clone())
                .collect();
            out.push((record, names));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Removes a name; the image record goes when no name points at it.
    /// Layers stay until [`Store::gc`].
    ///
    /// # Errors
    /// [`Error::UnknownImage`], or a write failure.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord> {
        let record = self.find_image(name)?;
        let digest = record.digest.clone();
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&digest)));
        // Under the names' lock (a pull cannot name the record meanwhile);
        // the names are written first, so a kill never leaves a dangling one.
        let _lock = self.lock_refs()?;
        let mut refs = self.refs()?;
        refs.retain(|n, d| !(n == name || (name == digest && *d == digest)));
        self.write_refs(&refs)?;
        if !refs.values().any(|d| *d == digest) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", &path, e)),
            }
        }
        Ok(record)
    }

    /// A new mount record's directory for `mountpoint`, with `upper/` and
    /// `work/` when writable.
    ///
    /// # Errors
    /// When the directories cannot be made.
    pub fn mount_dir(&self, id: &str) -> PathBuf {
        self.root.join("mounts").join(id)
    }

    /// Saves a mount record.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn put_mount(&self, record: &MountRecord) -> Result<()> {
        let dir = self.mount_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        write_atomic(
            &dir.join("mount.json"),
            &serde_json::to_vec_pretty(record).expect("records serialise"),
            &self.tmp_dir(),
        )
    }

    /// Every mount record.
    ///
    /// # Errors
    /// When a record cannot be read.
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        let dir = self.root.join("mounts");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let path = entry
                .map_err(|e| Error::io("listing", &dir, e))?
                .path()
                .join("mount.json");
            if let Some(record) = read_json(&path)? {
                out.push(record);
            }
        }
        out.sort_by(|a: &MountRecord, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(out)
    }

    /// Removes a mount record (and its upper/work directories unless `keep`).
    ///
    /// # Errors
    /// When the files cannot be removed.
    pub fn remove_mount(&self, id: &str, keep_upper: bool) -> Result<()> {
        let dir = self.mount_dir(id);
        if keep_upper {
            let path = dir.join("mount.json");
            let mut record: MountRecord = read_json(&path)?.ok_or_else(|| {
                Error::io(
                    "reading",
                    &path,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
            record.kept = true;
            self.put_mount(&record)?;
            remove_tree(&dir.join("work"))
        } else {
            remove_tree(&dir)
        }
    }

    /// Removes the records of read-only mounts that are no longer mounted
    /// (a rootless writable one keeps its upper as `umount --keep` does),
    /// then every layer that no stored image and no mount record uses, and
    /// every kept blob no image names. Waits until no other strata process
    /// uses the store.
    ///
    /// # Errors
    /// When the store cannot be locked, read or cleaned.
    pub fn gc(&self) -> Result<GcReport> {
        self.exclusively(|| self.gc_locked())
    }

    /// Runs `f` while no other strata process uses the store (waiting for
    /// them), then goes back to sharing it.
    pub(crate) fn exclusively<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("lock");
        self.lock
            .unlock()
            .map_err(|e| Error::io("unlocking", &lock_path, e))?;
        self.lock
            .lock()
            .map_err(|e| Error::io("locking", &lock_path, e))?;
        let result = f();
        let _ = self.lock.unlock();
        self.lock
            .lock_shared()
            .map_err(|e| Error::io("locking", &lock_path, e))?;
        result
    }

    fn gc_locked(&self) -> Result<GcReport> {
        // Records of read-only mounts that are gone (unmounted by hand, or
        // the machine rebooted). Only here, with the store to ourselves: a
        // mount in flight has written its record but not yet attached the
        // mount, and holds the store while it does.
        // A rootless writable mount whose holder died is gone too: its
        // record stays as a kept upper (the user's changes are never
        // deleted unasked), for `strata commit` or `umount`.
        for m in self.mounts()? {
            if m.kept || crate::mount::is_mountpoint(&m.mountpoint)? {
                continue;
            }
            if !m.writable {
                self.remove_mount(&m.id, false)?;
            } else if m.holder.is_some() {
                self.remove_mount(&m.id, true)?;
            }
        }
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut live_blobs: BTreeSet<String> = BTreeSet::new();
        for (image, _) in self.images()? {
            live.extend(image.layers.iter().map(|l| hex_of(&l.chain_id).to_owned()));
            live_blobs.extend(image.layers.iter().map(|l| hex_of(&l.digest).to_owned()));
        }
        for mount in self.mounts()? {
            live.extend(mount.chain_ids.iter().map(|c| hex_of(c).to_owned()));
        }
        let layers = self.root.join("layers");
        let mut report = GcReport::default();
        for entry in std::fs::read_dir(&layers).map_err(|e| Error::io("listing", &layers, e))? {
            let entry = entry.map_err(|e| Error::io("listing", &layers, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            report.freed_bytes += self.remove_layer_dir(&name)?;
            report.removed.push(format!("sha256:{name}"));
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs).map_err(|e| Error::io("listing", &blobs, e))? {
            let entry = entry.map_err(|e| Error::io("listing", &blobs, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if live_blobs.contains(&name) {
                continue;
            }
            report.freed_bytes += entry.metadata().map_or(0, |m| m.len());
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("removing", entry.path(), e))?;
            report.removed_blobs.push(format!("sha256:{name}"));
        }
        // Short links of removed layers dangle now.
        if let Ok(links) = std::fs::read_dir(self.links_dir()) {
            for link in links.flatten() {
                if !link.path().exists() {
                    let _ = std::fs::remove_file(link.path());
                }
            }
        }
        self.clean_tmp()?;
        Ok(report)
    }
}

impl Store {
    /// Removes `layers/<name>`, moving it aside first so that a
    /// half-removed layer is never seen as whole. Returns the bytes freed.
    pub(crate) fn remove_layer_dir(&self, name: &str) -> Result<u64> {
        let path = self.root.join("layers").join(name);
        let doomed = self.tmp_dir().join(format!("gone-{name}"));
        std::fs::rename(&path, &doomed).map_err(|e| Error::io("removing", &path, e))?;
        let freed = dir_size(&doomed);
        remove_tree(&doomed)?;
        Ok(freed)
    }
}

impl TmpLayer {
    /// Where the layer's files go.
    #[must_use]
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }

    /// Writes the record and renames the layer into `layers/`, atomically.
    ///
    /// # Errors
    /// When the record cannot be written or the rename fails.
    pub fn commit(mut self, record: &LayerRecord) -> Result<()> {
        let dest = self.layers.join(hex_of(&record.chain_id));
        write_atomic(
            &self.dir.join("layer.json"),
            &serde_json::to_vec_pretty(record).expect("records serialise"),
            &self.dir,
        )?;
        match std::fs::rename(&self.dir, &dest) {
            Ok(()) => {}
            // Made meanwhile by a process that did not take the lock; same content.
            Err(e) if dest.join("layer.json").is_file() => {
                tracing::debug!(error = %e, "layer already in the store");
                return Ok(());
            }
            Err(e) => return Err(Error::io("moving the layer into the store", &dest, e)),
        }
        self.committed = true;
        Ok(())
    }
}

impl TmpBlob {
    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the blob to [`Store::blob_path`]`(digest)`, which the caller
    /// computed while writing it. Not synced, as no layer of the store is:
    /// a killed process loses nothing the kernel has, and a rename is whole.
    ///
    /// # Errors
    /// When the blob cannot be synced or moved.
    pub fn commit(mut self, digest: &str) -> Result<PathBuf> {
        let hex = hex_of(digest);
        if !valid_hex(hex) {
            return Err(Error::io(
                "storing",
                &self.path,
                std::io::Error::other(format!("{digest} is not a sha256 digest")),
            ));
        }
        let dest = self.blobs.join(hex);
        std::fs::rename(&self.path, &dest)
            .map_err(|e| Error::io("moving the blob into the store", &dest, e))?;
        self.committed = true;
        Ok(dest)
    }
}

impl Drop for TmpBlob {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A name no other process or call of this one uses at the same time.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for TmpLayer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, chain: &str) -> ImageRecord {
        ImageRecord {
            digest: digest.into(),
            source_digest: None,
            source: None,
            platform: "linux/amd64".into(),
            manifest: "{}".into(),
            config: "{}".into(),
            layers: vec![ImageLayer {
                digest: chain.into(),
                diff_id: chain.into(),
                chain_id: chain.into(),
                media_type: "x".into(),
                size: 1,
            }],
        }
    }

    fn layer(store: &Store, chain: &str) {
        let lock = store.lock_layer(chain).unwrap();
        let tmp = store.begin_layer(&lock).unwrap();
        std::fs::write(tmp.diff().join("f"), b"data").unwrap();
        let rec = LayerRecord {
            chain_id: chain.into(),
            diff_id: chain.into(),
            digest: chain.into(),
            media_type: "x".into(),
            size: 4,
            tar_bytes: 4,
            entries: 1,
            whiteouts: 0,
            opaque_dirs: 0,
            tree_digest: None,
            form_notes: serde_json::Value::Null,
        };
        tmp.commit(&rec).unwrap();
    }

    #[test]
    fn layers_appear_whole_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = format!("sha256:{}", "a".repeat(64));
        {
            let store = Store::open(dir.path(), StoreKind::Root).unwrap();
            let lock = store.lock_layer(&a).unwrap();
            let tmp = store.begin_layer(&lock).unwrap();
            std::fs::write(tmp.diff().join("half"), b"").unwrap();
            assert!(!store.has_layer(&a));
            std::mem::forget(tmp); // as if killed
            // A record write killed before its rename.
            std::fs::write(store.tmp_dir().join(".refs.json.1"), b"{").unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            2
        );
        let store = Store::open(dir.path(), StoreKind::Root).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the leftover is cleaned"
        );
        layer(&store, &a);
        assert!(store.has_layer(&a));
        assert_eq!(
            std::fs::read(store.layer_dir(&a).join("f")).unwrap(),
            b"data"
        );
    }

    #[test]
    fn images_refs_rm_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreKind::Root).unwrap();
        let (a, b) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        let (d1, d2) = (
            format!("sha256:{}", "1".repeat(64)),
            format!("sha256:{}", "2".repeat(64)),
        );
        layer(&store, &a);
        layer(&store, &b);
        store
            .put_image(&record(&d1, &a), &["one:latest".into()])
            .unwrap();
        store
            .put_image(&record(&d2, &b), &["two:latest".into(), "two:alias".into()])
            .unwrap();
        assert_eq!(store.find_image("one:latest").unwrap().digest, d1);
        assert_eq!(store.find_image(&d2).unwrap().digest, d2);
        assert!(matches!(
            store.find_image("nope"),
            Err(Error::UnknownImage { .. })
        ));

        store.remove_image("two:latest").unwrap();
        assert!(
            store.find_image("two:alias").is_ok(),
            "another name still points at it"
        );
        store.remove_image("two:alias").unwrap();
        assert!(store.find_image(&d2).is_err());

        // A writable mount's record keeps its layers alive through gc (a
        // read-only one's only while it is mounted: "/x" is not).
        let mut record = MountRecord {
            id: "m".into(),
            mountpoint: "/x".into(),
            image: "two".into(),
            digest: d2.clone(),
            chain_ids: vec![b.clone()],
            writable: true,
            kept: false,
            holder: None,
        };
        store.put_mount(&record).unwrap();
        assert!(store.gc().unwrap().removed.is_empty());
        // Read-only and not mounted: gc drops the stale record, then the layer.
        record.writable = false;
        store.put_mount(&record).unwrap();
        let report = store.gc().unwrap();
        assert!(store.mounts().unwrap().is_empty());
        assert_eq!(report.removed, vec![b.clone()]);
        assert_eq!(
            report.freed_bytes,
            4 + std::fs::metadata(store.layer_root(&a).join("layer.json"))
                .unwrap()
                .len()
        );
        assert!(store.has_layer(&a) && !store.has_layer(&b));
    }
}
