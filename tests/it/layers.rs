//! Real layers through strata-layer: every layer of the `docker save`
//! archives and of images built by umoci, in both modes, and the flattened
//! tree compared with what `umoci unpack` makes of the same image.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_cli::pull::layer_compression;
use strata_layer::{DirSource, Mode, Options, apply_source, extract, fix_up};
use strata_registry::{ArchiveImage, ImageRef, ImageSource, Platform};

use crate::util::tree::{assert_same, manifest};
use crate::util::{
    archive_image_count, busybox_layout, debian_layout, fast_options, real_images_dir, require_tool,
};

/// Extracts every layer of `reference` in overlay mode, each into its own
/// directory under `dir` (fixed up against the ones below), and also applies
/// them in order into `dir/flat`. Returns the layer directories, bottom first.
fn unpack_both_ways(reference: &ImageRef, dir: &Path) -> Vec<PathBuf> {
    let source = ImageSource::open(reference, &fast_options()).unwrap();
    let image = source.resolve(&Platform::host()).unwrap();
    let flat = dir.join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    let mut layer_dirs: Vec<PathBuf> = Vec::new();
    for (i, layer) in image.layers().unwrap().iter().enumerate() {
        let hint = layer_compression(layer.descriptor.media_type().as_ref());
        let diff_id = layer.diff_id.to_string();
        let target = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(&target).unwrap();
        let stream = source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .unwrap();
        let mut summary = extract(stream, hint, Some(&diff_id), &target, &Options::default())
            .unwrap_or_else(|e| panic!("{reference} layer {i} (overlay): {e}"));
        let lowers: Vec<&Path> = layer_dirs.iter().rev().map(PathBuf::as_path).collect();
        fix_up(
            &target,
            &mut summary.fixups,
            &lowers,
            strata_layer::Owners::of_process(),
        )
        .unwrap_or_else(|e| panic!("{reference} layer {i} fix-up: {e}"));
        layer_dirs.push(target);

        let stream = source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .unwrap();
        let apply = Options {
            mode: Mode::Apply,
            ..Options::default()
        };
        extract(stream, hint, Some(&diff_id), &flat, &apply)
            .unwrap_or_else(|e| panic!("{reference} layer {i} (apply): {e}"));
    }
    layer_dirs
}

/// Applies overlay-form layer directories in order onto a fresh directory.
fn apply_layer_dirs(layer_dirs: &[PathBuf], target: &Path) {
    std::fs::create_dir_all(target).unwrap();
    let apply = Options {
        mode: Mode::Apply,
        ..Options::default()
    };
    for dir in layer_dirs {
        apply_source(&mut DirSource::new(dir), target, &apply)
            .unwrap_or_else(|e| panic!("applying {}: {e}", dir.display()));
    }
}

fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    require_tool("umoci", "umoci");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

/// Checks strata's flattened tree (from tars, and from its own layer
/// directories) against `umoci unpack` of the same OCI layout tag.
fn check_against_umoci(layout: &Path, tag: &str) -> std::collections::BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let reference = ImageRef::OciDir {
        path: layout.to_owned(),
        tag: Some(tag.to_owned()),
    };
    let layer_dirs = unpack_both_ways(&reference, tmp.path());
    let umoci = umoci_unpack(layout, tag, &tmp.path().join("bundle"));
    let theirs = manifest(&umoci);
    assert_same(
        &manifest(&tmp.path().join("flat")),
        &theirs,
        &format!("flatten of {reference} vs umoci unpack"),
    );
    apply_layer_dirs(&layer_dirs, &tmp.path().join("from-dirs"));
    assert_same(
        &manifest(&tmp.path().join("from-dirs")),
        &theirs,
        &format!("layer dirs of {reference} applied vs umoci unpack"),
    );
    theirs
}

#[test]
fn privileged_busybox_image_flattens_exactly_as_umoci_unpacks_it() {
    let tree = check_against_umoci(busybox_layout(), "latest");
    assert!(
        tree.contains_key("bin/busybox") && tree.contains_key("opt/app/y"),
        "{tree:?}"
    );
    assert!(
        !tree.contains_key("data/b.txt") && !tree.contains_key("opt/app/x"),
        "whiteouts not applied: {tree:?}"
    );
    assert!(tree["tmp"].starts_with("dir 1777"), "{}", tree["tmp"]);
}

#[test]
fn privileged_debian_minbase_flattens_exactly_as_umoci_unpacks_it() {
    let tree = check_against_umoci(debian_layout(), "latest");
    assert!(tree.len() > 3000, "only {} paths", tree.len());
    assert!(
        !tree.keys().any(|p| p.starts_with("usr/share/doc/")),
        "whiteouts not applied"
    );
    assert!(
        tree["usr/local/bin/suid-true"].contains(" 4755 "),
        "{}",
        tree["usr/local/bin/suid-true"]
    );
}

#[test]
fn privileged_every_layer_of_the_docker_save_archives_extracts_and_matches_umoci() {
    require_tool("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for name in [
        "hello-world.tar",
        "imagesv11.tar",
        "mini-image_from_scratch-2.0.tar",
        "she-image_from_scratch-1.0.tar",
    ] {
        let archive = real_images_dir().join(name);
        let count = archive_image_count(&archive);
        for n in 0..count {
            // Convert with skopeo into an OCI layout that umoci can read.
            let layout = tmp.path().join(format!("{name}-{n}"));
            let reference = ImageRef::DockerArchive {
                path: archive.clone(),
                image: Some(ArchiveImage::Index(n)),
            };
            let out = crate::util::skopeo()
                .args(["copy", "--quiet", &reference.to_string()])
                .arg(format!("oci:{}:t", layout.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo copy {reference}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let work = tmp.path().join(format!("work-{name}-{n}"));
            let layer_dirs = unpack_both_ways(&reference, &work);
            let theirs = manifest(&umoci_unpack(&layout, "t", &work.join("bundle")));
            assert_same(
                &manifest(&work.join("flat")),
                &theirs,
                &format!("{reference} vs umoci"),
            );
            apply_layer_dirs(&layer_dirs, &work.join("from-dirs"));
            assert_same(
                &manifest(&work.join("from-dirs")),
                &theirs,
                &format!("{reference} layer dirs vs umoci"),
            );
            checked += 1;
        }
    }
    assert!(checked >= 6);
}
