//! The pull pipeline: every missing layer of an image downloads, verifies
//! and extracts at once (bounded by `--jobs`), each in one streaming pass;
//! then, bottom up, each gets its fix-up and is renamed into the store.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};
use strata_layer::{Compression, Options as LayerOptions, Summary};
use strata_registry::{ImageRef, ImageSource, Layer, ResolvedImage};
use strata_stack::{ImageLayer, ImageRecord, LayerLock, LayerRecord, Store, TmpLayer, chain_ids};

use crate::context::Context;

/// What a pull did.
pub struct Pulled {
    /// The stored image.
    pub record: ImageRecord,
    /// The name it is stored under.
    pub name: String,
    /// Layers extracted by this pull.
    pub extracted: usize,
    /// Compressed bytes fetched.
    pub fetched_bytes: u64,
    /// The mirror that served each fetched layer (by blob digest); layers
    /// not here came from the origin or were in the store.
    pub served_by: std::collections::BTreeMap<String, String>,
}

/// The layer crate's compression for a layer media type (the two crates do
/// not know each other; this is where their vocabularies meet).
#[must_use]
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    strata_registry::layer_compression(media_type).map(|c| match c {
        strata_registry::Compression::None => Compression::None,
        strata_registry::Compression::Gzip => Compression::Gzip,
        strata_registry::Compression::Zstd => Compression::Zstd,
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// The name an image is stored under: its normalised reference.
#[must_use]
pub fn store_name(image: &ImageRef) -> String {
    image.to_string()
}

struct Extracted {
    tmp: TmpLayer,
    summary: Summary,
    /// The mirror that served the blob, if one did.
    served_by: Option<String>,
}

/// Pulls `image` into the store unless every layer is there already.
pub fn pull(ctx: &Context, store: &Store, image: &ImageRef) -> Result<Pulled> {
    let started = Instant::now();
    let name = store_name(image);
    let source = ctx.open_source(image)?;
    let platform = ctx.platform()?;
    // Warm: the registry's HEAD names what we already hold; fetch nothing.
    if let Some(top) = source.top_digest()?
        && let Ok(record) = store.find_image(&name)
    {
        let same = record.source_digest.as_deref() == Some(top.as_ref())
            && record.platform == platform.to_string();
        let blobs_kept = !ctx.store_args.keep_blobs
            || record
                .layers
                .iter()
                .all(|l| store.blob_path(&l.digest).is_file());
        if same && blobs_kept && record.layers.iter().all(|l| store.has_layer(&l.chain_id)) {
            ctx.progress.summary(&format!(
                "{name}: up to date in the store, {}",
                record.digest
            ));
            return Ok(Pulled {
                record,
                name,
                extracted: 0,
                fetched_bytes: 0,
                served_by: std::collections::BTreeMap::new(),
            });
        }
    }
    let resolved = source
        .resolve(&platform)
        .with_context(|| format!("resolving {image} for {platform}"))?;
    let layers = resolved.layers()?;
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let chains = chain_ids(&diff_ids);

    // Take the locks of missing layers bottom up (one order for every
    // process: no deadlock), then look again: another process may have
    // made them while we waited.
    let mut locks: Vec<(usize, LayerLock)> = Vec::new();
    for (i, chain) in chains.iter().enumerate() {
        if !store.has_layer(chain) {
            let lock = store.lock_layer(chain)?;
            if !store.has_layer(chain) {
                locks.push((i, lock));
            }
        }
    }
    let missing: Vec<usize> = locks.iter().map(|(i, _)| *i).collect();
    let fetched_bytes = missing.iter().map(|i| layers[*i].descriptor.size()).sum();
    if !missing.is_empty() {
        ctx.progress.line(&format!(
            "pulling {image}: {} of {} layers to fetch ({})",
            missing.len(),
            layers.len(),
            human_bytes(fetched_bytes)
        ));
    }

    let results = extract_all(ctx, store, &source, &layers, &locks)?;

    // Bottom up: fix up against the layers below, then commit.
    let mut results = results.into_iter();
    let mut served = std::collections::BTreeMap::new();
    for (i, chain) in chains.iter().enumerate() {
        if !missing.contains(&i) {
            continue;
        }
        let Extracted {
            tmp,
            mut summary,
            served_by,
        } = results.next().expect("one result per missing layer");
        let committing = Instant::now();
        if let Some(host) = served_by {
            served.insert(layers[i].descriptor.digest().to_string(), host);
        }
        let lowers: Vec<std::path::PathBuf> = chains[..i]
            .iter()
            .rev()
            .map(|c| store.layer_dir(c))
            .collect();
        let lower_refs: Vec<&std::path::Path> =
            lowers.iter().map(std::path::PathBuf::as_path).collect();
        strata_layer::fix_up(
            &tmp.diff(),
            &mut summary.fixups,
            &lower_refs,
            ctx.layer_options(strata_layer::Mode::Overlay).owners,
        )
        .with_context(|| {
            format!(
                "fixing up layer {i} ({}) of {image}",
                layers[i].descriptor.digest()
            )
        })?;
        let tree_digest = strata_layer::tree_digest(&tmp.diff(), &summary.content)
            .with_context(|| format!("recording the tree digest of layer {i} of {image}"))?;
        let descriptor = &layers[i].descriptor;
        tmp.commit(&LayerRecord {
            chain_id: chain.clone(),
            diff_id: diff_ids[i].clone(),
            digest: descriptor.digest().to_string(),
            media_type: descriptor.media_type().to_string(),
            size: descriptor.size(),
            tar_bytes: summary.bytes,
            entries: summary.entries,
            whiteouts: summary.whiteouts,
            opaque_dirs: summary.opaque_dirs,
            tree_digest: Some(tree_digest),
            form_notes: crate::layers::form_notes_value(&summary)?,
        })
        .with_context(|| format!("storing layer {i} of {image}"))?;
        tracing::debug!(
            "layer {i}: fixed up, digested and committed in {:.3} s",
            committing.elapsed().as_secs_f64()
        );
    }
    drop(locks);
    if ctx.store_args.keep_blobs {
        keep_missing_blobs(ctx, store, &source, &layers)?;
    }

    let record = image_record(image, &resolved, &layers, &chains, &platform.to_string());
    store.put_image(&record, std::slice::from_ref(&name))?;
    let elapsed = started.elapsed().as_secs_f64();
    ctx.progress.summary(&format!(
        "{name}: {} layers ({} extracted, {} already in the store), {} fetched in {elapsed:.1} s, {}",
        layers.len(),
        missing.len(),
        layers.len() - missing.len(),
        human_bytes(fetched_bytes),
        record.digest
    ));
    Ok(Pulled {
        record,
        name,
        extracted: missing.len(),
        fetched_bytes,
        served_by: served,
    })
}

/// Runs the missing layers through download → verify → extract, `--jobs` at a
/// time, the biggest first. Returns the results in layer order; on failure,
/// the first error by layer.
fn extract_all(
    ctx: &Context,
    store: &Store,
    source: &ImageSource,
    layers: &[Layer],
    locks: &[(usize, LayerLock)],
) -> Result<Vec<Extracted>> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Extracted>>>> =
        locks.iter().map(|_| Mutex::new(None)).collect();
    let options = LayerOptions {
        content_hashes: true,
        ..ctx.layer_options(strata_layer::Mode::Overlay)
    };
    let workers = ctx.jobs().min(locks.len());
    // The biggest layers first: a pull lasts at least as long as its
    // biggest layer, which should not wait for a worker behind small ones.
    let mut order: Vec<usize> = (0..locks.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(layers[locks[k].0].descriptor.size()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&k) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let (i, lock) = &locks[k];
                    let result = extract_one(ctx, store, source, &layers[*i], *i, lock, &options);
                    *slots[k].lock().expect("slot lock") = Some(result);
                }
            });
        }
    });
    let mut out = Vec::new();
    for (k, slot) in slots.into_iter().enumerate() {
        match slot.into_inner().expect("slot lock") {
            Some(Ok(e)) => out.push(e),
            Some(Err(e)) => return Err(e),
            None => return Err(anyhow!("layer {} was not extracted", locks[k].0)),
        }
    }
    Ok(out)
}

fn extract_one(
    ctx: &Context,
    store: &Store,
    source: &ImageSource,
    layer: &Layer,
    index: usize,
    lock: &LayerLock,
    options: &LayerOptions,
) -> Result<Extracted> {
    let descriptor = &layer.descriptor;
    let what = format!("layer {index} ({})", descriptor.digest());
    let started = Instant::now();
    let tmp = store.begin_layer(lock)?;
    let bar = ctx
        .progress
        .layer(short(descriptor.digest().as_ref()), descriptor.size());
    let (stream, served_by) = source
        .blob_served(descriptor, &format!("layer {index}"))
        .with_context(|| format!("fetching {what}"))?;
    // With --keep-blobs the compressed bytes are also written to the store
    // as they pass; the blob is kept only once the stream verified.
    let kept = ctx
        .store_args
        .keep_blobs
        .then(|| store.begin_blob())
        .transpose()?;
    let mut tee = Tee::new(bar.wrap(stream), kept.as_ref().map(|b| b.path()))?;
    let extracted = strata_layer::extract(
        &mut tee,
        layer_compression(descriptor.media_type().as_ref()),
        Some(layer.diff_id.as_ref()),
        &tmp.diff(),
        options,
    );
    let summary = match extracted {
        Ok(summary) => summary,
        Err(e) => {
            // A tar that breaks off may be the first sign of bytes that do
            // not match their digest: read the rest, and if they do not,
            // that is the story (exit 4, the host named), not the tar.
            if let Err(drained) = std::io::copy(&mut tee, &mut std::io::sink())
                && strata_registry::integrity_error(&drained).is_some()
            {
                return Err(anyhow::Error::new(drained).context(format!("fetching {what}")));
            }
            return Err(anyhow::Error::new(e).context(format!("extracting {what}")));
        }
    };
    tee.finish()
        .with_context(|| format!("keeping the blob of {what}"))?;
    if let Some(blob) = kept {
        blob.commit(descriptor.digest().as_ref())?;
    }
    bar.finish();
    // Where a pull's time goes, for `STRATA_LOG=debug` (BENCHMARKS.md).
    tracing::debug!(
        "{what}: fetched and extracted in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let from = served_by
        .as_ref()
        .map(|h| format!(" (from mirror {h})"))
        .unwrap_or_default();
    ctx.progress.line(&format!(
        "layer {index} {} extracted: {} entries, {}{from}",
        short(descriptor.digest().as_ref()),
        summary.entries,
        human_bytes(summary.bytes)
    ));
    Ok(Extracted {
        tmp,
        summary,
        served_by,
    })
}

/// The reference to fetch an image's blobs from again later: as pulled,
/// with a local path made absolute (a later command runs elsewhere).
fn refetchable(image: &ImageRef) -> String {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    match image {
        ImageRef::Registry(_) => image.to_string(),
        ImageRef::OciDir { path, tag } => ImageRef::OciDir {
            path: absolute(path),
            tag: tag.clone(),
        }
        .to_string(),
        ImageRef::OciArchive { path, tag } => ImageRef::OciArchive {
            path: absolute(path),
            tag: tag.clone(),
        }
        .to_string(),
        ImageRef::DockerArchive { path, image: which } => ImageRef::DockerArchive {
            path: absolute(path),
            image: which.clone(),
        }
        .to_string(),
    }
}

/// A reader that copies what it gives to a file, when there is one.
struct Tee<R> {
    inner: R,
    copy: Option<std::io::BufWriter<std::fs::File>>,
}

impl<R: Read> Tee<R> {
    fn new(inner: R, copy_to: Option<&std::path::Path>) -> Result<Self> {
        let copy = copy_to
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))
            })
            .transpose()?
            .map(|f| std::io::BufWriter::with_capacity(1 << 20, f));
        Ok(Self { inner, copy })
    }

    fn finish(self) -> Result<()> {
        if let Some(copy) = self.copy {
            copy.into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
        }
        Ok(())
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(copy) = &mut self.copy {
            copy.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// With `--keep-blobs`, the blobs of layers that were in the store already
/// (pulled before without it) are fetched now, verified, and kept.
fn keep_missing_blobs(
    ctx: &Context,
    store: &Store,
    source: &ImageSource,
    layers: &[Layer],
) -> Result<()> {
    for (i, layer) in layers.iter().enumerate() {
        let descriptor = &layer.descriptor;
        if store.blob_path(descriptor.digest().as_ref()).is_file() {
            continue;
        }
        let what = format!("layer {i} ({})", descriptor.digest());
        let blob = store.begin_blob()?;
        let mut stream = source
            .blob(descriptor, &format!("layer {i}"))
            .with_context(|| format!("fetching {what}"))?;
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new().write(true).open(blob.path())?,
        );
        std::io::copy(&mut stream, &mut file)
            .with_context(|| format!("keeping the blob of {what}"))?;
        file.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        blob.commit(descriptor.digest().as_ref())?;
        ctx.progress.line(&format!(
            "layer {i} {}: blob kept",
            short(descriptor.digest().as_ref())
        ));
    }
    Ok(())
}

fn image_record(
    source: &ImageRef,
    resolved: &ResolvedImage,
    layers: &[Layer],
    chains: &[String],
    platform: &str,
) -> ImageRecord {
    ImageRecord {
        digest: resolved.manifest.digest.to_string(),
        source_digest: Some(
            resolved
                .index
                .as_ref()
                .unwrap_or(&resolved.manifest)
                .digest
                .to_string(),
        ),
        source: Some(refetchable(source)),
        platform: platform.to_owned(),
        manifest: String::from_utf8_lossy(&resolved.manifest.bytes).into_owned(),
        config: String::from_utf8_lossy(&resolved.config_bytes).into_owned(),
        layers: layers
            .iter()
            .zip(chains)
            .map(|(l, chain)| ImageLayer {
                digest: l.descriptor.digest().to_string(),
                diff_id: l.diff_id.to_string(),
                chain_id: chain.clone(),
                media_type: l.descriptor.media_type().to_string(),
                size: l.descriptor.size(),
            })
            .collect(),
    }
}

/// `1.2 MB`-style sizes (decimal units, as registries and docker print them).
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    #[expect(clippy::cast_precision_loss, reason = "a display value")]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
