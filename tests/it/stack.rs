//! The command the project exists for, end to end, as root, with real
//! mounts: pull-and-mount, --rw, shared layers, hundreds of layers, kills,
//! concurrent pulls, flatten, bundle + runc.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::oci::{big_layer, many_layers, tar_of, write_layout};
use crate::util::registry::Registry;
use crate::util::store_env::{Env, is_mounted};
use crate::util::tree::{assert_same, manifest};
use crate::util::{busybox_layout, real_images_dir, require_tool, run_err, run_ok, strata};

#[test]
fn privileged_pull_and_mount_from_a_registry_then_chroot_and_umount() {
    let env = Env::new();
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "test/busybox:1");
    let rootfs = env.path("rootfs");
    let json = env.json(&[
        "pull-and-mount",
        &registry.reference("test/busybox:1"),
        rootfs.to_str().unwrap(),
    ]);
    assert_eq!(json["layers"], 4);
    assert_eq!(json["writable"], false);
    assert!(is_mounted(&rootfs));

    // Files of every layer; the deleted file is gone; the replaced directory shows only its new content.
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hello.txt")).unwrap(),
        "hello from layer 3\n"
    );
    assert!(rootfs.join("data/a.txt").exists() && !rootfs.join("data/b.txt").exists());
    let app: Vec<_> = std::fs::read_dir(rootfs.join("opt/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(app, vec!["y"]);

    let out = run_ok(Command::new("chroot").arg(&rootfs).args([
        "/bin/busybox",
        "sh",
        "-c",
        "cat /etc/hello.txt; ls /data; echo $((6*7))",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from layer 3\na.txt\n42\n"
    );

    // Read-only: a write fails.
    assert!(std::fs::write(rootfs.join("new"), b"x").is_err());

    let mounts = env.json(&["mounts"]);
    assert_eq!(
        mounts[0]["mountpoint"],
        std::fs::canonicalize(&rootfs).unwrap().to_str().unwrap()
    );

    run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    assert!(!is_mounted(&rootfs));
    assert_eq!(
        std::fs::read_dir(&rootfs).unwrap().count(),
        0,
        "umount leaves DIR empty"
    );
    assert_eq!(env.json(&["mounts"]).as_array().unwrap().len(), 0);
    env.layer_dirs_complete();
}

#[test]
fn privileged_an_opaque_directory_shows_only_the_upper_layers_content() {
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(
        &layout,
        "v1",
        &[
            tar_of(&[
                ("etc/", b""),
                ("etc/conf.d/", b""),
                ("etc/conf.d/old", b"old"),
                ("etc/keep", b"k"),
                ("gone", b"g"),
            ]),
            tar_of(&[
                ("etc/conf.d/", b""),
                ("etc/conf.d/.wh..wh..opq", b""),
                ("etc/conf.d/new", b"new"),
                (".wh.gone", b""),
            ]),
        ],
        &["/bin/sh"],
    );
    let rootfs = env.path("rootfs");
    run_ok(env.strata().args([
        "pull-and-mount",
        &format!("oci:{}:v1", layout.display()),
        rootfs.to_str().unwrap(),
    ]));
    let names: Vec<_> = std::fs::read_dir(rootfs.join("etc/conf.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["new"]);
    assert!(rootfs.join("etc/keep").exists() && !rootfs.join("gone").exists());
}

#[test]
fn privileged_rw_mount_writes_land_in_the_upper_and_layers_are_untouched() {
    let env = Env::new();
    let image = format!("oci:{}:latest", busybox_layout().display());
    let rootfs = env.path("rootfs");
    let json = env.json(&["pull-and-mount", "--rw", &image, rootfs.to_str().unwrap()]);
    let upper = PathBuf::from(json["upper"].as_str().unwrap());
    let layers_before = manifest(&env.store().join("layers"));

    std::fs::write(rootfs.join("etc/hello.txt"), b"changed\n").unwrap();
    std::fs::write(rootfs.join("new-file"), b"new\n").unwrap();
    std::fs::remove_file(rootfs.join("data/a.txt")).unwrap();
    assert_eq!(std::fs::read(upper.join("new-file")).unwrap(), b"new\n");
    assert_eq!(
        std::fs::read(upper.join("etc/hello.txt")).unwrap(),
        b"changed\n"
    );
    assert_same(
        &manifest(&env.store().join("layers")),
        &layers_before,
        "layer directories after writes",
    );

    let kept = run_ok(
        env.strata()
            .args(["umount", "--keep", rootfs.to_str().unwrap()]),
    );
    assert_eq!(
        String::from_utf8_lossy(&kept).trim(),
        upper.to_str().unwrap()
    );
    assert!(upper.join("new-file").exists(), "--keep keeps the upper");

    // Issue 11, 20: the next mount at the same path gets its own upper; the
    // kept one is listed, never reused, and survives that mount's umount.
    let again = env.json(&["mount", "--rw", &image, rootfs.to_str().unwrap()]);
    let second = PathBuf::from(again["upper"].as_str().unwrap());
    assert_ne!(second, upper, "a kept upper is never reused");
    assert!(
        !rootfs.join("new-file").exists(),
        "the old changes show again"
    );
    let mounts = env.json(&["mounts"]);
    let kept_uppers: Vec<_> = mounts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["kept_upper"].as_str())
        .collect();
    assert_eq!(kept_uppers, [upper.to_str().unwrap()], "{mounts}");
    run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    run_ok(env.strata().arg("gc"));
    assert!(
        upper.join("new-file").exists(),
        "umount and gc keep a kept upper"
    );
    assert!(
        !second.exists(),
        "umount without --keep removes its own upper"
    );
}

/// Issue 11, 19: a mountpoint inside the store is refused (a later open's
/// tmp/ clean-up, gc or fsck would meet the mount), before anything is made.
#[test]
fn privileged_a_mountpoint_inside_the_store_is_refused() {
    let env = Env::new();
    let image = format!("oci:{}:latest", busybox_layout().display());
    run_ok(env.strata().args(["pull", &image]));
    for inside in ["tmp/x", "mounts/x", "layers", "x"] {
        let dir = env.store().join(inside);
        let (code, stderr) =
            run_err(
                env.strata()
                    .args(["mount", "--rw", &image, dir.to_str().unwrap()]),
            );
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("inside the store"), "{inside}: {stderr}");
        assert!(!is_mounted(&dir), "{inside} was mounted");
    }
    assert!(!env.store().join("tmp/x").exists(), "nothing was created");
    assert_eq!(env.json(&["mounts"]), serde_json::json!([]));
}

#[test]
fn privileged_a_second_image_sharing_the_base_extracts_only_its_new_layers() {
    let env = Env::new();
    let base = tar_of(&[("bin/", b""), ("bin/tool", b"base tool")]);
    let a = env.path("a");
    let b = env.path("b");
    write_layout(
        &a,
        "1",
        &[base.clone(), tar_of(&[("a.txt", b"a")])],
        &["/bin/tool"],
    );
    write_layout(
        &b,
        "1",
        &[base, tar_of(&[("b.txt", b"b")]), tar_of(&[("c.txt", b"c")])],
        &["/bin/tool"],
    );
    let first = env.json(&["pull", &format!("oci:{}:1", a.display())]);
    assert_eq!(first["extracted"], 2);
    let second = env.json(&["pull", &format!("oci:{}:1", b.display())]);
    assert_eq!(
        second["extracted"], 2,
        "the shared base is not extracted again: {second}"
    );
    assert_eq!(
        first["layers"][0]["chain_id"],
        second["layers"][0]["chain_id"]
    );
    let again = env.json(&["pull", &format!("oci:{}:1", b.display())]);
    assert_eq!(again["extracted"], 0);
    assert_eq!(
        std::fs::read_dir(env.store().join("layers"))
            .unwrap()
            .count(),
        4
    );
}

#[test]
fn privileged_the_mount_2_path_for_kernels_before_6_8_mounts_with_short_names() {
    let env = Env::new();
    let layout = env.path("l60");
    write_layout(&layout, "t", &many_layers(60), &["/x"]);
    let rootfs = env.path("r60");
    run_ok(env.strata().env("STRATA_MOUNT_API", "legacy").args([
        "-q",
        "pull-and-mount",
        "--rw",
        &format!("oci:{}:t", layout.display()),
        rootfs.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(rootfs.join("top")).unwrap(), "59");
    std::fs::write(rootfs.join("written"), b"w").unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(rootfs.to_str().unwrap()))
        .unwrap();
    assert!(
        !line.contains("/layers/"),
        "lowerdir should use the short l/ names: {line}"
    );
    run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    // Past one page of options the error says what to do.
    let big = env.path("l500");
    write_layout(&big, "t", &many_layers(500), &["/x"]);
    let (_, stderr) = run_err(env.strata().env("STRATA_MOUNT_API", "legacy").args([
        "-q",
        "pull-and-mount",
        &format!("oci:{}:t", big.display()),
        env.path("r500").to_str().unwrap(),
    ]));
    assert!(
        stderr.contains("do not fit mount(2)'s one page") && stderr.contains("strata flatten"),
        "{stderr}"
    );
}

#[test]
fn privileged_images_of_60_129_and_500_layers_mount_and_501_is_refused_clearly() {
    let env = Env::new();
    for n in [60, 129, 500] {
        let layout = env.path(&format!("l{n}"));
        write_layout(&layout, "t", &many_layers(n), &["/x"]);
        let rootfs = env.path(&format!("r{n}"));
        run_ok(env.strata().args([
            "-q",
            "pull-and-mount",
            &format!("oci:{}:t", layout.display()),
            rootfs.to_str().unwrap(),
        ]));
        assert_eq!(
            std::fs::read_to_string(rootfs.join("top")).unwrap(),
            (n - 1).to_string(),
            "{n} layers"
        );
        assert_eq!(std::fs::read_dir(rootfs.join("layers")).unwrap().count(), n);
        run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    }
    let layout = env.path("l501");
    write_layout(&layout, "t", &many_layers(501), &["/x"]);
    let rootfs = env.path("r501");
    let (code, stderr) = run_err(env.strata().args([
        "-q",
        "pull-and-mount",
        &format!("oci:{}:t", layout.display()),
        rootfs.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("the image has 501 layers; overlayfs stacks at most 500 lower layers"),
        "{stderr}"
    );
    assert!(!is_mounted(&rootfs));
    assert_eq!(
        env.json(&["mounts"]).as_array().unwrap().len(),
        0,
        "no record of a failed mount"
    );
    // flatten has no such limit.
    run_ok(env.strata().args([
        "-q",
        "flatten",
        &format!("oci:{}:t", layout.display()),
        env.path("flat501").to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(env.path("flat501/top")).unwrap(),
        "500"
    );
}

/// A layer big enough that a pull takes a while: incompressible bytes.
#[test]
fn privileged_kill_9_during_a_pull_leaves_no_partial_layer_and_the_next_pull_succeeds() {
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(
        &layout,
        "t",
        &[
            big_layer(24, 1),
            big_layer(24, 2),
            tar_of(&[("top", b"top")]),
        ],
        &["/x"],
    );
    let image = format!("oci:{}:t", layout.display());
    let mut interrupted = 0;
    for delay_ms in [20, 80, 200, 400] {
        let mut child = env
            .strata()
            .args(["-q", "pull", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        env.layer_dirs_complete();
    }
    assert!(
        interrupted > 0,
        "no kill landed during a pull; the test image is too small to test this"
    );
    let json = env.json(&["pull", &image]);
    assert_eq!(json["layers"].as_array().unwrap().len(), 3);
    env.layer_dirs_complete();
    assert_eq!(
        std::fs::read_dir(env.store().join("tmp")).unwrap().count(),
        0,
        "leftovers cleaned"
    );
    let flat = env.path("flat");
    run_ok(
        env.strata()
            .args(["flatten", &image, flat.to_str().unwrap()]),
    );
    assert_eq!(
        std::fs::metadata(flat.join("big/blob")).unwrap().len(),
        24 << 20
    );
}

#[test]
fn privileged_two_concurrent_pulls_of_one_image_both_succeed_and_one_extracts() {
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(
        &layout,
        "t",
        &[big_layer(8, 3), big_layer(8, 4), tar_of(&[("x", b"x")])],
        &["/x"],
    );
    let image = format!("oci:{}:t", layout.display());
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.strata()
                .args(["--json", "-q", "pull", &image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut extracted = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        extracted += json["extracted"].as_u64().unwrap();
    }
    assert_eq!(
        extracted, 3,
        "each layer extracted exactly once between the two"
    );
    env.layer_dirs_complete();
}

#[test]
fn privileged_flatten_equals_the_mounted_view_and_umoci_unpack() {
    require_tool("umoci", "umoci");
    let env = Env::new();
    let image = format!("oci:{}:latest", busybox_layout().display());
    let rootfs = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", &image, rootfs.to_str().unwrap()]),
    );
    let flat = env.path("flat");
    run_ok(
        env.strata()
            .args(["flatten", &image, flat.to_str().unwrap()]),
    );
    let mounted = manifest(&rootfs);
    assert_same(&manifest(&flat), &mounted, "flatten vs the mounted overlay");
    let bundle = env.path("umoci");
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:latest", busybox_layout().display()),
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        &mounted,
        &manifest(&bundle.join("rootfs")),
        "the mounted overlay vs umoci unpack",
    );
    // Flatten without the store (streamed) gives the same tree.
    let streamed = env.path("streamed");
    run_ok(strata().args([
        "--store",
        env.path("other-store").to_str().unwrap(),
        "flatten",
        &image,
        streamed.to_str().unwrap(),
    ]));
    assert_same(&manifest(&streamed), &mounted, "streamed flatten");
}

#[test]
fn privileged_bundle_runs_under_runc() {
    require_tool("runc", "runc");
    let env = Env::new();
    let layout = env.path("layout");
    // busybox as the base, with an entrypoint printing what the image holds.
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    let base = b.into_inner().unwrap();
    write_layout(
        &layout,
        "t",
        &[base, tar_of(&[("etc/greeting", b"hello from the bundle")])],
        &["/bin/busybox", "cat", "/etc/greeting"],
    );
    let bundle = env.path("bundle");
    run_ok(env.strata().args([
        "bundle",
        &format!("oci:{}:t", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/bin/busybox", "cat", "/etc/greeting"])
    );
    let id = format!("strata-test-{}", std::process::id());
    let out = Command::new("runc")
        .args([
            "--root",
            env.path("runc-state").to_str().unwrap(),
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the bundle"
    );
}

#[test]
fn privileged_pull_and_mount_a_docker_save_archive_with_the_pull_and_mount_binary() {
    let env = Env::new();
    let rootfs = env.path("rootfs");
    let archive = real_images_dir().join("hello-world.tar");
    let status = Command::new(env!("CARGO_BIN_EXE_pull-and-mount"))
        .env("HOME", env.path("home"))
        .arg("--store")
        .arg(env.store())
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        rootfs.join("hello").is_file(),
        "{:?}",
        std::fs::read_dir(&rootfs).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn privileged_mount_errors_a_user_will_meet_are_clear() {
    let env = Env::new();
    let image = format!("oci:{}:latest", busybox_layout().display());
    // Not pulled yet.
    let (code, stderr) =
        run_err(
            env.strata()
                .args(["mount", &image, env.path("m").to_str().unwrap()]),
        );
    assert_eq!(
        code, 3,
        "an image not in the store exits 3, as the README says"
    );
    assert!(
        stderr.contains("is not in the store") && stderr.contains("pull-and-mount"),
        "{stderr}"
    );
    // A non-empty directory.
    let full = env.path("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("x"), b"").unwrap();
    let (_, stderr) =
        run_err(
            env.strata()
                .args(["pull-and-mount", &image, full.to_str().unwrap()]),
        );
    assert!(stderr.contains("is not empty"), "{stderr}");
    // Already a mount.
    let rootfs = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", &image, rootfs.to_str().unwrap()]),
    );
    let (_, stderr) = run_err(
        env.strata()
            .args(["mount", &image, rootfs.to_str().unwrap()]),
    );
    assert!(stderr.contains("is already a mount"), "{stderr}");
    // An image that does not exist.
    let (code, stderr) = run_err(
        env.strata()
            .args(["pull", &format!("oci:{}:nope", busybox_layout().display())]),
    );
    assert_eq!(code, 3, "{stderr}");
    // umount of something strata did not mount.
    let (_, stderr) = run_err(env.strata().args(["umount", full.to_str().unwrap()]));
    assert!(stderr.contains("is not mounted"), "{stderr}");
}

#[test]
fn privileged_images_rm_and_gc() {
    let env = Env::new();
    let image = format!("oci:{}:latest", busybox_layout().display());
    run_ok(env.strata().args(["pull", &image]));
    let images = env.json(&["images"]);
    assert_eq!(images[0]["layers"], 4);
    // A live mount keeps its layers through rm + gc.
    let rootfs = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["mount", &image, rootfs.to_str().unwrap()]),
    );
    run_ok(env.strata().args(["rm", &image]));
    assert_eq!(env.json(&["gc"])["removed"].as_array().unwrap().len(), 0);
    assert!(rootfs.join("bin/busybox").exists());
    run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    let report = env.json(&["gc"]);
    assert_eq!(report["removed"].as_array().unwrap().len(), 4);
    assert!(report["freed_bytes"].as_u64().unwrap() > 1_000_000);
    assert_eq!(
        std::fs::read_dir(env.store().join("layers"))
            .unwrap()
            .count(),
        0
    );
}
