//! OCI image layouts written directly by the tests, for shapes no tool
//! makes quickly: hundreds of layers, explicit opaque markers, big layers.

use std::io::Write;
use std::path::Path;

use super::sha256;

/// A layer tar built from (name, content) pairs; a name ending in `/` is a
/// directory. Whiteouts are plain names (`.wh.x`, `d/.wh..wh..opq`).
pub fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    (digest, bytes.len())
}

/// Writes an OCI layout at `dir` (created) with one image tagged `tag`:
/// `layers` are uncompressed tars, stored gzip-compressed.
pub fn write_layout(dir: &Path, tag: &str, layers: &[Vec<u8>], cmd: &[&str]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(sha256(tar));
        let (digest, size) = put_blob(dir, &gzip(tar));
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
    }
    let arch = strata_registry::Platform::host().architecture;
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    let (digest, size) = put_blob(dir, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// `n` layers; layer i holds `layers/i` and overwrites `top` with `i`.
pub fn many_layers(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let own = format!("layers/{i}");
            let value = i.to_string();
            tar_of(&[(own.as_str(), value.as_bytes()), ("top", value.as_bytes())])
        })
        .collect()
}

/// A layer holding `big/blob`: `mb` MiB of incompressible bytes from `seed`.
pub fn big_layer(mb: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let data: Vec<u8> = (0..mb << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    tar_of(&[("big/", b""), ("big/blob", &data)])
}
