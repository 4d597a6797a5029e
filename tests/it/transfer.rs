//! `strata copy` and `strata push` against real registries and real tools:
//! the manifest bytes arrive unchanged (skopeo reads them back
//! byte-identical), only what the destination lacks is sent, blobs another
//! repository of the registry holds are mounted, broken uploads start over
//! and succeed, refusals say who refused what.

use std::path::Path;
use std::process::Command;

use crate::util::http::{Server, respond};
use crate::util::oci::{big_layer, write_layout};
use crate::util::proxy::{Fault, Proxy};
use crate::util::registry::{Auth, Registry};
use crate::util::tree::{assert_same, manifest_with_links};
use crate::util::{busybox_layout, real_images_dir, require_tool, run_err, run_ok, strata};

/// What skopeo reads at a reference: the raw manifest or index bytes.
fn skopeo_raw(reference: &str) -> Vec<u8> {
    require_tool("skopeo", "skopeo");
    run_ok(crate::util::skopeo().args(["inspect", "--raw", "--tls-verify=false", reference]))
}

fn copy_json(args: &[&str]) -> serde_json::Value {
    let out = run_ok(strata().args(["--json", "copy"]).args(args));
    serde_json::from_slice(&out).unwrap()
}

/// `umoci unpack` of a layout's tag: the rootfs as a tree manifest.
fn umoci_tree(
    layout: &Path,
    tag: &str,
    bundle: &Path,
) -> std::collections::BTreeMap<String, String> {
    require_tool("umoci", "umoci");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !strata_layer::running_as_root() {
        cmd.arg("--rootless");
    }
    run_ok(
        cmd.arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    manifest_with_links(&bundle.join("rootfs"))
}

#[test]
fn copy_keeps_the_manifest_bytes_between_registries_layouts_and_archives() {
    let a = Registry::plain();
    let b = Registry::plain();
    a.push_layout(busybox_layout(), "latest", "busybox:1");
    let source = a.reference("busybox:1");
    let original = skopeo_raw(&format!("docker://{source}"));
    let tmp = tempfile::tempdir().unwrap();

    // registry → registry
    let to_b = b.reference("copied/busybox:1");
    let sent = copy_json(&[&source, &to_b]);
    assert_eq!(skopeo_raw(&format!("docker://{to_b}")), original);
    assert_eq!(sent["digest"], crate::util::sha256(&original));
    assert_eq!(sent["uploaded"], sent["blobs"].as_array().unwrap().len());

    // registry → oci: → registry, and registry → oci-archive:
    let layout = tmp.path().join("layout");
    let oci = format!("oci:{}:v1", layout.display());
    copy_json(&[&source, &oci]);
    assert_eq!(skopeo_raw(&oci), original);
    let from_oci = b.reference("from-oci:v1");
    copy_json(&[&oci, &from_oci]);
    assert_eq!(skopeo_raw(&format!("docker://{from_oci}")), original);
    let archive = format!(
        "oci-archive:{}:v1",
        tmp.path().join("busybox.tar").display()
    );
    copy_json(&[&source, &archive]);
    assert_eq!(skopeo_raw(&archive), original);

    // skopeo copies strata's output on, and umoci unpacks it to the tree
    // the source layout gives.
    let again = tmp.path().join("again");
    run_ok(
        crate::util::skopeo()
            .args(["copy", "--quiet", &archive])
            .arg(format!("oci:{}:v1", again.display())),
    );
    let ours = umoci_tree(&again, "v1", &tmp.path().join("b1"));
    let theirs = umoci_tree(busybox_layout(), "latest", &tmp.path().join("b2"));
    assert_same(
        &ours,
        &theirs,
        "umoci unpack of strata's copy against the source layout",
    );

    // docker-archive → registry: the manifest strata reads from the archive
    // (the one `docker push` would write) is the one the registry holds.
    let saved = real_images_dir().join("hello-world.tar");
    let docker_archive = format!("docker-archive:{}", saved.display());
    let from_archive = b.reference("hello:1");
    copy_json(&[&docker_archive, &from_archive]);
    let read = run_ok(strata().args(["manifest", &docker_archive]));
    assert_eq!(skopeo_raw(&format!("docker://{from_archive}")), read);
    run_ok(
        crate::util::skopeo()
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{from_archive}"))
            .arg(format!("oci:{}:hello", tmp.path().join("hello").display())),
    );
}

#[test]
fn copy_all_takes_the_index_and_every_platform_and_one_platform_without_it() {
    let a = Registry::plain();
    let b = Registry::plain();
    a.push_layout(busybox_layout(), "multi", "multi:1");
    let source = a.reference("multi:1");
    let index = skopeo_raw(&format!("docker://{source}"));
    let parsed: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let children: Vec<String> = parsed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(children.len(), 2);

    let all = b.reference("all/multi:1");
    copy_json(&["--all", &source, &all]);
    assert_eq!(skopeo_raw(&format!("docker://{all}")), index);
    for child in &children {
        let repo = format!("docker://{}", b.reference(&format!("all/multi@{child}")));
        assert_eq!(
            skopeo_raw(&repo),
            skopeo_raw(&format!(
                "docker://{}",
                a.reference(&format!("multi@{child}"))
            )),
            "child {child}"
        );
    }

    // Without --all: the chosen platform's manifest, under the tag.
    let one = b.reference("one/multi:arm64");
    copy_json(&["--platform", "linux/arm64", &source, &one]);
    let arm64 = parsed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        crate::util::sha256(&skopeo_raw(&format!("docker://{one}"))),
        arm64
    );
}

#[test]
fn copy_sends_only_what_is_missing_and_mounts_within_one_registry() {
    let a = Registry::plain();
    a.push_layout(busybox_layout(), "latest", "busybox:1");
    let source = a.reference("busybox:1");
    let blobs_before = a.blob_count();

    let mounted = copy_json(&[&source, &a.reference("team/busybox:1")]);
    let blobs = mounted["blobs"].as_array().unwrap().len();
    assert_eq!(mounted["mounted"], blobs, "{mounted}");
    assert_eq!(mounted["uploaded_bytes"], 0);
    let mounts = a.requests_with("mount=");
    assert_eq!(
        mounts.len(),
        blobs,
        "the access log shows one mount per blob:\n{}",
        a.logs()
    );
    assert!(
        mounts.iter().all(|l| l.contains("from=busybox")),
        "{mounts:?}"
    );
    assert_eq!(a.blob_count(), blobs_before, "a mount stores nothing new");

    let again = copy_json(&[&source, &a.reference("team/busybox:1")]);
    assert_eq!(again["present"], blobs, "{again}");
    assert_eq!(again["uploaded_bytes"], 0);
}

#[test]
fn an_upload_broken_off_mid_body_starts_over_and_the_copy_succeeds() {
    let registry = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("big");
    write_layout(&layout, "big", &[big_layer(24, 7)], &["/bin/true"]);
    let source = format!("oci:{}:big", layout.display());
    // The first two connections break after 5 MB from strata: inside the
    // first chunk of the big layer's upload, whichever connection carries it.
    let proxy = Proxy::start(&registry.addr, |i| {
        if i < 2 {
            Fault::ResetUploadAfter(5 << 20)
        } else {
            Fault::None
        }
    });
    let destination = format!("{}/big:1", proxy.addr);
    let out = strata()
        .args(["--json", "copy", &source, &destination])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size: u64 = sent["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert!(
        sent["uploaded_bytes"].as_u64().unwrap() > size,
        "the broken upload was sent again: {sent}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("over"),
        "the restart is reported:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = skopeo_raw(&format!("docker://{}", registry.reference("big:1")));
    assert_eq!(crate::util::sha256(&raw), sent["digest"].as_str().unwrap());
    // Every blob the manifest names is there: skopeo copies it whole.
    run_ok(
        crate::util::skopeo()
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}", registry.reference("big:1")))
            .arg(format!("oci:{}:back", tmp.path().join("back").display())),
    );
}

#[test]
fn refusals_name_the_registry_and_what_it_said() {
    let a = Registry::plain();
    a.push_layout(busybox_layout(), "latest", "busybox:1");
    let source = a.reference("busybox:1");

    // Wrong credentials on a real htpasswd registry: exit 3.
    let locked = Registry::start(
        Auth::Basic {
            user: "alice",
            password: "right",
        },
        None,
    );
    let (code, err) = run_err(strata().args([
        "copy",
        "--creds",
        "alice:wrong",
        &source,
        &locked.reference("x:1"),
    ]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&locked.addr) && err.contains("alice"), "{err}");

    // 403, 413 and 507: the distribution registry cannot be made to send
    // these on a write, so a small HTTP server answers them.
    for (status, expect_code, words) in [
        (403u16, 3, "DENIED: push to this repository is not allowed"),
        (413, 1, "413"),
        (507, 1, "out of storage"),
    ] {
        let server = Server::start("127.0.0.1", move |req, stream| {
            let path = req.path().to_owned();
            match (req.method.as_str(), path.as_str()) {
                ("GET", "/v2/") => respond(stream, 200, &[], b"{}"),
                ("HEAD", p) if p.contains("/blobs/") => respond(stream, 404, &[], b""),
                ("POST", p) if p.ends_with("/blobs/uploads/") && status == 403 => respond(
                    stream,
                    403,
                    &[("Content-Type", "application/json".into())],
                    br#"{"errors":[{"code":"DENIED","message":"push to this repository is not allowed"}]}"#,
                ),
                ("POST", _) => respond(stream, 202, &[("Location", "/v2/x/blobs/uploads/u1".into())], b""),
                _ => respond(stream, status, &[], b""),
            }
        });
        let (code, err) =
            run_err(strata().args(["copy", &source, &format!("{}/x:1", server.addr)]));
        assert_eq!(code, expect_code, "{status}: {err}");
        assert!(err.contains(words), "{status}: {err}");
    }
}

#[test]
fn a_token_registry_is_asked_for_push_on_the_destination_and_pull_on_the_mount_source() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = crate::util::token::start(tmp.path(), &[("pusher", "push-secret")], false);
    let registry = Registry::start(Auth::Token(&tokens), None);
    registry.push_layout(busybox_layout(), "latest", "src/busybox:1");
    tokens.requests.lock().unwrap().clear();
    let sent = copy_json(&[
        "--creds",
        "pusher:push-secret",
        &registry.reference("src/busybox:1"),
        &registry.reference("dst/busybox:1"),
    ]);
    assert!(sent["mounted"].as_u64().unwrap() > 0, "{sent}");
    let scopes: Vec<Vec<String>> = tokens
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let mut s = r.query_all("scope");
            s.sort();
            s
        })
        .collect();
    assert!(
        scopes.contains(&vec!["repository:src/busybox:pull".to_owned()]),
        "the source is read with a pull token: {scopes:?}"
    );
    assert!(
        scopes.contains(&vec![
            "repository:dst/busybox:pull,push".to_owned(),
            "repository:src/busybox:pull".to_owned()
        ]),
        "the destination's token has push on it and pull on the mount source: {scopes:?}"
    );
    assert!(
        scopes
            .iter()
            .flatten()
            .all(|s| s == "repository:src/busybox:pull" || s == "repository:dst/busybox:pull,push"),
        "no other scope is asked for: {scopes:?}"
    );
}

/// Runs podman as root against a private storage, so the host's images
/// are never touched.
fn podman(storage: &Path) -> Command {
    require_tool("podman", "podman");
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    cmd
}

#[test]
fn privileged_push_of_a_committed_image_sends_the_new_layer_and_mounts_or_streams_the_base() {
    let env = crate::util::store_env::Env::new();
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "base/busybox:1");
    let base = registry.reference("base/busybox:1");
    let root = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", "--rw", &base])
            .arg(&root),
    );
    std::fs::write(root.join("etc/pushed"), b"pushed\n").unwrap();
    std::fs::remove_dir_all(root.join("home")).unwrap_or(());
    let seen = manifest_with_links(&root);
    let name = registry.reference("base/busybox:2");
    run_ok(env.strata().args(["commit"]).arg(&root).arg(&name));
    run_ok(env.strata().arg("umount").arg(&root));
    let manifest = run_ok(env.strata().args(["manifest", &name]));
    let layers = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"]
        .as_array()
        .unwrap()
        .clone();
    let base_layers = layers.len() - 1;

    // To the repository of its base: exactly the new layer, the config and
    // the manifest are new in the registry's storage, and the bytes sent
    // are the two new blobs'.
    let before = registry.blob_count();
    let sent = env.json(&["push", &name]);
    assert_eq!(registry.blob_count(), before + 3, "{sent}");
    assert_eq!(sent["present"], base_layers, "{sent}");
    assert_eq!(sent["uploaded"], 2, "{sent}");
    let new_blobs: u64 = sent["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["outcome"] == "uploaded")
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sent["uploaded_bytes"], new_blobs);
    assert_eq!(skopeo_raw(&format!("docker://{name}")), manifest);

    // To another repository of that registry: the base layers are
    // mounted (the access log shows the requests), not sent.
    let other = registry.reference("team/app:2");
    let sent = env.json(&["push", &name, &other]);
    assert!(
        sent["mounted"].as_u64().unwrap() >= base_layers as u64,
        "{sent}"
    );
    for layer in &layers[..base_layers] {
        let digest = layer["digest"].as_str().unwrap();
        assert!(
            registry
                .requests_with("mount=")
                .iter()
                .any(|l| l.contains(&digest.replace(':', "%3A")) || l.contains(digest)),
            "no mount request for {digest}:\n{}",
            registry.logs()
        );
    }

    // To an empty registry: the base layers are streamed from the source,
    // with the source's digests.
    let empty = Registry::plain();
    let far = empty.reference("app:2");
    let sent = env.json(&["push", &name, &far]);
    assert_eq!(sent["uploaded"], layers.len() + 1, "{sent}");
    assert_eq!(skopeo_raw(&format!("docker://{far}")), manifest);

    // What the peers make of the pushed image is what the mount showed.
    let layout = env.path("layout");
    run_ok(
        crate::util::skopeo()
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{far}"))
            .arg(format!("oci:{}:pushed", layout.display())),
    );
    assert_same(
        &umoci_tree(&layout, "pushed", &env.path("bundle")),
        &seen,
        "umoci unpack of the pushed image",
    );
    let storage = env.path("podman");
    run_ok(podman(&storage).args(["pull", "--quiet", "--tls-verify=false", &far]));
    let mounted =
        String::from_utf8(run_ok(podman(&storage).args(["image", "mount", &far]))).unwrap();
    let podman_tree = manifest_with_links(Path::new(mounted.trim()));
    run_ok(podman(&storage).args(["image", "unmount", &far]));
    assert_same(
        &podman_tree,
        &seen,
        "podman image mount of the pushed image",
    );

    // An OCI layout from the store, which umoci unpacks the same.
    let pushed_layout = env.path("pushed-layout");
    run_ok(
        env.strata()
            .args(["push", &name])
            .arg(format!("oci:{}:pushed", pushed_layout.display())),
    );
    assert_same(
        &umoci_tree(&pushed_layout, "pushed", &env.path("bundle2")),
        &seen,
        "umoci unpack of strata push oci:",
    );
}

#[test]
fn a_push_killed_at_any_moment_never_leaves_a_tag_without_its_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let layout = tmp.path().join("big");
    write_layout(
        &layout,
        "big",
        &[big_layer(24, 11), big_layer(8, 12)],
        &["/bin/true"],
    );
    let image = format!("oci:{}:big", layout.display());
    run_ok(strata().arg("--store").arg(&store).args(["pull", &image]));
    let registry = Registry::plain();
    let manifest = run_ok(strata().args(["manifest", &image]));
    // A new repository each round: blobs are per repository, so each push
    // uploads everything again and the kill lands mid-upload.
    for (round, delay_ms) in [5u64, 20, 40, 70, 100, 140, 200].into_iter().enumerate() {
        let destination = registry.reference(&format!("killed-{round}:1"));
        let mut child = strata()
            .arg("--store")
            .arg(&store)
            .args(["-q", "push", &image, &destination])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Either no tag, or one whose every blob is there (skopeo fetches
        // them all).
        let inspect = crate::util::skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{destination}"))
            .output()
            .unwrap();
        if inspect.status.success() {
            let out = tmp.path().join(format!("check-{round}"));
            run_ok(
                crate::util::skopeo()
                    .args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{destination}"))
                    .arg(format!("oci:{}:x", out.display())),
            );
        }
        // Pushing again succeeds, with the source's manifest.
        run_ok(
            strata()
                .arg("--store")
                .arg(&store)
                .args(["-q", "push", &image, &destination]),
        );
        assert_eq!(
            skopeo_raw(&format!("docker://{destination}")),
            manifest,
            "round {round}"
        );
    }
}

#[test]
fn a_pull_with_keep_blobs_pushes_without_its_source_and_without_them_the_error_says_both_ways_out()
{
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::plain();
    for keep in [true, false] {
        let store = tmp.path().join(format!("store-{keep}"));
        let layout = tmp.path().join(format!("layout-{keep}"));
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(busybox_layout())
                .arg(&layout),
        );
        let image = format!("oci:{}:latest", layout.display());
        let mut pull = strata();
        pull.arg("--store").arg(&store).arg("pull");
        if keep {
            pull.arg("--keep-blobs");
        }
        run_ok(pull.arg(&image));
        let manifest = run_ok(
            strata()
                .arg("--store")
                .arg(&store)
                .args(["manifest", &image]),
        );
        std::fs::remove_dir_all(&layout).unwrap();
        let destination = registry.reference(&format!("kept-{keep}:1"));
        let mut push = strata();
        push.arg("--store")
            .arg(&store)
            .args(["push", &image, &destination]);
        if keep {
            run_ok(&mut push);
            assert_eq!(skopeo_raw(&format!("docker://{destination}")), manifest);
        } else {
            let (code, err) = run_err(&mut push);
            assert_ne!(code, 0);
            assert!(
                err.contains("sending layer ")
                    && err.contains(&layout.display().to_string())
                    && err.contains("--keep-blobs"),
                "the error names the layer, the source and the way out: {err}"
            );
            let inspect = crate::util::skopeo()
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{destination}"))
                .output()
                .unwrap();
            assert!(!inspect.status.success(), "a failed push left a tag");
        }
    }
}

#[test]
fn privileged_copy_to_a_docker_archive_keeps_the_config_and_podman_loads_it() {
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "busybox:1");
    let source = registry.reference("busybox:1");
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("saved.tar");
    let destination = format!("docker-archive:{}:busybox:saved", archive.display());
    copy_json(&[&source, &destination]);
    // The config (the image ID) and every diff_id are the source's.
    assert_eq!(
        run_ok(strata().args(["config", &format!("docker-archive:{}", archive.display())])),
        run_ok(strata().args(["config", &source]))
    );
    let storage = tmp.path().join("podman");
    run_ok(
        podman(&storage)
            .arg("load")
            .arg("--quiet")
            .arg("-i")
            .arg(&archive),
    );
    let mounted = String::from_utf8(run_ok(podman(&storage).args([
        "image",
        "mount",
        "busybox:saved",
    ])))
    .unwrap();
    let loaded = manifest_with_links(Path::new(mounted.trim()));
    run_ok(podman(&storage).args(["image", "unmount", "busybox:saved"]));
    let theirs = umoci_tree(busybox_layout(), "latest", &tmp.path().join("bundle"));
    assert_same(
        &loaded,
        &theirs,
        "podman load of strata's docker-archive against umoci of the source",
    );
    // An index cannot go into one.
    registry.push_layout(busybox_layout(), "multi", "multi:1");
    let (_, err) = run_err(
        strata()
            .args(["copy", "--all", &registry.reference("multi:1")])
            .arg(format!(
                "docker-archive:{}",
                tmp.path().join("multi.tar").display()
            )),
    );
    assert!(err.contains("one platform"), "{err}");
    assert!(!tmp.path().join("multi.tar").exists());
}

/// Every `.NAME.tmp-…` file under `dir`.
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_layout_destination_stays_inside_itself_keeps_concurrent_tags_and_cleans_up_after_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let source = format!("oci:{}:latest", busybox_layout().display());

    // blobs/sha256 a symlink out: refused, nothing written outside.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let evil = tmp.path().join("evil");
    std::fs::create_dir_all(evil.join("blobs")).unwrap();
    std::fs::write(
        evil.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, evil.join("blobs/sha256")).unwrap();
    let (_, err) = run_err(
        strata()
            .args(["copy", &source])
            .arg(format!("oci:{}:x", evil.display())),
    );
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a blob was written outside the layout"
    );

    // A symlink planted at the temp names strata will use is never followed.
    let planted = tmp.path().join("planted");
    copy_json(&[&source, &format!("oci:{}:seed", planted.display())]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(planted.join("index.json")).unwrap()).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"original").unwrap();
    let script = format!(
        "for n in 0 1 2 3 4 5 6 7; do ln -s {v} {d}/.index.json.tmp-$$-$n; done; exec {strata} copy {source} oci:{d}:again",
        v = victim.display(),
        d = planted.display(),
        strata = env!("CARGO_BIN_EXE_strata"),
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
        .env("STRATA_HOSTS_DIR", "")
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"original",
        "a planted symlink was followed"
    );
    assert!(!planted.join("index.json").is_symlink());
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(planted.join("index.json")).unwrap()).unwrap();
    assert!(
        after["manifests"].as_array().unwrap().len()
            >= index["manifests"].as_array().unwrap().len()
    );

    // Two copies into one layout at once: both tags are there.
    let shared = tmp.path().join("shared");
    let arm = format!("oci:{}:arm64", busybox_layout().display());
    for round in 0..4 {
        let _ = std::fs::remove_dir_all(&shared);
        run_ok(
            strata()
                .args(["-q", "copy", &source])
                .arg(format!("oci:{}:a", shared.display())),
        );
        run_ok(
            strata()
                .args(["-q", "copy", &arm])
                .arg(format!("oci:{}:b", shared.display())),
        );
        let children: Vec<_> = (0..2)
            .map(|i| {
                let (src, tag) = if i == 0 { (&source, "a") } else { (&arm, "b") };
                strata()
                    .args(["-q", "copy", src])
                    .arg(format!("oci:{}:{tag}-{round}", shared.display()))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(shared.join("index.json")).unwrap()).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        for tag in ["a", "b", &format!("a-{round}"), &format!("b-{round}")] {
            assert!(names.contains(&tag), "round {round}: {names:?}");
        }
    }

    // Other fields of an existing index.json stay.
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shared.join("index.json")).unwrap()).unwrap();
    index["annotations"] = serde_json::json!({"com.example.keep": "me"});
    std::fs::write(
        shared.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    copy_json(&[&source, &format!("oci:{}:kept", shared.display())]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shared.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["annotations"]["com.example.keep"], "me");

    // Killed copies leave temp files; the next copy removes them.
    let big = tmp.path().join("big");
    write_layout(&big, "big", &[big_layer(24, 3)], &["/bin/true"]);
    let big_source = format!("oci:{}:big", big.display());
    let killed = tmp.path().join("killed");
    let archive = tmp.path().join("killed.tar");
    for delay in [30u64, 60, 120] {
        for dest in [
            format!("oci:{}:k", killed.display()),
            format!("oci-archive:{}:k", archive.display()),
        ] {
            let mut child = strata()
                .args(["-q", "copy", &big_source, &dest])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    copy_json(&[&big_source, &format!("oci:{}:k", killed.display())]);
    copy_json(&[&big_source, &format!("oci-archive:{}:k", archive.display())]);
    assert_eq!(temp_files(&killed), Vec::<std::path::PathBuf>::new());
    let archive_temps: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".killed.tar.tmp-")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(archive_temps, Vec::<std::path::PathBuf>::new());

    // An archive destination that is a directory is refused before anything is sent.
    let (_, err) = run_err(
        strata()
            .args(["copy", &source])
            .arg(format!("oci-archive:{}:x", outside.display())),
    );
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn format_oci_rewrites_docker_manifests_so_skopeo_and_umoci_read_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = format!(
        "docker-archive:{}",
        real_images_dir().join("hello-world.tar").display()
    );
    // Without it the Docker manifest is kept, with a warning that says why
    // the OCI tools will not read it and what to do.
    let kept = tmp.path().join("kept");
    let out = strata()
        .args(["copy", &saved])
        .arg(format!("oci:{}:hw", kept.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--format oci"), "{stderr}");
    // With it: an OCI manifest over the same blobs.
    let layout = tmp.path().join("layout");
    let sent = copy_json(&[
        "--format",
        "oci",
        &saved,
        &format!("oci:{}:hw", layout.display()),
    ]);
    let raw = skopeo_raw(&format!("oci:{}:hw", layout.display()));
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(sent["digest"], crate::util::sha256(&raw));
    let docker: serde_json::Value =
        serde_json::from_slice(&run_ok(strata().args(["manifest", &saved]))).unwrap();
    assert_eq!(
        manifest["config"]["digest"], docker["config"]["digest"],
        "the config blob is the same"
    );
    let flat = tmp.path().join("flat");
    run_ok(
        strata()
            .arg("--store")
            .arg(tmp.path().join("store"))
            .args(["flatten", &saved])
            .arg(&flat),
    );
    assert_same(
        &umoci_tree(&layout, "hw", &tmp.path().join("bundle")),
        &manifest_with_links(&flat),
        "umoci unpack of --format oci against strata flatten",
    );
}
