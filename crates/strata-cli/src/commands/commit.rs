//! `strata commit`: a writable mount's upper directory becomes one new
//! layer on top of its image, and a new image in the store.
//!
//! Only the upper is read (never the lowers): it is already in overlay form,
//! which `DirSource` reads back as OCI entries, so the whiteout rules live
//! in strata-layer once. One pass writes the compressed blob (kept in the
//! store: it is the only copy until pushed), hashes the diff_id and the
//! digest, and makes the layer's directory; nothing is extracted again.
//!
//! Order, for a kill at any moment: blob and layer directory are made in
//! `tmp/` and moved in whole; the image record and its name come last. A
//! killed commit leaves at most an unreferenced blob or layer, which `gc`
//! removes and `fsck` does not count as damage.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use strata_layer::{BlobOptions, Compression, DirSource};
use strata_registry::ImageRef;
use strata_stack::{ImageLayer, ImageRecord, LayerRecord, MountRecord, Store, chain_ids};

use crate::context::Context;
use crate::image_edit::{Change, History, NewLayer, layer_media_type, new_config, new_manifest};
use crate::output::Output;
use crate::pull::{human_bytes, store_name};

/// `strata commit`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata pull-and-mount --rw debian:bookworm ./rootfs\n  chroot ./rootfs apt-get install -y curl\n  strata commit ./rootfs registry.example/team/app:2 -m 'add curl' --change CMD='[\"/usr/bin/curl\"]'\n  strata umount --keep ./rootfs && strata commit ./rootfs app:3   # a kept upper\n  SOURCE_DATE_EPOCH=0 strata commit ./rootfs app:repro               # same upper, same digests"
)]
pub struct CommitArgs {
    /// A writable strata mount (live), or the mountpoint or upper directory of one `umount --keep` kept
    pub dir: PathBuf,
    /// The new image's name in the store (any image name, e.g. registry.example/team/app:2)
    pub name: ImageRef,
    /// The history entry's `created_by` (what the change was)
    #[arg(short, long)]
    pub message: Option<String>,
    /// The image's and the history entry's author
    #[arg(long)]
    pub author: Option<String>,
    /// How the new layer is compressed
    #[arg(long, value_enum, default_value_t = CommitCompression::Gzip)]
    pub compression: CommitCompression,
    /// A config edit, as `podman commit --change`: CMD=, ENTRYPOINT=, ENV=K=V, WORKDIR=, USER=, LABEL=K=V, EXPOSE= (repeatable)
    #[arg(long = "change", value_name = "KEY=VALUE")]
    pub changes: Vec<Change>,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommitCompression {
    /// gzip, over every core (the default; every runtime reads it)
    Gzip,
    /// zstd (OCI images only)
    Zstd,
    /// a plain tar
    None,
}

impl From<CommitCompression> for Compression {
    fn from(c: CommitCompression) -> Self {
        match c {
            CommitCompression::Gzip => Compression::Gzip,
            CommitCompression::Zstd => Compression::Zstd,
            CommitCompression::None => Compression::None,
        }
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Committed<'a> {
    name: &'a str,
    digest: &'a str,
    config_digest: &'a str,
    diff_id: &'a str,
    layer_digest: &'a str,
    layer_size: u64,
    tar_bytes: u64,
    entries: u64,
    whiteouts: u64,
    opaque_dirs: u64,
    layers: usize,
}

/// Runs `strata commit`.
pub fn run(args: &CommitArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    // Everything that can be refused is refused before the layer is written.
    let name = new_name(&args.name)?;
    let epoch = source_date_epoch()?;
    let compression = Compression::from(args.compression);
    let store = ctx.store()?;
    let mount = find_mount(&store, &args.dir)?;
    let upper = store.mount_dir(&mount.id).join("upper");
    let base = store.find_image(&mount.digest).with_context(|| {
        format!(
            "the image under {} ({}, {}) is no longer in the store",
            args.dir.display(),
            mount.image,
            mount.digest
        )
    })?;
    let base_chains: Vec<&str> = base.layers.iter().map(|l| l.chain_id.as_str()).collect();
    if base_chains
        != mount
            .chain_ids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    {
        bail!(
            "the mount at {} stacks other layers than its image {} records",
            args.dir.display(),
            mount.digest
        );
    }
    let layer_media_type = layer_media_type(&base.manifest, compression)?;

    // One pass: blob, digests and the layer directory.
    let tmp_layer = store.begin_new_layer()?;
    let tmp_blob = store.begin_blob()?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp_blob.path())
        .with_context(|| format!("opening {}", tmp_blob.path().display()))?;
    let options = BlobOptions {
        compression,
        clamp_mtime: epoch,
        layer: ctx.layer_options(strata_layer::Mode::Overlay),
        ..BlobOptions::default()
    };
    let mut blob = strata_layer::write_blob(
        &mut DirSource::new(&upper)
            .with_overlay_xattr(crate::context::overlay_xattr(store.kind()))
            .with_readahead(),
        std::io::BufWriter::with_capacity(1 << 20, file),
        Some(&tmp_layer.diff()),
        &options,
    )
    .with_context(|| {
        format!(
            "writing the layer of {} ({})",
            args.dir.display(),
            upper.display()
        )
    })?;
    let mut summary = blob.layer.take().unwrap_or_default();

    let mut diff_ids: Vec<String> = base.layers.iter().map(|l| l.diff_id.clone()).collect();
    diff_ids.push(blob.diff_id.clone());
    let chain = chain_ids(&diff_ids).pop().expect("one chain id per layer");
    let lowers: Vec<PathBuf> = base
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_dir(&l.chain_id))
        .collect();
    let lower_refs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    strata_layer::fix_up(
        &tmp_layer.diff(),
        &mut summary.fixups,
        &lower_refs,
        ctx.layer_options(strata_layer::Mode::Overlay).owners,
    )
    .context("fixing up the new layer against the image's layers")?;
    let tree_digest = strata_layer::tree_digest(&tmp_layer.diff(), &summary.content)
        .context("recording the new layer's tree digest")?;

    // Into the store: blob, layer, then the image and its name.
    tmp_blob.commit(&blob.digest)?;
    let lock = store.lock_layer(&chain)?;
    if store.has_layer(&chain) {
        drop(tmp_layer);
    } else {
        tmp_layer.commit(&LayerRecord {
            chain_id: chain.clone(),
            diff_id: blob.diff_id.clone(),
            digest: blob.digest.clone(),
            media_type: layer_media_type.to_owned(),
            size: blob.size,
            tar_bytes: blob.tar_bytes,
            entries: blob.entries,
            whiteouts: blob.whiteouts,
            opaque_dirs: blob.opaque_dirs,
            tree_digest: Some(tree_digest),
            form_notes: crate::layers::form_notes_value(&summary)?,
        })?;
    }
    drop(lock);

    let layer = NewLayer {
        diff_id: blob.diff_id.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        compression,
    };
    let history = History {
        created: rfc3339(epoch),
        created_by: args.message.clone(),
        author: args.author.clone(),
    };
    let config = new_config(&base.config, &layer, &history, &args.changes)?;
    let config_digest = sha256(&config);
    let manifest = new_manifest(&base.manifest, &config_digest, config.len() as u64, &layer)?;
    let digest = sha256(&manifest);
    let mut layers = base.layers.clone();
    layers.push(ImageLayer {
        digest: blob.digest.clone(),
        diff_id: blob.diff_id.clone(),
        chain_id: chain,
        media_type: layer_media_type.to_owned(),
        size: blob.size,
    });
    let record = ImageRecord {
        digest: digest.clone(),
        source_digest: None,
        source: base.source.clone(),
        platform: base.platform.clone(),
        manifest: String::from_utf8(manifest).expect("JSON is UTF-8"),
        config: String::from_utf8(config).expect("JSON is UTF-8"),
        layers,
    };
    store.put_image(&record, std::slice::from_ref(&name))?;

    ctx.progress.summary(&format!(
        "{name}: {} layers, the new one {} entries ({}, {} as a tar), {digest}",
        record.layers.len(),
        blob.entries,
        human_bytes(blob.size),
        human_bytes(blob.tar_bytes)
    ));
    if ctx.store_args.json {
        return out.json(&Committed {
            name: &name,
            digest: &digest,
            config_digest: &config_digest,
            diff_id: &blob.diff_id,
            layer_digest: &blob.digest,
            layer_size: blob.size,
            tar_bytes: blob.tar_bytes,
            entries: blob.entries,
            whiteouts: blob.whiteouts,
            opaque_dirs: blob.opaque_dirs,
            layers: record.layers.len(),
        });
    }
    out.line(&digest)
}

/// The mount `dir` names: a live writable mount at it; else the kept upper
/// it is; else the one kept mount that was at it.
fn find_mount(store: &Store, dir: &Path) -> Result<MountRecord> {
    let path =
        std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mounts = store.mounts()?;
    let upper_of = |m: &MountRecord| store.mount_dir(&m.id).join("upper");
    if let Some(live) = mounts.iter().find(|m| m.mountpoint == path && !m.kept) {
        if !live.writable {
            bail!(
                "{} is a read-only mount: only a writable one (`strata mount --rw`) has changes to commit",
                dir.display()
            );
        }
        return Ok(live.clone());
    }
    if let Some(kept) = mounts.iter().find(|m| m.writable && upper_of(m) == path) {
        return Ok(kept.clone());
    }
    let kept: Vec<&MountRecord> = mounts
        .iter()
        .filter(|m| m.kept && m.mountpoint == path)
        .collect();
    match kept.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "{} is neither a writable strata mount nor an upper `strata umount --keep` kept (`strata mounts` lists them)",
            dir.display()
        ),
        many => bail!(
            "{} kept uppers were once mounted at {}: name one by its path ({})",
            many.len(),
            dir.display(),
            many.iter()
                .map(|m| upper_of(m).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The store name NAME gives: a registry-style name with a tag. A digest
/// names content that exists, not a new image; `oci:` and the archives are
/// places to write to, which commit does not.
fn new_name(name: &ImageRef) -> Result<String> {
    match name {
        ImageRef::Registry(r) if r.digest.is_none() => Ok(store_name(name)),
        ImageRef::Registry(_) => bail!(
            "{name}: a digest names an image that exists; name the new one with a tag (e.g. registry.example/team/app:2)"
        ),
        _ => bail!(
            "{name}: commit names the new image in the store; give a registry-style name (e.g. registry.example/team/app:2), not an oci: or archive destination"
        ),
    }
}

/// The latest `SOURCE_DATE_EPOCH` an RFC 3339 time can show (9999-12-31).
const MAX_EPOCH: i64 = 253_402_300_799;

/// `SOURCE_DATE_EPOCH`, when set (reproducible builds' convention).
fn source_date_epoch() -> Result<Option<i64>> {
    let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    match value.trim().parse::<i64>() {
        Ok(secs) if (0..=MAX_EPOCH).contains(&secs) => Ok(Some(secs)),
        _ => bail!(
            "SOURCE_DATE_EPOCH={value:?} is not a number of seconds from 0 (1970) to {MAX_EPOCH} (9999-12-31)"
        ),
    }
}

fn rfc3339(epoch: Option<i64>) -> String {
    let at = match epoch {
        Some(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()),
        None => SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
