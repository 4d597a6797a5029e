//! strata as an ordinary user: a real user with a subuid range (and one
//! without), real user namespaces mapped by newuidmap, real overlays
//! mounted with `userxattr` in strata's namespace. Root only creates the
//! users and the reference trees.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::rootless::{Scratch, User, readable, with_range, without_range};
use crate::util::store_env::Env;
use crate::util::tree::{assert_same, manifest_with_links};
use crate::util::{busybox_layout, debian_layout, run_ok};

/// Not a test: the rootless tests run it inside `strata unshare`, as the
/// user, to take the tree's manifest the way the namespace shows it.
#[test]
#[ignore = "a helper the rootless tests run inside `strata unshare`"]
fn dump_tree() {
    let root = std::env::var_os("STRATA_DUMP_TREE").expect("STRATA_DUMP_TREE names the tree");
    let out = std::env::var_os("STRATA_DUMP_OUT").expect("STRATA_DUMP_OUT names the output");
    let tree = manifest_with_links(Path::new(&root));
    std::fs::write(out, serde_json::to_vec(&tree).unwrap()).unwrap();
}

/// The manifest of `dir` as the user sees it inside strata's namespace.
fn tree_inside(user: &User, s: &Scratch, dir: &str) -> BTreeMap<String, String> {
    let out = s.path("tree.json");
    run_ok(
        user.strata(s)
            .args(["unshare", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "rootless::dump_tree",
                "--test-threads=1",
            ])
            .env("STRATA_DUMP_TREE", s.path(dir))
            .env("STRATA_DUMP_OUT", &out),
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits (up to 5 s) for the store's holder to exit after its last mount.
fn holder_stops(s: &Scratch) -> bool {
    for _ in 0..50 {
        if !s.holder_running() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn privileged_rootless_pull_and_mount_shows_the_root_tree_inside_strata_unshare() {
    let env = Env::new();
    let image = format!("oci:{}:latest", readable(debian_layout()).display());
    let reference = env.path("root-rootfs");
    run_ok(
        env.strata()
            .args(["-q", "pull-and-mount", &image])
            .arg(&reference),
    );
    let want = manifest_with_links(&reference);

    let user = with_range();
    let s = user.scratch();
    let out = user
        .strata(&s)
        .args(["pull-and-mount", &image, "rootfs"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "rootless pull-and-mount: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("strata unshare -- chroot") && last.contains("/rootfs"),
        "the last line says how to enter: {last}"
    );
    assert!(s.holder_running(), "the mount's holder runs");
    assert!(
        std::fs::read_dir(s.path("rootfs"))
            .unwrap()
            .next()
            .is_none(),
        "outside strata's namespace the mountpoint stays empty"
    );
    // Field by field, owners included, as the namespace shows it; device
    // nodes aside: no user namespace may make them (podman and umoci skip
    // them too), and the pull says so.
    assert!(stderr.contains("skipping device nodes"), "{stderr}");
    let want: BTreeMap<String, String> = want
        .into_iter()
        .filter(|(_, v)| !v.starts_with("char ") && !v.starts_with("block "))
        .collect();
    assert_same(
        &tree_inside(user, &s, "rootfs"),
        &want,
        "rootless mount (inside strata unshare) vs root mount",
    );

    // The image's programs run, and see the image's owners.
    let inside = run_ok(user.strata(&s).args([
        "unshare",
        "--",
        "chroot",
        "rootfs",
        "/bin/sh",
        "-c",
        "stat -c %u:%g /etc/shadow; id -u",
    ]));
    assert_eq!(text(&inside), "0:42\n0\n");

    // On the host the layers hold the mapped ids: root is the user, the
    // others are the user's subordinate ids.
    let layers = std::fs::read_dir(s.store().join("layers")).unwrap();
    for layer in layers {
        let diff = layer.unwrap().path().join("diff");
        if let Ok(md) = std::fs::symlink_metadata(diff.join("etc/shadow")) {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(md.uid(), user.uid, "image root is the user on the host");
            assert_ne!(
                md.gid(),
                42,
                "image gid 42 is a subordinate gid on the host"
            );
        }
    }

    // A writable mount: writes land in the user's store.
    run_ok(user.strata(&s).args(["-q", "mount", "--rw", &image, "rw"]));
    run_ok(user.strata(&s).args([
        "unshare",
        "--",
        "sh",
        "-c",
        "echo hi > rw/new-file && chown 1000:1000 rw/new-file && rm rw/etc/hostname",
    ]));
    let uppers: Vec<_> = std::fs::read_dir(s.store().join("mounts"))
        .unwrap()
        .map(|e| e.unwrap().path().join("upper"))
        .filter(|u| u.join("new-file").is_file())
        .collect();
    assert_eq!(
        uppers.len(),
        1,
        "the write is in one upper of the user's store"
    );
    // The layers are never changed by a mount.
    run_ok(user.strata(&s).args(["fsck"]));

    // `strata umount` from outside ends each mount; the holder goes with the last.
    run_ok(user.strata(&s).args(["umount", "rootfs"]));
    assert!(
        s.holder_running(),
        "the writable mount still needs the holder"
    );
    run_ok(user.strata(&s).args(["umount", "rw"]));
    let listed = run_ok(user.strata(&s).arg("mounts"));
    assert!(listed.is_empty(), "no mounts left: {}", text(&listed));
    assert!(holder_stops(&s), "the holder exits with the last mount");
    run_ok(user.strata(&s).args(["fsck"]));

    // A holder that dies takes its mounts along: `mounts` marks the records
    // stale, `gc` cleans them (a writable one's upper is kept).
    run_ok(user.strata(&s).args(["-q", "mount", &image, "rootfs"]));
    run_ok(user.strata(&s).args(["-q", "mount", "--rw", &image, "rw"]));
    let record = std::fs::read_to_string(s.store().join("ns/holder")).unwrap();
    let pid = record.split(':').next().unwrap().to_owned();
    run_ok(std::process::Command::new("kill").args(["-9", &pid]));
    assert!(holder_stops(&s));
    let listed = text(&run_ok(user.strata(&s).arg("mounts")));
    assert_eq!(listed.matches("stale").count(), 2, "{listed}");
    run_ok(user.strata(&s).arg("gc"));
    let listed = text(&run_ok(user.strata(&s).arg("mounts")));
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("kept upper"), "{listed}");
    assert!(holder_stops(&s), "gc leaves no holder behind");
}

#[test]
fn privileged_rootless_preflight_errors_name_the_cause_and_the_fix() {
    let image = format!("oci:{}:latest", readable(busybox_layout()).display());
    let user = with_range();

    // newuidmap hidden from PATH.
    let s = user.scratch();
    let out = user
        .strata(&s)
        .env("PATH", "/nonexistent")
        .args(["pull", &image])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("newuidmap is not on PATH") && stderr.contains("apt-get install uidmap"),
        "{stderr}"
    );

    // User namespaces refused: this user's own namespace allows no more
    // (`user.max_user_namespaces` is per namespace; the host keeps its own).
    let s = user.scratch();
    let mut disabled = user.command(&s, "unshare");
    disabled
        .args(["--user", "--map-current-user", "--keep-caps", "sh", "-c"])
        .arg(format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && exec {} pull {image}",
            env!("CARGO_BIN_EXE_strata")
        ));
    let out = disabled.output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not let an ordinary user create a user namespace")
            && stderr.contains("user.max_user_namespaces is 0"),
        "{stderr}"
    );

    // A store made by root is not a rootless store, and the other way round.
    let env = Env::new();
    run_ok(env.strata().args(["-q", "pull", &image]));
    let s = user.scratch();
    std::fs::create_dir_all(s.path("rootstore")).unwrap();
    std::fs::copy(env.store().join("kind"), s.path("rootstore/kind")).unwrap();
    run_ok(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(user.uid.to_string())
            .arg(s.path("rootstore")),
    );
    let out = user
        .strata(&s)
        .args(["--store", "rootstore", "pull", &image])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is a root-made store and this strata runs rootless"),
        "{stderr}"
    );
    run_ok(user.strata(&s).args(["-q", "pull", &image]));
    let out = crate::util::strata()
        .arg("--store")
        .arg(s.store())
        .arg("images")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is a rootless store and this strata runs as root"),
        "{stderr}"
    );

    // A store on a filesystem without user.* xattrs (ramfs has none).
    let s = user.scratch();
    let ramfs = s.path("ramfs");
    std::fs::create_dir_all(&ramfs).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "ramfs", "none"])
            .arg(&ramfs),
    );
    run_ok(
        std::process::Command::new("chown")
            .arg(user.uid.to_string())
            .arg(&ramfs),
    );
    let out = user
        .strata(&s)
        .args(["--store", "ramfs/store", "pull", &image])
        .output()
        .unwrap();
    let _ = rustix::mount::unmount(&ramfs, rustix::mount::UnmountFlags::DETACH);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refuses user.* xattrs") && stderr.contains("--store on ext4"),
        "{stderr}"
    );

    // No subuid range: it works, with one warning saying how to add one.
    let lone = without_range();
    let s = lone.scratch();
    let out = lone.strata(&s).args(["pull", &image]).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("has no subuid/subgid range").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("usermod --add-subuids"), "{stderr}");
}

/// A layer blob's entries as `tar -tv --numeric-owner` shows them, without
/// mtimes: mode, owner, size and path of each (the root entry left out).
fn tar_headers(blob: &Path) -> Vec<String> {
    let out = run_ok(
        std::process::Command::new("tar")
            .args(["-tv", "--numeric-owner", "-f"])
            .arg(blob),
    );
    let mut lines: Vec<String> = text(&out)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = f.get(5..)?.join(" ");
            (path != "./").then(|| format!("{} {} {} {path}", f[0], f[1], f[2]))
        })
        .collect();
    lines.sort();
    lines
}

fn blob_of(store: &Path, digest: &str) -> std::path::PathBuf {
    store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Changes that copy up files and directories owned by others than root.
/// (Not a new file in a setgid directory: without a range its group is the
/// user's, where root's would be the directory's.)
const OWNED_CHANGES: &str = "chmod 600 rw/etc/shadow && chmod 620 rw/etc/gshadow && echo more >> rw/etc/shadow && rm rw/etc/hostname && mkdir rw/srv/new && echo x > rw/srv/new/x";

#[test]
fn privileged_without_a_range_flatten_and_commit_keep_the_image_owners_from_the_override_record() {
    let env = Env::new();
    let image = format!("oci:{}:latest", readable(debian_layout()).display());
    let rw = env.path("rw");
    run_ok(
        env.strata()
            .args(["-q", "pull-and-mount", "--rw", &image])
            .arg(&rw),
    );
    run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(OWNED_CHANGES)
            .current_dir(env.path("")),
    );
    let root_commit = env.json(&["commit", rw.to_str().unwrap(), "owned:root"]);
    run_ok(env.strata().arg("umount").arg(&rw));

    let user = without_range();
    let s = user.scratch();
    run_ok(
        user.strata(&s)
            .args(["-q", "pull-and-mount", "--rw", &image, "rw"]),
    );
    run_ok(
        user.strata(&s)
            .args(["unshare", "--", "sh", "-c", OWNED_CHANGES]),
    );
    let out = run_ok(
        user.strata(&s)
            .args(["--json", "commit", "rw", "owned:rootless"]),
    );
    let rootless_commit: serde_json::Value = serde_json::from_slice(&out).unwrap();
    run_ok(user.strata(&s).args(["umount", "rw"]));

    let theirs = tar_headers(&blob_of(
        &env.store(),
        root_commit["layer_digest"].as_str().unwrap(),
    ));
    let ours = tar_headers(&blob_of(
        &s.store(),
        rootless_commit["layer_digest"].as_str().unwrap(),
    ));
    assert!(
        theirs
            .iter()
            .any(|l| l.contains(" 0/42 ") && l.ends_with("etc/shadow")),
        "the root commit holds /etc/shadow as root:shadow: {theirs:#?}"
    );
    assert_eq!(ours, theirs, "the rootless commit's tar headers vs root's");

    // flatten keeps each file's image owner in the override record.
    run_ok(user.strata(&s).args(["-q", "flatten", &image, "flat"]));
    let mut value = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(
        s.path("flat/etc/shadow"),
        "user.containers.override_stat",
        &mut value[..],
    )
    .expect("flatten recorded /etc/shadow's owner");
    assert!(
        text(&value[..n]).starts_with("0:42:0640:"),
        "{}",
        text(&value[..n])
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::symlink_metadata(s.path("flat/etc/shadow"))
            .unwrap()
            .uid(),
        user.uid,
        "without a range the files are the user's"
    );
}

#[test]
fn privileged_rootless_commit_round_trip_flattens_to_the_merged_view() {
    let image = format!("oci:{}:latest", readable(debian_layout()).display());
    let user = with_range();
    let s = user.scratch();
    run_ok(
        user.strata(&s)
            .args(["-q", "pull-and-mount", "--rw", &image, "rw"]),
    );
    run_ok(user.strata(&s).args([
        "unshare",
        "--",
        "sh",
        "-c",
        "echo new > rw/etc/new && chown 1000:1000 rw/etc/new && rm -r rw/etc/apt && \
         mkdir rw/opt/app && ln -s /etc/new rw/opt/app/link && chmod 4755 rw/opt/app && \
         rm -rf rw/var/cache && mkdir rw/var/cache && echo again > rw/var/cache/again && mkfifo rw/fifo",
    ]));
    let seen = tree_inside(user, &s, "rw");
    let out = run_ok(
        user.strata(&s)
            .args(["--json", "commit", "rw", "app:rootless"]),
    );
    let commit: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(commit["whiteouts"].as_u64().unwrap() >= 1, "{commit}");
    assert!(commit["opaque_dirs"].as_u64().unwrap() >= 1, "{commit}");
    run_ok(
        user.strata(&s)
            .args(["-q", "flatten", "app:rootless", "flat"]),
    );
    assert_same(
        &tree_inside(user, &s, "flat"),
        &seen,
        "flatten of the rootless commit vs the merged view",
    );
    // Pushed by the user as an OCI layout, unpacked by umoci as root: the
    // image's owners are the ones the user saw inside the namespace.
    let layout = s.path("pushed");
    run_ok(
        user.strata(&s)
            .args(["push", "app:rootless"])
            .arg(format!("oci:{}:pushed", layout.display())),
    );
    crate::util::require_tool("umoci", "umoci");
    let bundle = s.path("bundle");
    run_ok(
        std::process::Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:pushed", layout.display()))
            .arg(&bundle),
    );
    // The base image's device nodes, which a user namespace cannot make,
    // are in the image (umoci, as root, makes them) but not in the view.
    let mut unpacked = manifest_with_links(&bundle.join("rootfs"));
    unpacked.retain(|path, node| {
        seen.contains_key(path) || !(node.starts_with("char ") || node.starts_with("block "))
    });
    assert_same(
        &unpacked,
        &seen,
        "umoci unpack of the rootless push vs the merged view",
    );
    run_ok(user.strata(&s).args(["umount", "rw"]));
    run_ok(user.strata(&s).args(["fsck"]));
}

#[test]
fn privileged_hostile_layers_stay_inside_and_steer_no_rootless_mount() {
    use crate::util::layer::{dir, file, layer, symlink, whiteout};
    let user = with_range();
    let s = user.scratch();
    // A canary beside the target and the store, owned by the user (so
    // that a write that got out would succeed), and one owned by root.
    let canary = s.path("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    run_ok(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(user.uid.to_string())
            .arg(&canary),
    );
    let canary_abs = canary.to_str().unwrap().to_owned();
    let layers = vec![
        layer(&[
            dir("d/"),
            file("d/lower-file", b"below"),
            dir("e/"),
            file("e/kept", b"kept"),
        ]),
        layer(&[
            file("../canary/file", b"pwned"),
            file("/abs", b"a"),
            symlink("evil", &canary_abs),
            file("evil/new", b"pwned"),
            symlink("rel", "../../canary"),
            file("rel/file", b"pwned"),
            whiteout("../canary/sub"),
            // Overlay markers carried by the layer: data, never obeyed.
            dir("d/").xattr("user.overlay.opaque", b"y"),
            file("d/upper-file", b"above"),
            dir("e/").xattr("trusted.overlay.opaque", b"y"),
            file("f", b"f").xattr("user.overlay.redirect", b"/e"),
        ]),
    ];
    let layout = s.path("layout");
    crate::util::oci::write_layout(&layout, "t", &layers, &["/x"]);
    run_ok(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(user.uid.to_string())
            .arg(&layout),
    );
    let image = format!("oci:{}:t", layout.display());
    let before = crate::util::tree::manifest(&canary);
    let out = user
        .strata(&s)
        .args(["-q", "pull-and-mount", &image, "rootfs"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    run_ok(user.strata(&s).args(["-q", "flatten", &image, "flat"]));
    assert_eq!(
        crate::util::tree::manifest(&canary),
        before,
        "the canary changed"
    );
    let beside: Vec<_> = std::fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &beside {
        assert!(
            ["home", "canary", "layout", "rootfs", "flat", "tree.json"].contains(&name.as_str()),
            "{name} appeared beside the targets"
        );
    }
    let mounted = tree_inside(user, &s, "rootfs");
    for tree in [&mounted, &tree_inside(user, &s, "flat")] {
        assert!(
            tree.contains_key("d/lower-file"),
            "a layer's user.overlay.opaque made d opaque: {tree:#?}"
        );
        assert!(
            tree.contains_key("e/kept"),
            "a layer's trusted.overlay.opaque made e opaque"
        );
        assert!(
            tree.contains_key("d/upper-file")
                && tree.contains_key("canary/file")
                && tree.contains_key("abs")
        );
        assert!(
            tree.get("evil").is_some_and(|v| v.starts_with("symlink")),
            "{:?}",
            tree.get("evil")
        );
    }
    assert!(
        mounted["f"].starts_with("file 1 "),
        "a redirect carried by the layer does not redirect: {}",
        mounted["f"]
    );
    run_ok(user.strata(&s).args(["umount", "rootfs"]));
    run_ok(user.strata(&s).args(["fsck"]));
}
