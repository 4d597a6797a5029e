//! Checking the store: every layer against the tree digest recorded when it
//! was made, every record against what it references.
//!
//! The store does not know how a tree digest is computed (that is
//! strata-layer's, which this crate does not depend on): the caller passes
//! the function. With `repair`, what is damaged is removed, so that the next
//! pull fetches it again: a layer whose tree differs, a record that does not
//! parse, a name whose image is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::store::{hex_of, read_json, valid_hex};
use crate::{ImageRecord, LayerRecord, MountRecord, Result, Store, chain_ids};

/// Computes a layer directory's tree digest.
pub type TreeDigestFn = dyn Fn(&Path) -> std::io::Result<String> + Sync;

/// One thing wrong in the store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
    /// Whether `repair` removed it.
    pub removed: bool,
}

/// What [`Store::fsck`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Layers whose tree was read and compared.
    pub layers: usize,
    /// Image records checked.
    pub images: usize,
    /// Names checked.
    pub names: usize,
    /// Mount records checked.
    pub mounts: usize,
    /// Kept blobs (of committed layers) read and hashed.
    pub blobs: usize,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

impl FsckReport {
    /// Whether nothing is wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, path: impl Into<PathBuf>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
            removed: false,
        });
    }
}

/// Image records by what becomes of them: `kept` (sound, or waiting for a
/// pull to restore their layers) and `unsound` (removed by repair, with the
/// names that point at them).
#[derive(Default)]
struct Images {
    kept: BTreeSet<String>,
    unsound: BTreeSet<String>,
}

/// What to do with a damaged thing, decided while checking.
enum Fix {
    Layer(String),
    File(PathBuf),
    Name(String),
}

impl Store {
    /// Checks every layer's tree against its recorded digest (`jobs` at a
    /// time) and every image, name and mount record against what it
    /// references. With `repair`, waits until it has the store alone and
    /// removes what is damaged; the report marks what it removed.
    ///
    /// # Errors
    /// Only when the store's directories cannot be listed or locked; what is
    /// wrong inside them is reported as a [`Problem`].
    pub fn fsck(
        &self,
        tree_digest: &TreeDigestFn,
        jobs: usize,
        repair: bool,
    ) -> Result<FsckReport> {
        if repair {
            self.exclusively(|| self.fsck_inner(tree_digest, jobs, true))
        } else {
            self.fsck_inner(tree_digest, jobs, false)
        }
    }

    fn fsck_inner(
        &self,
        tree_digest: &TreeDigestFn,
        jobs: usize,
        repair: bool,
    ) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut fixes: Vec<(usize, Fix)> = Vec::new();
        let layers = self.check_layers(tree_digest, jobs, &mut report, &mut fixes)?;
        let images = self.check_images(&layers, &mut report, &mut fixes)?;
        self.check_refs(&images, &mut report, &mut fixes)?;
        self.check_mounts(&layers, &mut report)?;
        self.check_blobs(&mut report, &mut fixes)?;
        if repair {
            for (i, fix) in fixes {
                let removed = match fix {
                    Fix::Layer(hex) => self.remove_layer_dir(&hex).is_ok(),
                    Fix::File(path) => std::fs::remove_file(&path).is_ok(),
                    Fix::Name(name) => self
                        .update_refs(|refs| {
                            refs.remove(&name);
                        })
                        .is_ok(),
                };
                report.problems[i].removed = removed;
            }
        }
        Ok(report)
    }

    /// Returns the hex names of the layers that are whole and intact.
    fn check_layers(
        &self,
        tree_digest: &TreeDigestFn,
        jobs: usize,
        report: &mut FsckReport,
        fixes: &mut Vec<(usize, Fix)>,
    ) -> Result<BTreeSet<String>> {
        let dir = self.root().join("layers");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| crate::Error::io("listing", &dir, e))? {
            let entry = entry.map_err(|e| crate::Error::io("listing", &dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        // Each layer's verdict: None when intact, else what is wrong.
        let next = AtomicUsize::new(0);
        let verdicts: Vec<Mutex<Option<String>>> = names.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..jobs.clamp(1, names.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        let Some(name) = names.get(k) else { break };
                        let verdict = self.check_layer(name, tree_digest).err();
                        *verdicts[k].lock().expect("verdict lock") = verdict;
                    }
                });
            }
        });
        let mut intact = BTreeSet::new();
        for (name, verdict) in names.into_iter().zip(verdicts) {
            report.layers += 1;
            match verdict.into_inner().expect("verdict lock") {
                None => {
                    intact.insert(name);
                }
                Some(message) => {
                    fixes.push((report.problems.len(), Fix::Layer(name.clone())));
                    report.problem(dir.join(&name), message);
                }
            }
        }
        Ok(intact)
    }

    fn check_layer(&self, name: &str, tree_digest: &TreeDigestFn) -> Result<(), String> {
        if !valid_hex(name) {
            return Err("not a layer (the name is not a sha256 chain id)".into());
        }
        let root = self.layer_root(name);
        let record: LayerRecord = match read_json(&root.join("layer.json")) {
            Ok(Some(r)) => r,
            Ok(None) => return Err("layer.json is missing".into()),
            Err(e) => return Err(format!("layer.json does not parse: {e}")),
        };
        if hex_of(&record.chain_id) != name {
            return Err(format!(
                "layer.json is for chain id {}, not this directory's",
                record.chain_id
            ));
        }
        let Some(recorded) = record.tree_digest else {
            return Err("layer.json records no tree digest, so the layer cannot be verified (made by an older strata: remove and pull again)".into());
        };
        match tree_digest(&root.join("diff")) {
            Ok(found) if found == recorded => Ok(()),
            Ok(found) => Err(format!(
                "the layer's files differ from what was extracted (tree digest {found}, recorded {recorded})"
            )),
            Err(e) => Err(format!("cannot read the layer's files: {e}")),
        }
    }

    /// Every kept blob must hash to its name: it is the only copy of a
    /// committed layer's tar until it is pushed. A damaged one is removed by
    /// repair (a push then fails naming it, instead of sending bad bytes).
    fn check_blobs(&self, report: &mut FsckReport, fixes: &mut Vec<(usize, Fix)>) -> Result<()> {
        let dir = self.root().join("blobs/sha256");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            report.blobs += 1;
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let actual = std::fs::File::open(&path).and_then(|mut f| {
                let mut hash = Sha256::new();
                std::io::copy(&mut f, &mut hash)?;
                Ok(hex::encode(hash.finalize()))
            });
            let message = match actual {
                Ok(hex) if valid_hex(&name) && hex == name => continue,
                Ok(hex) if valid_hex(&name) => format!("the blob's bytes hash to sha256:{hex}"),
                Ok(_) => "not a blob (its name is not a sha256 digest)".to_owned(),
                Err(e) => format!("cannot be read: {e}"),
            };
            fixes.push((report.problems.len(), Fix::File(path.clone())));
            report.problem(path, message);
        }
        Ok(())
    }

    /// Sorts the image records by what becomes of them.
    fn check_images(
        &self,
        layers: &BTreeSet<String>,
        report: &mut FsckReport,
        fixes: &mut Vec<(usize, Fix)>,
    ) -> Result<Images> {
        let dir = self.root().join("images");
        let mut images = Images::default();
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| crate::Error::io("listing", &dir, e))? {
            paths.push(
                entry
                    .map_err(|e| crate::Error::io("listing", &dir, e))?
                    .path(),
            );
        }
        paths.sort();
        for path in paths {
            report.images += 1;
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if path.extension().is_none_or(|e| e != "json") || !valid_hex(&stem) {
                fixes.push((report.problems.len(), Fix::File(path.clone())));
                report.problem(path, "not an image record");
                continue;
            }
            let record: ImageRecord = match read_json(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue, // removed meanwhile
                Err(e) => {
                    fixes.push((report.problems.len(), Fix::File(path.clone())));
                    report.problem(path, format!("does not parse: {e}"));
                    continue;
                }
            };
            match image_problem(&record, &stem, layers) {
                Ok(()) => {}
                // A record whose layers are missing is kept: the next pull
                // restores them. One that lies about itself goes.
                Err(ImageProblem::MissingLayers(message)) => {
                    report.problem(path, message);
                    images.kept.insert(record.digest);
                    continue;
                }
                Err(ImageProblem::Unsound(message)) => {
                    images.unsound.insert(format!("sha256:{stem}"));
                    fixes.push((report.problems.len(), Fix::File(path.clone())));
                    report.problem(path, message);
                    continue;
                }
            }
            images.kept.insert(record.digest);
        }
        Ok(images)
    }

    fn check_refs(
        &self,
        images: &Images,
        report: &mut FsckReport,
        fixes: &mut Vec<(usize, Fix)>,
    ) -> Result<()> {
        let path = self.root().join("refs.json");
        let refs = match self.refs() {
            Ok(refs) => refs,
            Err(e) => {
                fixes.push((report.problems.len(), Fix::File(path.clone())));
                report.problem(path, format!("does not parse: {e}"));
                return Ok(());
            }
        };
        for (name, digest) in refs {
            report.names += 1;
            let record = self
                .root()
                .join("images")
                .join(format!("{}.json", hex_of(&digest)));
            // A record written after the listing (a pull running meanwhile)
            // is a file that was not checked: not a problem.
            let dangling = images.unsound.contains(&digest)
                || (!images.kept.contains(&digest) && !record.is_file());
            if dangling {
                fixes.push((report.problems.len(), Fix::Name(name.clone())));
                report.problem(
                    &path,
                    format!("the name {name} points at {digest}, which has no sound image record"),
                );
            }
        }
        Ok(())
    }

    fn check_mounts(&self, layers: &BTreeSet<String>, report: &mut FsckReport) -> Result<()> {
        let dir = self.root().join("mounts");
        for entry in std::fs::read_dir(&dir).map_err(|e| crate::Error::io("listing", &dir, e))? {
            let path = entry
                .map_err(|e| crate::Error::io("listing", &dir, e))?
                .path()
                .join("mount.json");
            // A mount directory without a record is an upper kept by
            // `umount --keep`: nothing to check.
            let record: MountRecord = match read_json(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    report.problem(path, format!("does not parse: {e}"));
                    continue;
                }
            };
            report.mounts += 1;
            for chain in &record.chain_ids {
                if !layers.contains(hex_of(chain)) {
                    report.problem(
                        &path,
                        format!(
                            "the mount at {} stacks layer {chain}, which is missing or damaged",
                            record.mountpoint.display()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

enum ImageProblem {
    Unsound(String),
    MissingLayers(String),
}

/// What is wrong with an image record, if anything.
fn image_problem(
    record: &ImageRecord,
    file_hex: &str,
    layers: &BTreeSet<String>,
) -> Result<(), ImageProblem> {
    if hex_of(&record.digest) != file_hex {
        return Err(ImageProblem::Unsound(format!(
            "the record is for {}, not for the digest it is filed under",
            record.digest
        )));
    }
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&record.manifest)));
    if manifest_digest != record.digest {
        return Err(ImageProblem::Unsound(format!(
            "the record's manifest has digest {manifest_digest}, not {}",
            record.digest
        )));
    }
    let diff_ids: Vec<String> = record.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    for (i, (layer, chain)) in record.layers.iter().zip(&chains).enumerate() {
        if layer.chain_id != *chain {
            return Err(ImageProblem::Unsound(format!(
                "the record gives layer {i} chain id {}, but its diff_ids make {chain}",
                layer.chain_id
            )));
        }
    }
    let missing: Vec<String> = record
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| !layers.contains(hex_of(&l.chain_id)))
        .map(|(i, l)| format!("{i} ({})", l.chain_id))
        .collect();
    if !missing.is_empty() {
        return Err(ImageProblem::MissingLayers(format!(
            "layers missing or damaged: {} (pull the image again to restore them)",
            missing.join(", ")
        )));
    }
    Ok(())
}
