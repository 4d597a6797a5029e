//! Sending an image to a destination, for `push` and `copy`: every blob
//! first (several at once, a bar each), then the manifests in the order
//! given (children before the index), then the destination's own finish.
//! The commands differ only in where each blob's bytes come from.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use oci_spec::image::Descriptor;
use serde::Serialize;
use strata_registry::{
    BlobOutcome, Decompressor, DestinationOptions, ImageDestination, RawManifest,
};

use crate::context::Context;
use crate::pull::human_bytes;

/// Opens one blob's bytes, verified as they are read; called again when an
/// upload starts over.
pub type Opener<'a> =
    Box<dyn Fn() -> strata_registry::Result<Box<dyn Read + Send>> + Send + Sync + 'a>;

/// One blob to send.
pub struct BlobJob<'a> {
    /// The blob.
    pub descriptor: Descriptor,
    /// What it is ("layer 2"), for bars and errors.
    pub what: String,
    /// A repository of the destination's registry that may hold it.
    pub mount_from: Option<String>,
    /// Where its bytes come from.
    pub open: Opener<'a>,
}

/// What happened to one blob.
#[derive(Debug, Serialize)]
pub struct SentBlob {
    /// Its digest.
    pub digest: String,
    /// What it is.
    pub what: String,
    /// Its size.
    pub size: u64,
    /// Present, mounted or uploaded.
    pub outcome: BlobOutcome,
}

/// What a transfer did.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// The destination, as named.
    pub destination: String,
    /// The digest of the manifest or index the destination now names.
    pub digest: String,
    /// Each blob, in the order given.
    pub blobs: Vec<SentBlob>,
    /// Blobs the destination had already.
    pub present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs whose bytes were sent.
    pub uploaded: usize,
    /// Bytes read from the sources for the uploads (restarts included).
    pub uploaded_bytes: u64,
}

/// The manifest format to write, when not the source's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    /// OCI image manifests and indexes (Docker ones rewritten: new manifest
    /// digests, the same blobs), for tools that read only OCI from layouts.
    Oci,
}

/// `manifests` in the format asked for (children first, top last).
///
/// # Errors
/// A manifest that is not JSON.
pub fn in_format(
    manifests: &[RawManifest],
    format: Option<ManifestFormat>,
) -> Result<Vec<RawManifest>> {
    Ok(match format {
        None => manifests.to_vec(),
        Some(ManifestFormat::Oci) => strata_registry::to_oci(manifests)?,
    })
}

/// How strata writes destinations: `mount_from` as decided by the command,
/// and the layer crate's decoder for `docker-archive:` (the only format
/// that wants layers uncompressed).
#[must_use]
pub fn destination_options(mount_from: Option<String>) -> DestinationOptions {
    let decompress: Decompressor = Arc::new(|blob, media_type| {
        let hint = crate::pull::layer_compression(media_type);
        strata_layer::decompress(blob, hint)
            .map(|r| Box::new(r) as Box<dyn Read + Send>)
            .map_err(std::io::Error::other)
    });
    DestinationOptions {
        mount_from: mount_from.into_iter().collect(),
        decompress: Some(decompress),
    }
}

/// Sends `jobs`, then `manifests` (the last one is the top), then finishes
/// the destination. Nothing is tagged unless every blob is in.
pub fn send(
    ctx: &Context,
    destination: ImageDestination,
    jobs: Vec<BlobJob<'_>>,
    manifests: &[RawManifest],
) -> Result<Sent> {
    let top = manifests
        .last()
        .ok_or_else(|| anyhow!("nothing to send: no manifest"))?;
    let name = destination.reference().to_string();
    destination.check_top(top)?;
    let threads = ctx
        .jobs()
        .min(destination.max_parallel())
        .min(jobs.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(BlobOutcome, u64)>>> =
        Mutex::new(jobs.iter().map(|_| None).collect());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if failure.lock().expect("lock").is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { return };
                    match send_blob(ctx, &destination, job) {
                        Ok(done) => results.lock().expect("lock")[i] = Some(done),
                        Err(e) => {
                            failure.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    for manifest in manifests {
        let is_top = std::ptr::eq(manifest, top);
        destination
            .put_manifest(manifest, is_top)
            .with_context(|| format!("writing manifest {} to {name}", manifest.digest))?;
    }
    destination
        .finish(top)
        .with_context(|| format!("finishing {name}"))?;

    let results = results.into_inner().expect("lock");
    let mut sent = Sent {
        destination: name,
        digest: top.digest.to_string(),
        blobs: Vec::new(),
        present: 0,
        mounted: 0,
        uploaded: 0,
        uploaded_bytes: 0,
    };
    for (job, result) in jobs.iter().zip(results) {
        let (outcome, bytes) = result.expect("every blob was sent");
        match outcome {
            BlobOutcome::Present => sent.present += 1,
            BlobOutcome::Mounted => sent.mounted += 1,
            BlobOutcome::Uploaded => sent.uploaded += 1,
        }
        sent.uploaded_bytes += bytes;
        sent.blobs.push(SentBlob {
            digest: job.descriptor.digest().to_string(),
            what: job.what.clone(),
            size: job.descriptor.size(),
            outcome,
        });
    }
    ctx.progress.summary(&format!(
        "{}: {} blobs uploaded ({}), {} mounted, {} already there; {}",
        sent.destination,
        sent.uploaded,
        human_bytes(sent.uploaded_bytes),
        sent.mounted,
        sent.present,
        sent.digest
    ));
    Ok(sent)
}

/// One blob through the destination, its bytes counted on their way out.
fn send_blob(
    ctx: &Context,
    destination: &ImageDestination,
    job: &BlobJob<'_>,
) -> Result<(BlobOutcome, u64)> {
    let bar = ctx.progress.layer(&job.what, job.descriptor.size());
    let read = Arc::new(AtomicU64::new(0));
    let open = || -> strata_registry::Result<Box<dyn Read + Send>> {
        let inner = (job.open)()?;
        Ok(Box::new(Tally {
            inner: bar.wrap(inner),
            read: read.clone(),
        }))
    };
    let outcome = destination
        .put_blob(&job.descriptor, &job.what, job.mount_from.as_deref(), &open)
        .with_context(|| format!("sending {} ({})", job.what, job.descriptor.digest()))?;
    bar.finish();
    let verb = match outcome {
        BlobOutcome::Present => "already there",
        BlobOutcome::Mounted => "mounted",
        BlobOutcome::Uploaded => "uploaded",
    };
    ctx.progress.line(&format!(
        "{} {}: {verb} ({})",
        job.what,
        short(job.descriptor.digest().as_ref()),
        human_bytes(job.descriptor.size())
    ));
    Ok((outcome, read.load(Ordering::Relaxed)))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Counts the bytes a reader gave, across restarts.
struct Tally<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
