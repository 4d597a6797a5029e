//! Docker schema 2 manifests rewritten as OCI ones (`--format oci`), for
//! tools that read only OCI manifests from an OCI layout (skopeo, podman,
//! umoci). Only the manifests change: every blob keeps its bytes and
//! digest, so the image's config and layers are the same; the manifest
//! digests are new, which is why this happens only when asked.

use std::collections::HashMap;

use serde_json::Value;

use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RawManifest};
use crate::{Error, Result};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The OCI media type for a Docker one (configs, layers); others pass.
fn oci_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.container.image.v1+json" => OCI_CONFIG,
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        other => other,
    }
}

fn set_type(object: &mut Value) {
    if let Some(t) = object.get("mediaType").and_then(Value::as_str) {
        let new = oci_type(t).to_owned();
        object["mediaType"] = Value::String(new);
    }
}

/// `manifests` (children before their index, as a copy plan lists them)
/// with every Docker manifest and list rewritten as OCI, an index's entries
/// pointing at the rewritten children. OCI manifests pass unchanged.
///
/// # Errors
/// A manifest that is not JSON.
pub fn to_oci(manifests: &[RawManifest]) -> Result<Vec<RawManifest>> {
    let mut renamed: HashMap<String, (String, u64)> = HashMap::new();
    let mut out = Vec::with_capacity(manifests.len());
    for raw in manifests {
        let mut value: Value = serde_json::from_slice(&raw.bytes)
            .map_err(|e| Error::json(format!("manifest {}", raw.digest), e))?;
        let media_type = value
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(&raw.media_type)
            .to_owned();
        if media_type != DOCKER_MANIFEST && media_type != DOCKER_LIST {
            out.push(raw.clone());
            continue;
        }
        value["mediaType"] = Value::String(oci_type(&media_type).to_owned());
        if let Some(config) = value.get_mut("config") {
            set_type(config);
        }
        for key in ["layers", "manifests"] {
            if let Some(items) = value.get_mut(key).and_then(Value::as_array_mut) {
                for item in items {
                    set_type(item);
                    let old = item
                        .get("digest")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if let Some((digest, size)) = old.and_then(|d| renamed.get(&d)) {
                        item["digest"] = Value::String(digest.clone());
                        item["size"] = Value::from(*size);
                    }
                }
            }
        }
        let bytes = serde_json::to_vec(&value).expect("a JSON value serialises");
        let new = RawManifest::new(Some(oci_type(&media_type)), bytes);
        renamed.insert(
            raw.digest.to_string(),
            (new.digest.to_string(), new.bytes.len() as u64),
        );
        out.push(new);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_list_and_its_manifests_become_oci_with_the_blobs_unchanged() {
        let child = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 3, "digest": "sha256:aa"},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 5, "digest": "sha256:bb"}],
        });
        let child = RawManifest::new(Some(DOCKER_MANIFEST), serde_json::to_vec(&child).unwrap());
        let list = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "size": child.bytes.len(), "digest": child.digest.to_string(),
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        });
        let list = RawManifest::new(Some(DOCKER_LIST), serde_json::to_vec(&list).unwrap());
        let out = to_oci(&[child.clone(), list]).unwrap();
        let new_child: Value = serde_json::from_slice(&out[0].bytes).unwrap();
        assert_eq!(new_child["mediaType"], OCI_MANIFEST);
        assert_eq!(new_child["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(new_child["config"]["digest"], "sha256:aa");
        assert_eq!(
            new_child["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(new_child["layers"][0]["digest"], "sha256:bb");
        let index: Value = serde_json::from_slice(&out[1].bytes).unwrap();
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"][0]["mediaType"], OCI_MANIFEST);
        assert_eq!(index["manifests"][0]["digest"], out[0].digest.to_string());
        assert_eq!(index["manifests"][0]["size"], out[0].bytes.len());
        assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
        assert_ne!(out[0].digest, child.digest);
    }

    #[test]
    fn oci_manifests_pass_byte_for_byte() {
        let m = RawManifest::new(Some(OCI_MANIFEST), br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec());
        assert_eq!(to_oci(std::slice::from_ref(&m)).unwrap()[0].bytes, m.bytes);
    }
}
