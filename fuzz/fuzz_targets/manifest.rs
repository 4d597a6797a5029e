//! Manifests and indexes from a registry or a layout: any bytes under any
//! media type parse or are refused with an error, never a panic; what parses
//! has only valid digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_registry::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Parsed, RawManifest, check_digest,
    layer_compression,
};

const MEDIA_TYPES: [Option<&str>; 6] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some("application/json"),
];

fuzz_target!(|input: &[u8]| {
    let Some((selector, bytes)) = input.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(*selector) % MEDIA_TYPES.len()];
    let raw = RawManifest::new(media_type, bytes.to_vec());
    match raw.parse("fuzz") {
        Ok(Parsed::Manifest(manifest)) => {
            check_digest(manifest.config().digest()).expect("parse checked the config digest");
            for layer in manifest.layers() {
                check_digest(layer.digest()).expect("parse checked every layer digest");
                let _ = layer_compression(&layer.media_type().to_string());
            }
        }
        Ok(Parsed::Index(index)) => {
            for m in index.manifests() {
                check_digest(m.digest()).expect("parse checked every manifest digest");
            }
        }
        Err(_) => {}
    }
});
