//! What a copy moves: the manifests and blobs of an image, in the order a
//! destination must receive them.

use oci_spec::image::Descriptor;

use crate::manifest::{Parsed, RawManifest, is_foreign_layer};
use crate::platform::{Platform, choose};
use crate::source::ImageSource;
use crate::{Error, Result};

/// The manifests and blobs of one copy, verified as far as manifests go
/// (blobs are verified as they stream).
#[derive(Debug, Clone)]
pub struct CopyPlan {
    /// Every config and layer blob, each once, in manifest order.
    /// Foreign (non-distributable) layers are left out: their manifests
    /// point at URLs, and registries hold them without the blob.
    pub blobs: Vec<PlannedBlob>,
    /// The manifests, children before the index; the last is the top one,
    /// which takes the destination's tag.
    pub manifests: Vec<RawManifest>,
}

/// One blob to copy.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    /// Its descriptor, from the manifest.
    pub descriptor: Descriptor,
    /// What it is, for messages ("config", "layer 3").
    pub what: String,
}

impl ImageSource {
    /// Plans a copy: with `platform`, the one manifest an index has for it
    /// (or the manifest the reference names); without, the whole index and
    /// every manifest in it. The manifests' bytes are the source's, so the
    /// copy keeps every digest.
    ///
    /// # Errors
    /// As [`ImageSource::resolve`]; an index inside an index.
    pub fn plan_copy(&self, platform: Option<&Platform>) -> Result<CopyPlan> {
        let name = self.reference().to_string();
        let top = self.raw_manifest()?;
        let mut plan = CopyPlan {
            blobs: Vec::new(),
            manifests: Vec::new(),
        };
        match top.parse(&name)? {
            Parsed::Manifest(m) => {
                add_blobs(&mut plan, &m, None);
                plan.manifests.push(top);
            }
            Parsed::Index(index) => {
                let children: Vec<&Descriptor> = match platform {
                    Some(p) => vec![choose(&index, p, &name)?],
                    None => index.manifests().iter().collect(),
                };
                let several = children.len() > 1;
                for child in children {
                    let raw = self.child_manifest(child)?;
                    match raw.parse(&name)? {
                        Parsed::Manifest(m) => {
                            let label = several.then(|| describe_child(child));
                            add_blobs(&mut plan, &m, label.as_deref());
                        }
                        Parsed::Index(_) => {
                            return Err(Error::UnsupportedManifest {
                                reference: name,
                                media_type: raw.media_type,
                                hint: "; an index inside an index is not supported",
                            });
                        }
                    }
                    plan.manifests.push(raw);
                }
                if platform.is_none() {
                    plan.manifests.push(top);
                }
            }
        }
        Ok(plan)
    }
}

fn describe_child(child: &Descriptor) -> String {
    child.platform().as_ref().map_or_else(
        || child.digest().to_string(),
        |p| {
            let mut text = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                text.push('/');
                text.push_str(v);
            }
            text
        },
    )
}

fn add_blobs(plan: &mut CopyPlan, manifest: &oci_spec::image::ImageManifest, label: Option<&str>) {
    let prefix = label.map(|l| format!("{l} ")).unwrap_or_default();
    let mut push = |descriptor: &Descriptor, what: String| {
        if !plan
            .blobs
            .iter()
            .any(|b| b.descriptor.digest() == descriptor.digest())
        {
            plan.blobs.push(PlannedBlob {
                descriptor: descriptor.clone(),
                what,
            });
        }
    };
    push(manifest.config(), format!("{prefix}config"));
    for (i, layer) in manifest.layers().iter().enumerate() {
        if is_foreign_layer(layer.media_type().as_ref()) {
            continue;
        }
        push(layer, format!("{prefix}layer {}", i + 1));
    }
}
