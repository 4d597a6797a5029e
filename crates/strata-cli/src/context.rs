//! What every command gets: the global options, resolved.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use strata_layer::{Mode, Options as LayerOptions, OverlayXattr, Owners};
use strata_registry::{ImageRef, ImageSource, Platform, ResolvedImage};
use strata_stack::{ImageRecord, Store, StoreKind};
use strata_userns::{Mapping, Privilege};

use crate::options::RegistryArgs;
use crate::progress::Progress;

/// Options about the store and the pipeline.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// The store directory [default: /var/lib/strata as root, else $XDG_DATA_HOME/strata]
    #[arg(long, value_name = "DIR", env = "STRATA_STORE", global = true)]
    pub store: Option<PathBuf>,

    /// Layers fetched and extracted at once [default: twice the cores, at least 4]
    #[arg(long, short = 'j', value_name = "N", global = true)]
    pub jobs: Option<usize>,

    /// Print results as one JSON object on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars (plain lines instead)
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Keep each pulled layer's compressed blob in the store too, so that `strata push` needs no source
    #[arg(long, env = "STRATA_KEEP_BLOBS", global = true)]
    pub keep_blobs: bool,
}

/// The resolved global options.
pub struct Context {
    /// Store options.
    pub store_args: StoreArgs,
    /// Registry options.
    pub registry: RegistryArgs,
    /// Progress reporting.
    pub progress: Progress,
    /// What this process may do, probed once at start (before it entered
    /// strata's namespace, if it did).
    pub privilege: Privilege,
    /// The namespace holder this process works under (rootless), whose
    /// pid mount records keep.
    pub holder: Option<strata_userns::Holder>,
}

/// The overlay xattr namespace a store's layers use.
#[must_use]
pub fn overlay_xattr(kind: StoreKind) -> OverlayXattr {
    match kind {
        StoreKind::Root => OverlayXattr::Trusted,
        StoreKind::Rootless => OverlayXattr::User,
    }
}

/// An image the store holds that no source does (one `strata commit`
/// made): commands that otherwise ask the image's source read it here.
///
/// # Errors
/// When the store cannot be read.
pub fn stored_image(ctx: &Context, image: &ImageRef) -> Result<Option<ImageRecord>> {
    let Some(store) = ctx.existing_store()? else {
        return Ok(None);
    };
    Ok(store
        .find_image(&crate::pull::store_name(image))
        .ok()
        .filter(|record| record.source_digest.is_none()))
}

/// The stored image a reference names: by its store name, or by the
/// digest it pins. `hint` says how to get it when it is not there.
///
/// # Errors
/// When the store does not hold it.
pub fn find_stored(store: &Store, image: &ImageRef, hint: &str) -> Result<ImageRecord> {
    let name = crate::pull::store_name(image);
    store
        .find_image(&name)
        .or_else(|e| match image {
            ImageRef::Registry(r) => match &r.digest {
                Some(d) => store.find_image(d.as_ref()),
                None => Err(e),
            },
            _ => Err(e),
        })
        .with_context(|| format!("{name} is not in the store; {hint}"))
}

impl Context {
    /// The kind of store this process makes and uses.
    #[must_use]
    pub fn store_kind(&self) -> StoreKind {
        if self.privilege.is_rootless() {
            StoreKind::Rootless
        } else {
            StoreKind::Root
        }
    }

    /// The store's directory: `--store`, or the default for the kind.
    #[must_use]
    pub fn store_root(&self) -> PathBuf {
        self.store_args
            .store
            .clone()
            .unwrap_or_else(|| Store::default_root(self.store_kind()))
    }

    /// How layers are written, as the privilege allows: owners set (root,
    /// or a subuid range inside strata's namespace) or recorded in the
    /// override xattr (a user alone), devices only as root, and the overlay
    /// xattr namespace of the store's kind.
    #[must_use]
    pub fn layer_options(&self, mode: Mode) -> LayerOptions {
        let owners = match self.privilege.mapping() {
            None | Some(Mapping::Ranges) => Owners::Set,
            Some(Mapping::Single) => Owners::Record,
        };
        LayerOptions {
            mode,
            owners,
            devices: self.privilege.makes_devices(),
            overlay_xattr: overlay_xattr(self.store_kind()),
            ..LayerOptions::default()
        }
    }

    /// Opens the store.
    pub fn store(&self) -> Result<Store> {
        let root = self.store_root();
        Store::open(&root, self.store_kind())
            .with_context(|| format!("opening the store at {}", root.display()))
    }

    /// The store, if one exists already (read-only commands do not create one).
    pub fn existing_store(&self) -> Result<Option<Store>> {
        let root = self.store_root();
        if !root.join("layers").is_dir() {
            return Ok(None);
        }
        self.store().map(Some)
    }

    /// How many layers run at once.
    #[must_use]
    pub fn jobs(&self) -> usize {
        self.store_args
            .jobs
            .unwrap_or_else(|| {
                let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
                (2 * cores).max(4)
            })
            .max(1)
    }

    /// The platform asked for, or the host's.
    pub fn platform(&self) -> Result<Platform> {
        Ok(self.registry.platform()?.unwrap_or_else(Platform::host))
    }

    /// Opens an image's source and resolves it for the platform asked for.
    pub fn resolve(&self, image: &ImageRef) -> Result<(ImageSource, ResolvedImage, Platform)> {
        let source = self.open_source(image)?;
        let platform = self.platform()?;
        let resolved = source
            .resolve(&platform)
            .with_context(|| format!("resolving {image} for {platform}"))?;
        Ok((source, resolved, platform))
    }

    /// Opens an image source.
    pub fn open_source(&self, image: &ImageRef) -> Result<ImageSource> {
        ImageSource::open(image, &self.registry.options()?)
            .with_context(|| format!("opening {image}"))
    }
}
