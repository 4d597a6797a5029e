//! Local sources: `docker save` archives made by Docker, and OCI layouts as a
//! directory and as a tar.

use std::process::Command;

use strata_registry::{ArchiveImage, ImageRef, ImageSource, Platform};

use crate::util::{
    archive_image_count, busybox_layout, fast_options, real_images_dir, require_tool, run_err,
    run_ok, strata,
};

/// Reads every layer of `reference` through verification; returns the layer digests.
fn read_all_layers(reference: &ImageRef) -> (String, Vec<String>) {
    let source = ImageSource::open(reference, &fast_options())
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    let image = source
        .resolve(&Platform::host())
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    let mut digests = Vec::new();
    for (i, layer) in image.layers().unwrap().iter().enumerate() {
        let mut stream = source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .unwrap();
        let n = std::io::copy(&mut stream, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("{reference} layer {i}: {e}"));
        assert_eq!(n, layer.descriptor.size());
        digests.push(layer.descriptor.digest().to_string());
    }
    (image.parsed_manifest.config().digest().to_string(), digests)
}

#[test]
fn every_docker_save_archive_opens_and_yields_its_layers_as_skopeo_sees_them() {
    require_tool("skopeo", "skopeo");
    let mut archives: Vec<_> = std::fs::read_dir(real_images_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    archives.sort();
    assert!(
        archives.len() >= 4,
        "expected the docker-save archives in {}",
        real_images_dir().display()
    );
    let mut images = 0;
    for archive in &archives {
        for n in 0..archive_image_count(archive) {
            let reference = ImageRef::DockerArchive {
                path: archive.clone(),
                image: Some(ArchiveImage::Index(n)),
            };
            let (config, layers) = read_all_layers(&reference);
            assert!(!layers.is_empty(), "{reference}");
            // skopeo, reading the same archive, sees the same config and layers.
            let raw = crate::util::skopeo()
                .args(["inspect", "--raw", &reference.to_string()])
                .output()
                .unwrap();
            assert!(
                raw.status.success(),
                "skopeo inspect {reference}: {}",
                String::from_utf8_lossy(&raw.stderr)
            );
            let theirs: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
            assert_eq!(theirs["config"]["digest"], config.as_str(), "{reference}");
            let their_layers: Vec<&str> = theirs["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap())
                .collect();
            assert_eq!(their_layers, layers, "{reference}");
            images += 1;
        }
    }
    assert!(images >= 6, "only {images} images found");
}

#[test]
fn docker_archive_images_are_chosen_by_tag_and_multi_image_archives_ask() {
    let archive = real_images_dir().join("imagesv11.tar");
    let by_tag = run_ok(strata().args([
        "config",
        &format!("docker-archive:{}:you/secondimage:1.2", archive.display()),
    ]));
    let by_index = run_ok(strata().args([
        "config",
        &format!("docker-archive:{}:@2", archive.display()),
    ]));
    assert_eq!(by_tag, by_index);
    let config: serde_json::Value = serde_json::from_slice(&by_tag).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    let (code, stderr) =
        run_err(strata().args(["manifest", &format!("docker-archive:{}", archive.display())]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("holds 3 images") && stderr.contains("@2 (you/secondimage:1.2)"),
        "{stderr}"
    );
    let (_, stderr) = run_err(strata().args([
        "manifest",
        &format!("docker-archive:{}:nope:1", archive.display()),
    ]));
    assert!(stderr.contains("no image tagged nope:1"), "{stderr}");
}

#[test]
fn an_oci_layout_and_its_tar_give_the_same_digests() {
    let layout = busybox_layout();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(layout)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());

    for tag in ["latest", "arm64"] {
        let dir_ref = format!("oci:{}:{tag}", layout.display());
        let tar_ref = format!("oci-archive:{}:{tag}", archive.display());
        assert_eq!(
            run_ok(strata().args(["manifest", &dir_ref])),
            run_ok(strata().args(["manifest", &tar_ref]))
        );
        assert_eq!(
            run_ok(strata().args(["config", &dir_ref])),
            run_ok(strata().args(["config", &tar_ref]))
        );
        let platform = if tag == "arm64" {
            "linux/arm64"
        } else {
            "linux/amd64"
        };
        let _ = platform;
        let from_dir = read_all_layers(&dir_ref.parse().unwrap());
        let from_tar = read_all_layers(&tar_ref.parse().unwrap());
        assert_eq!(from_dir, from_tar, "{tag}");
        assert_eq!(from_dir.1.len(), 4);
    }

    // The multi-platform tag resolves per --platform in both forms.
    for platform in ["linux/amd64", "linux/arm64"] {
        let a = run_ok(strata().args([
            "config",
            "--platform",
            platform,
            &format!("oci:{}:multi", layout.display()),
        ]));
        let b = run_ok(strata().args([
            "config",
            "--platform",
            platform,
            &format!("oci-archive:{}:multi", archive.display()),
        ]));
        assert_eq!(a, b);
        let config: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(config["architecture"], platform.split('/').nth(1).unwrap());
    }

    let (code, stderr) = run_err(strata().args(["manifest", &format!("oci:{}", layout.display())]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("name one of its tags as oci:DIR:TAG: latest, arm64, multi"),
        "{stderr}"
    );
    let (_, stderr) =
        run_err(strata().args(["manifest", &format!("oci:{}", tmp.path().display())]));
    assert!(
        stderr.contains("is not a valid OCI image layout: it has no oci-layout file"),
        "{stderr}"
    );
}

#[test]
fn a_tampered_layout_blob_is_refused() {
    // Copy the layout, then corrupt the config blob in place.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("layout");
    let status = Command::new("cp")
        .arg("-a")
        .arg(busybox_layout())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let config = run_ok(strata().args(["config", &format!("oci:{}:latest", copy.display())]));
    let digest = crate::util::sha256(&config);
    let blob = copy.join("blobs/sha256").join(&digest[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let (code, stderr) =
        run_err(strata().args(["config", &format!("oci:{}:latest", copy.display())]));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(&format!("digest mismatch: expected {digest}")),
        "{stderr}"
    );
}
