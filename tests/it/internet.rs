//! Pulls from the real Docker Hub and GHCR, anonymously, so their token flows
//! are exercised for real. Compiled only with `--features internet-tests`
//! (`just test-internet`): this machine and CI have no internet.

use std::io::Read;

use strata_registry::{ImageRef, ImageSource, Options, Platform};

fn pull_config_and_first_layer(reference: &str) {
    let source = ImageSource::open(&reference.parse::<ImageRef>().unwrap(), &Options::default())
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    let image = source
        .resolve(&Platform::host())
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    let layers = image.layers().unwrap();
    let mut stream = source.blob(&layers[0].descriptor, "layer 0").unwrap();
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).unwrap();
    assert_eq!(sink.len() as u64, layers[0].descriptor.size());
}

#[test]
fn internet_docker_hub_alpine_anonymously() {
    pull_config_and_first_layer("docker.io/library/alpine:latest");
}

#[test]
fn internet_ghcr_anonymously() {
    pull_config_and_first_layer("ghcr.io/linuxcontainers/alpine:latest");
}
