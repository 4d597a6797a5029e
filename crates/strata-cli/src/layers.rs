//! Loading an image's layers as indexes (what each holds) for the
//! inspect-family commands: from the store when the image is there,
//! otherwise by streaming the layers (nothing written, no root needed).

use anyhow::{Context as _, Result};
use oci_spec::image::ImageConfiguration;
use strata_layer::{DirSource, LayerIndex, index_source, index_stream};
use strata_registry::ImageRef;

use crate::context::Context;
use crate::pull::{layer_compression, store_name};

/// A stored layer directory as an entry source, told which of its char 0:0
/// devices are real devices (the layer record says) rather than whiteouts.
pub fn stored_layer_source(store: &strata_stack::Store, chain_id: &str) -> Result<DirSource> {
    let notes = match store.layer_record(chain_id)? {
        Some(record) if !record.form_notes.is_null() => {
            serde_json::from_value(record.form_notes)
                .with_context(|| format!("reading the form notes of layer {chain_id}"))?
        }
        _ => strata_layer::FormNotes::default(),
    };
    Ok(DirSource::new(&store.layer_dir(chain_id))
        .with_notes(notes)
        .with_overlay_xattr(crate::context::overlay_xattr(store.kind())))
}

/// What a layer record keeps of an extraction's [`strata_layer::FormNotes`]
/// (null when there is nothing), read back by [`stored_layer_source`].
///
/// # Errors
/// Never in practice (the notes serialise).
pub fn form_notes_value(summary: &strata_layer::Summary) -> Result<serde_json::Value> {
    let notes = summary.notes();
    if notes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::to_value(&notes)?)
}

/// One layer's descriptor facts.
pub struct LayerInfo {
    /// Compressed blob digest.
    pub digest: String,
    /// Uncompressed tar digest.
    pub diff_id: String,
    /// Compressed size.
    pub size: u64,
}

/// An image with every layer indexed.
pub struct Loaded {
    /// The name as stored / typed.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// The platform resolved.
    pub platform: String,
    /// The config.
    pub config: ImageConfiguration,
    /// Layer descriptors, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Layer contents, bottom first.
    pub indexes: Vec<LayerIndex>,
}

/// Loads and indexes every layer of `image`.
pub fn load(ctx: &Context, image: &ImageRef) -> Result<Loaded> {
    let name = store_name(image);
    if let Some(store) = ctx.existing_store()?
        && let Ok(record) = store.find_image(&name)
        && record.layers.iter().all(|l| store.has_layer(&l.chain_id))
    {
        let mut indexes = Vec::new();
        for (i, l) in record.layers.iter().enumerate() {
            let mut index = index_source(&mut stored_layer_source(&store, &l.chain_id)?)
                .with_context(|| {
                    format!("reading layer {i} ({}) of {name} from the store", l.digest)
                })?;
            if let Some(rec) = store.layer_record(&l.chain_id)? {
                index.tar_entries = rec.entries;
                index.tar_bytes = rec.tar_bytes;
            }
            index.diff_id = Some(l.diff_id.clone());
            indexes.push(index);
        }
        let config = serde_json::from_str(&record.config).context("parsing the stored config")?;
        return Ok(Loaded {
            name,
            digest: record.digest,
            platform: record.platform,
            config,
            layers: record
                .layers
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                })
                .collect(),
            indexes,
        });
    }
    let (source, resolved, platform) = ctx.resolve(image)?;
    let layers = resolved.layers()?;
    let mut indexes = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let d = &layer.descriptor;
        let bar = ctx.progress.layer(&format!("layer {i}"), d.size());
        let stream = source
            .blob(d, &format!("layer {i}"))
            .with_context(|| format!("fetching layer {i} ({})", d.digest()))?;
        let index = index_stream(
            bar.wrap(stream),
            layer_compression(d.media_type().as_ref()),
            Some(layer.diff_id.as_ref()),
            strata_layer::DEFAULT_MAX_BYTES,
        )
        .with_context(|| format!("reading layer {i} ({}) of {name}", d.digest()))?;
        bar.finish();
        indexes.push(index);
    }
    Ok(Loaded {
        name,
        digest: resolved.manifest.digest.to_string(),
        platform: platform.to_string(),
        config: resolved.config,
        layers: layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.descriptor.digest().to_string(),
                diff_id: l.diff_id.to_string(),
                size: l.descriptor.size(),
            })
            .collect(),
        indexes,
    })
}

/// The history `created_by` of each layer, skipping empty-layer entries.
#[must_use]
pub fn created_by(config: &ImageConfiguration, layers: usize) -> Vec<String> {
    let mut out: Vec<String> = config
        .history()
        .iter()
        .flatten()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| h.created_by().clone().unwrap_or_default())
        .collect();
    out.resize(layers, String::new());
    out
}
