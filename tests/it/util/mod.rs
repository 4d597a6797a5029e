//! Test helpers: running the binary, building test images, real registries.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the helpers"
)]

pub mod http;
pub mod layer;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod rootless;
pub mod store_env;
pub mod tls;
pub mod token;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use strata_registry::{Options, RetryPolicy};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/images/real/`: `docker save` archives made by Docker itself.
pub fn real_images_dir() -> PathBuf {
    let dir = repo_root().join("../shared/images/real");
    assert!(
        dir.is_dir(),
        "{} is missing: the docker-save test archives live in the shared/ folder beside the repository",
        dir.display()
    );
    dir
}

/// How many images a `docker save` archive holds (its manifest.json, read with tar).
pub fn archive_image_count(path: &Path) -> usize {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(path)
        .arg("manifest.json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} has no manifest.json",
        path.display()
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .len()
}

/// Fails the test, loudly, when a tool it needs is not installed.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    assert!(
        found,
        "`{tool}` is not installed; this test needs it. Install it with `just deps` (apt-get install {package})"
    );
}

/// A HOME with no credentials, so the user's own auth files never leak in.
fn clean_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp home"))
        .path()
}

/// The `strata` binary, with an environment free of the user's credentials.
pub fn strata() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.env("HOME", clean_home())
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("STRATA_CREDS")
        // The host's mirror configuration stays out; a test names its own.
        .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
        .env("STRATA_HOSTS_DIR", "")
        .env_remove("STRATA_LOG");
    cmd
}

/// `skopeo`, with an auth file of its own: the user's (or a root-only
/// `/run/containers`) never decides a test.
pub fn skopeo() -> Command {
    require_tool("skopeo", "skopeo");
    static AUTH: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("auth.json"), b"{}").unwrap();
        dir
    });
    let mut cmd = Command::new("skopeo");
    cmd.env("REGISTRY_AUTH_FILE", dir.path().join("auth.json"))
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawning the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a command that must fail; returns exit code and stderr.
pub fn run_err(cmd: &mut Command) -> (i32, String) {
    let out: Output = cmd.output().expect("spawning the command");
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Library options for tests: no auth files, quick retries.
pub fn fast_options() -> Options {
    Options {
        auth_files: Vec::new(),
        retry: RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            resumes: 5,
        },
        stall_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// Builds a test image with a `testdata/` script once per content of the
/// script, caching it under the target directory.
fn built_image(script: &str) -> PathBuf {
    require_tool("umoci", "umoci");
    let script_path = repo_root().join("testdata").join(script);
    let text = std::fs::read(&script_path).expect("reading the testdata script");
    let key = &sha256(&text)[7..19];
    // `just test-unprivileged` points this at a directory its user owns.
    let cache = std::env::var_os("STRATA_TEST_IMAGES").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("images"),
        PathBuf::from,
    );
    let out = cache.join(format!("{script}-{key}"));
    if out.join("done").exists() {
        return out;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let status = Command::new("bash")
        .arg(&script_path)
        .arg(&tmp)
        .status()
        .expect("running the testdata script");
    assert!(status.success(), "{} failed", script_path.display());
    std::fs::write(tmp.join("done"), b"").unwrap();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The busybox test image (see testdata/README.md), with a third tag `multi`
/// added here: an OCI index of its `latest` (linux/amd64) and `arm64` manifests.
pub fn busybox_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let layout = built_image("build-busybox-image.sh").join("layout");
        add_multi_platform_index(&layout);
        layout
    })
}

fn add_multi_platform_index(layout: &Path) {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap().clone();
    if manifests
        .iter()
        .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "multi")
    {
        return;
    }
    let by_tag = |tag: &str| {
        manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("tag {tag} missing from the test layout"))
            .clone()
    };
    let entry = |tag: &str, arch: &str| {
        let mut m = by_tag(tag);
        m.as_object_mut().unwrap().remove("annotations");
        m["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        m
    };
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("latest", "amd64"), entry("arm64", "arm64")],
    });
    let bytes = serde_json::to_vec(&multi).unwrap();
    let digest = sha256(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Where slow-to-build test inputs (a Debian rootfs) are kept between runs,
/// outside the repository: `$STRATA_TEST_CACHE` or `/var/cache/strata-test`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STRATA_TEST_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/strata-test"), PathBuf::from)
}

/// A Debian bookworm minbase image (debootstrap, packed by umoci), two
/// layers: the rootfs, then a layer that deletes and changes files.
pub fn debian_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        require_tool("debootstrap", "debootstrap");
        require_tool("umoci", "umoci");
        let script = repo_root().join("testdata/build-debian-image.sh");
        let key = &sha256(&std::fs::read(&script).unwrap())[7..19];
        let out = cache_dir().join(format!("debian-{key}"));
        if !out.join("done").exists() {
            std::fs::create_dir_all(cache_dir()).unwrap();
            let status = Command::new("bash")
                .arg(&script)
                .arg(&out)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "{} failed (it needs Debian's mirror)",
                script.display()
            );
            std::fs::write(out.join("done"), b"").unwrap();
        }
        out.join("layout")
    })
}
