//! `strata push NAME [DEST]`: an image in the store out to a registry or a
//! layout, with the digests it has in the store.
//!
//! The store keeps extracted layers, not their compressed blobs, so each
//! layer's bytes come from one of two places: the store's `blobs/` (every
//! layer `strata commit` made, and any pulled with `--keep-blobs`), or the
//! image's source, streamed and verified on the way. A layer with neither
//! is an error before anything is sent: strata never re-compresses a base
//! layer (that would change its digest and the image's).

use std::io::Read;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use oci_spec::image::{Descriptor, ImageManifest};
use strata_registry::{ImageDestination, ImageRef, ImageSource, RawManifest, VerifiedReader};
use strata_stack::ImageRecord;

use crate::context::{Context, find_stored};
use crate::output::Output;
use crate::transfer::{BlobJob, ManifestFormat, Opener, destination_options, in_format, send};

/// Push an image from the store to a registry or an OCI layout
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata commit ./rootfs registry.example/team/app:2\n  strata push registry.example/team/app:2\n  strata push app:2 oci-archive:app.tar:2\n\nLayers strata committed are sent from the store; pulled layers are streamed from the image's source (or the store, when pulled with --keep-blobs). Blobs the destination has are skipped, blobs another repository of the same registry has are mounted."
)]
pub struct PushArgs {
    /// The image in the store, as named by pull or commit
    pub image: ImageRef,
    /// Where to: NAME[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] [default: IMAGE as a registry reference]
    pub destination: Option<ImageRef>,
    /// Write the manifest as this format (oci: a Docker one rewritten, so its digest changes; the blobs stay)
    #[arg(long, value_enum)]
    pub format: Option<ManifestFormat>,
}

/// Where one layer's bytes come from.
enum LayerBytes {
    /// `STORE/blobs/`.
    Store(std::path::PathBuf),
    /// The image's source.
    Source,
}

/// Runs the command.
pub fn run(args: &PushArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    let store = ctx.store()?;
    let record = find_stored(
        &store,
        &args.image,
        "`strata pull` or `strata commit` puts it there",
    )?;
    let destination_ref = match (&args.destination, &args.image) {
        (Some(d), _) => d.clone(),
        (None, image @ ImageRef::Registry(_)) => image.clone(),
        (None, image) => bail!(
            "{image} is not a registry reference, so it is no default destination; name one: strata push {image} DEST"
        ),
    };
    let manifest_raw = stored_manifest(&record);
    let manifest: ImageManifest = serde_json::from_str(&record.manifest)
        .with_context(|| format!("parsing the stored manifest of {}", args.image))?;
    let source_ref: Option<ImageRef> = record
        .source
        .as_deref()
        .map(str::parse)
        .transpose()
        .with_context(|| format!("the stored source of {}", args.image))?;

    // Settle every layer's bytes before sending anything.
    let mut plans = Vec::new();
    for (i, descriptor) in manifest.layers().iter().enumerate() {
        let kept = store.blob_path(descriptor.digest().as_ref());
        plans.push(if kept.is_file() {
            LayerBytes::Store(kept)
        } else if source_ref.is_some() {
            LayerBytes::Source
        } else {
            bail!(
                "layer {} ({}) of {}: the store keeps no blob of it and the image records no source to fetch it from; \
                 pull the image again with `strata pull --keep-blobs`, or copy it from where it came from with `strata copy SRC DEST`",
                i + 1,
                descriptor.digest(),
                args.image
            );
        });
    }

    let mount_from = source_ref
        .as_ref()
        .and_then(|s| ImageDestination::mount_source(&destination_ref, s));
    let destination = ImageDestination::open(
        &destination_ref,
        &ctx.registry.options()?,
        &destination_options(mount_from.clone()),
    )
    .with_context(|| format!("opening {destination_ref} for writing"))?;

    // The source is opened only if a blob must come from it.
    let source: OnceLock<std::result::Result<ImageSource, String>> = OnceLock::new();
    let open_source = || -> strata_registry::Result<&ImageSource> {
        let source_ref = source_ref
            .as_ref()
            .expect("checked: a layer from the source has one");
        source
            .get_or_init(|| {
                ImageSource::open(
                    source_ref,
                    &ctx.registry.options().map_err(|e| e.to_string())?,
                )
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
            })
            .as_ref()
            .map_err(|e| strata_registry::Error::NotFound {
                reference: source_ref.to_string(),
                detail: format!(
                    " (the store keeps no blob of this layer, so push streams it from the image's source): {e}; \
                     make the source reachable again, or pull the image with `strata pull --keep-blobs` while it is"
                ),
            })
    };

    let config_bytes = record.config.clone().into_bytes();
    let config_descriptor = manifest.config().clone();
    let mut jobs = vec![BlobJob {
        descriptor: config_descriptor.clone(),
        what: "config".into(),
        mount_from: None,
        open: verified_bytes(config_bytes, config_descriptor),
    }];
    for (i, (descriptor, bytes)) in manifest.layers().iter().zip(plans).enumerate() {
        let what = format!("layer {}", i + 1);
        let open: Opener<'_> = match bytes {
            LayerBytes::Store(path) => stored_blob(path, descriptor.clone(), what.clone()),
            LayerBytes::Source => {
                let descriptor = descriptor.clone();
                let what = what.clone();
                let open_source = &open_source;
                Box::new(move || {
                    open_source()?
                        .blob(&descriptor, &what)
                        .map(|r| Box::new(r) as Box<dyn Read + Send>)
                })
            }
        };
        jobs.push(BlobJob {
            descriptor: descriptor.clone(),
            what,
            mount_from: mount_from.clone(),
            open,
        });
    }
    let manifests = in_format(std::slice::from_ref(&manifest_raw), args.format)?;
    let sent = send(ctx, destination, jobs, &manifests)
        .with_context(|| format!("pushing {} to {destination_ref}", args.image))?;
    if ctx.store_args.json {
        out.json(&sent)
    } else {
        out.line(&sent.digest)
    }
}

/// The stored manifest as the bytes it was stored as (its digest is the
/// image's).
fn stored_manifest(record: &ImageRecord) -> RawManifest {
    let media_type = serde_json::from_str::<serde_json::Value>(&record.manifest)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| strata_registry::OCI_MANIFEST.to_owned());
    RawManifest::new(Some(&media_type), record.manifest.clone().into_bytes())
}

fn verified_bytes(bytes: Vec<u8>, descriptor: Descriptor) -> Opener<'static> {
    Box::new(move || {
        Ok(Box::new(VerifiedReader::new(
            std::io::Cursor::new(bytes.clone()),
            "config in the store",
            descriptor.digest().clone(),
            descriptor.size(),
        )) as Box<dyn Read + Send>)
    })
}

fn stored_blob(path: std::path::PathBuf, descriptor: Descriptor, what: String) -> Opener<'static> {
    Box::new(move || {
        let file = std::fs::File::open(&path).map_err(|source| strata_registry::Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(VerifiedReader::new(
            std::io::BufReader::with_capacity(1 << 20, file),
            format!("{what} in the store ({})", path.display()),
            descriptor.digest().clone(),
            descriptor.size(),
        )) as Box<dyn Read + Send>)
    })
}
