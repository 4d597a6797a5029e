//! Manifests, configs and blobs from a real registry (plain HTTP, no auth).

use std::io::Read;

use strata_registry::{ImageRef, ImageSource, Platform};

use crate::util::{
    busybox_layout, fast_options, registry::Registry, run_err, run_ok, sha256, strata,
};

fn layout_blob(digest: &str) -> Vec<u8> {
    std::fs::read(busybox_layout().join("blobs/sha256").join(&digest[7..])).unwrap()
}

fn layout_manifest_digest(tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(busybox_layout().join("index.json")).unwrap())
            .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn manifest_config_and_every_blob_of_a_multi_layer_image() {
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "test/busybox:1");
    let reference = registry.reference("test/busybox:1");

    // The CLI prints the manifest and config byte for byte.
    let manifest = run_ok(strata().args(["manifest", &reference]));
    let want_digest = layout_manifest_digest("latest");
    assert_eq!(
        sha256(&manifest),
        want_digest,
        "strata manifest is not the pushed manifest"
    );
    let config = run_ok(strata().args(["config", &reference]));
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        sha256(&config),
        parsed["config"]["digest"].as_str().unwrap()
    );
    assert_eq!(
        config,
        layout_blob(parsed["config"]["digest"].as_str().unwrap())
    );

    // The library streams every layer, verified, byte-identical to the source.
    let source =
        ImageSource::open(&reference.parse::<ImageRef>().unwrap(), &fast_options()).unwrap();
    let image = source.resolve(&Platform::host()).unwrap();
    assert_eq!(image.manifest.digest.to_string(), want_digest);
    let layers = image.layers().unwrap();
    assert_eq!(layers.len(), 4);
    for (i, layer) in layers.iter().enumerate() {
        let mut bytes = Vec::new();
        source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(
            bytes,
            layout_blob(layer.descriptor.digest().as_ref()),
            "layer {i}"
        );
    }
}

#[test]
fn multi_platform_index_resolves_per_platform() {
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "multi", "test/multi:1");
    let reference = registry.reference("test/multi:1");

    let index: serde_json::Value =
        serde_json::from_slice(&run_ok(strata().args(["manifest", &reference]))).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    for (platform, tag) in [("linux/amd64", "latest"), ("linux/arm64", "arm64")] {
        let manifest = run_ok(strata().args(["manifest", "--platform", platform, &reference]));
        assert_eq!(sha256(&manifest), layout_manifest_digest(tag), "{platform}");
        let config: serde_json::Value = serde_json::from_slice(&run_ok(strata().args([
            "config",
            "--platform",
            platform,
            &reference,
        ])))
        .unwrap();
        assert_eq!(config["architecture"], platform.split('/').nth(1).unwrap());
    }

    let (code, stderr) =
        run_err(strata().args(["config", "--platform", "linux/s390x", &reference]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("has no image for platform linux/s390x; it has: linux/amd64, linux/arm64"),
        "{stderr}"
    );
}

#[test]
fn pinned_digests_missing_tags_and_bad_references() {
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "test/pin:1");
    let digest = layout_manifest_digest("latest");

    let by_digest = run_ok(strata().args([
        "manifest",
        &registry.reference(&format!("test/pin@{digest}")),
    ]));
    assert_eq!(sha256(&by_digest), digest);
    let tag_and_digest = run_ok(strata().args([
        "manifest",
        &registry.reference(&format!("test/pin:other@{digest}")),
    ]));
    assert_eq!(tag_and_digest, by_digest, "the digest wins over the tag");

    let (code, stderr) = run_err(strata().args(["manifest", &registry.reference("test/pin:nope")]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("not found") && stderr.contains("nope"),
        "{stderr}"
    );

    let absent = format!("sha256:{}", "0".repeat(64));
    let (code, stderr) = run_err(strata().args([
        "manifest",
        &registry.reference(&format!("test/pin@{absent}")),
    ]));
    assert_eq!(code, 3, "{stderr}");

    let (code, stderr) = run_err(strata().args(["manifest", "Not/Valid:ref"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("expected [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]"),
        "{stderr}"
    );
    let (code, stderr) = run_err(strata().args(["manifest", "alpine@sha256:../../etc/passwd"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid digest"), "{stderr}");
}

/// A loopback registry is asked over plain HTTP first; where nothing
/// listens, the error names the address and says the connection was refused
/// (not a TLS error from the HTTPS second try).
#[test]
fn a_loopback_port_where_nothing_listens_is_named_as_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stderr) = run_err(strata().args(["manifest", &format!("127.0.0.1:{port}/x:1")]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/v2/"))
            && stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );
}
