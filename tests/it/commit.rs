//! `strata commit`: the changes made in a writable mount become an image
//! whose rootfs is the merged view the user saw, by strata's flatten and by
//! `umoci unpack`; whose layer holds the entries `buildah commit` writes for
//! the same changes; reproducible with `SOURCE_DATE_EPOCH`; confined and
//! clear on hostile uppers; whole or absent after a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::store_env::Env;
use crate::util::tree::{assert_same, manifest_with_links};
use crate::util::{busybox_layout, debian_layout, require_tool, run_err, run_ok};

fn sh(script: &str, root: &Path) {
    run_ok(
        Command::new("sh")
            .arg("-euc")
            .arg(script)
            .arg("sh")
            .arg(root),
    );
}

/// Every kind of change a user makes in a rootfs, made under `$1`.
const CHANGES: &str = r#"
r=$1
echo new > "$r/etc/new.conf"
echo changed > "$r/etc/hostname"
rm "$r/etc/issue"
rm -rf "$r/usr/share/doc"
rm -rf "$r/media" && echo now-a-file > "$r/media"
rm "$r/etc/motd" && mkdir "$r/etc/motd" && echo inside > "$r/etc/motd/f"
rm -rf "$r/etc/apt" && mkdir "$r/etc/apt" && echo only > "$r/etc/apt/only"
chmod 600 "$r/etc/shells"
chown 1:2 "$r/etc/group"
setfattr -n user.strata.test -v yes "$r/etc/profile" 2>/dev/null || python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.strata.test", b"yes")' "$r/etc/profile"
mv "$r/etc/default" "$r/etc/default.old"
ln "$r/etc/new.conf" "$r/etc/new-link"
ln "$r/usr/bin/true" "$r/usr/bin/true-link"
ln -s /etc/new.conf "$r/etc/new-sym"
mkfifo "$r/srv/fifo"
cp "$r/usr/bin/true" "$r/usr/local/bin/suid" && chmod 4755 "$r/usr/local/bin/suid"
echo long > "$r/usr/local/$(printf 'n%.0s' $(seq 1 120))"
mknod "$r/dev/strata-null" c 1 3
truncate -s 100M "$r/var/sparse" && printf data | dd of="$r/var/sparse" bs=1 seek=5000000 conv=notrunc 2>/dev/null
"#;

fn umoci_rootfs(layout: &Path, bundle: &Path) -> BTreeMap<String, String> {
    require_tool("umoci", "umoci");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:committed", layout.display()))
            .arg(bundle),
    );
    manifest_with_links(&bundle.join("rootfs"))
}

/// The busybox test image, pulled and mounted writable at `rootfs`.
fn busybox_rw_mount(env: &Env) -> PathBuf {
    let image = format!("oci:{}:latest", busybox_layout().display());
    let root = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", "--rw", &image])
            .arg(&root),
    );
    root
}

fn commit_json(env: &Env, dir: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["commit", dir.to_str().unwrap(), name];
    args.extend_from_slice(extra);
    env.json(&args)
}

#[test]
fn privileged_a_commit_flattens_and_unpacks_to_the_merged_view_the_user_saw() {
    let env = Env::new();
    let base = debian_layout();
    let image = format!("oci:{}:latest", base.display());
    let root = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", "--rw", &image])
            .arg(&root),
    );
    sh(CHANGES, &root);
    let seen = manifest_with_links(&root);

    let out = commit_json(
        &env,
        &root,
        "registry.example/team/app:2",
        &[
            "-m",
            "every kind of change",
            "--change",
            "CMD=[\"/bin/bash\",\"-l\"]",
            "--change",
            "ENV=MODE=committed",
        ],
    );
    let name = out["name"].as_str().unwrap().to_owned();
    assert_eq!(out["layers"], 3, "{out}");
    assert!(out["whiteouts"].as_u64().unwrap() >= 2, "{out}");
    assert!(out["opaque_dirs"].as_u64().unwrap() >= 1, "{out}");
    assert!(
        out["tar_bytes"].as_u64().unwrap() < 50 << 20,
        "the sparse file's hole went into the tar: {out}"
    );

    // strata's flatten of the new image, from the store.
    let flat = env.path("flat");
    run_ok(env.strata().args(["flatten", &name]).arg(&flat));
    assert_same(
        &manifest_with_links(&flat),
        &seen,
        "strata flatten of the commit vs the merged view",
    );

    // A fresh mount of it.
    let again = env.path("again");
    run_ok(env.strata().args(["mount", &name]).arg(&again));
    let mounted = crate::util::tree::full_manifest(&again, false);
    run_ok(env.strata().arg("umount").arg(&again));
    assert_same(
        &mounted,
        &crate::util::tree::full_manifest(&root, false),
        "a mount of the commit vs the merged view",
    );

    // umoci's unpack of the image as the OCI layout `strata push` writes
    // (the base's blobs from the layout it was pulled from, the new one
    // from the store).
    let layout = env.path("layout");
    run_ok(
        env.strata()
            .args(["push", &name])
            .arg(format!("oci:{}:committed", layout.display())),
    );
    let bundle = env.path("bundle");
    assert_same(
        &umoci_rootfs(&layout, &bundle),
        &seen,
        "umoci unpack of the commit vs the merged view",
    );
    let config: serde_json::Value =
        serde_json::from_slice(&run_ok(env.strata().args(["config", &name]))).unwrap();
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/bin/bash", "-l"])
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"MODE=committed".into())
    );
    assert_eq!(
        config["history"].as_array().unwrap().last().unwrap()["created_by"],
        "every kind of change"
    );

    // The live mount stays usable; a second commit captures all changes since the base.
    sh("echo more > \"$1/etc/more\"", &root);
    let second = commit_json(&env, &root, "app:3", &[]);
    assert_eq!(second["layers"], 3);
    let flat2 = env.path("flat2");
    run_ok(env.strata().args(["flatten", "app:3"]).arg(&flat2));
    assert_same(
        &manifest_with_links(&flat2),
        &manifest_with_links(&root),
        "the second commit",
    );
    run_ok(env.strata().arg("umount").arg(&root));
    run_ok(env.strata().args(["fsck"]));
}

/// The entries of a layer tar, as (path, what) with whiteouts and opaque
/// markers named as such; the root entry left out.
fn layer_entries(blob: &Path) -> BTreeSet<String> {
    let out = run_ok(Command::new("tar").arg("-tvf").arg(blob));
    let mut set = BTreeSet::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let kind = line.chars().next().unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = fields[5]
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if path.is_empty() || path == "." {
            continue;
        }
        let kind = match kind {
            'h' | '-' => "file",
            other => match other {
                'd' => "dir",
                'l' => "symlink",
                'c' => "char",
                'b' => "block",
                'p' => "fifo",
                _ => "other",
            },
        };
        set.insert(format!("{path} {kind}"));
    }
    set
}

/// The top layer of an OCI layout's first image.
fn top_layer(layout: &Path) -> PathBuf {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    blob(&manifest["layers"].as_array().unwrap().last().unwrap()["digest"])
}

#[test]
fn privileged_buildah_commit_of_the_same_changes_writes_the_same_entries() {
    require_tool("buildah", "buildah");
    let env = Env::new();
    let base = busybox_layout();
    let image = format!("oci:{}:latest", base.display());
    // busybox has no Debian paths: the same kinds of change on its tree.
    let changes = r#"
r=$1
echo new > "$r/etc/new.conf"
echo changed > "$r/etc/hello.txt"
rm "$r/data/a.txt"
rm -rf "$r/opt/app" && mkdir "$r/opt/app" && echo only > "$r/opt/app/only"
chmod 600 "$r/etc/passwd"
ln "$r/etc/new.conf" "$r/etc/new-link"
ln -s /etc/new.conf "$r/etc/new-sym"
mkfifo "$r/tmp/fifo"
echo long > "$r/tmp/$(printf 'n%.0s' $(seq 1 120))"
"#;
    let root = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["pull-and-mount", "--rw", &image])
            .arg(&root),
    );
    sh(changes, &root);
    let out = commit_json(&env, &root, "ours:1", &["--compression", "none"]);
    let ours = layer_entries(
        &env.store().join("blobs/sha256").join(
            out["layer_digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    );
    run_ok(env.strata().arg("umount").arg(&root));

    // buildah, with its own storage, on the overlay driver (its diff is
    // overlay-aware, as strata's).
    let storage = env.path("buildah");
    let buildah = |args: &[&str]| -> String {
        let out = run_ok(
            Command::new("buildah")
                .arg("--root")
                .arg(storage.join("root"))
                .arg("--runroot")
                .arg(storage.join("run"))
                .arg("--storage-driver")
                .arg("overlay")
                .args(args)
                .env("BUILDAH_ISOLATION", "chroot"),
        );
        String::from_utf8(out).unwrap().trim().to_owned()
    };
    let ctr = buildah(&["from", "--pull-never", &image]);
    let mnt = buildah(&["mount", &ctr]);
    sh(changes, Path::new(&mnt));
    let theirs_layout = env.path("theirs");
    buildah(&[
        "commit",
        "--format",
        "oci",
        "--disable-compression",
        &ctr,
        &format!("oci:{}:latest", theirs_layout.display()),
    ]);
    buildah(&["rm", &ctr]);
    let theirs = layer_entries(&top_layer(&theirs_layout));
    for want in [
        "opt/app/.wh..wh..opq file",
        "data/.wh.a.txt file",
        "tmp/fifo fifo",
        "etc/new-sym symlink",
    ] {
        assert!(
            ours.contains(want),
            "{want} missing from strata's layer: {ours:#?}"
        );
    }
    assert_eq!(
        ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "entries only one of strata and buildah wrote (ours: {ours:#?})"
    );
}

#[test]
fn privileged_two_commits_of_one_upper_with_source_date_epoch_are_identical() {
    let env = Env::new();
    let root = busybox_rw_mount(&env);
    sh(
        "echo a > \"$1/etc/a\"; rm \"$1/etc/hello.txt\"; mkdir -p \"$1/x/y\"",
        &root,
    );
    let commit = |name: &str| {
        let out = run_ok(
            env.strata()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["--json", "commit"])
                .arg(&root)
                .args([name, "-m", "same"]),
        );
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let first = commit("repro:1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = commit("repro:2");
    for key in ["diff_id", "layer_digest", "config_digest", "digest"] {
        assert_eq!(first[key], second[key], "{key}: {first} vs {second}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&run_ok(env.strata().args(["config", "repro:1"]))).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    // Without it, the history's time differs: a different image.
    let third = commit_json(&env, &root, "repro:3", &[]);
    assert_ne!(third["digest"], first["digest"]);
    run_ok(env.strata().arg("umount").arg(&root));
}

#[test]
fn privileged_hostile_uppers_stay_confined_and_refusals_say_what_they_refuse() {
    let env = Env::new();
    let root = busybox_rw_mount(&env);
    let kept = run_ok(env.strata().args(["umount", "--keep"]).arg(&root));
    let upper = PathBuf::from(String::from_utf8(kept).unwrap().trim());
    // Written into the kept upper directly, as a hostile tool would: a
    // symlink out, a whiteout of a path no lower has.
    std::os::unix::fs::symlink("/etc/shadow", upper.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../..", upper.join("up")).unwrap();
    run_ok(
        Command::new("mknod")
            .arg(upper.join("never-there"))
            .args(["c", "0", "0"]),
    );
    let out = commit_json(&env, &upper, "hostile:1", &["--compression", "none"]);
    let blob = env.store().join("blobs/sha256").join(
        out["layer_digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let entries = layer_entries(&blob);
    assert!(
        entries.contains("evil symlink") && entries.contains("up symlink"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| !e.starts_with('/') && !e.contains("..")),
        "{entries:?}"
    );
    let flat = env.path("flat");
    run_ok(env.strata().args(["flatten", "hostile:1"]).arg(&flat));
    assert_eq!(
        std::fs::read_link(flat.join("evil")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(!flat.join("never-there").exists());

    // A redirect (what redirect_dir=on writes) is refused, naming it.
    std::fs::create_dir(upper.join("moved")).unwrap();
    rustix::fs::setxattr(
        upper.join("moved"),
        "trusted.overlay.redirect",
        b"/data",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (code, err) = run_err(env.strata().arg("commit").arg(&upper).arg("hostile:2"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("moved")
            && err.contains("trusted.overlay.redirect")
            && err.contains("redirect_dir"),
        "{err}"
    );
    // Nothing of the refused commit is left; the store is clean.
    run_ok(env.strata().arg("fsck"));
    assert!(
        std::fs::read_dir(env.store().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let (_, err) = run_err(env.strata().args(["inspect", "hostile:2"]));
    assert!(err.contains("hostile:2"), "{err}");

    // A damaged kept blob (the only copy of the layer's tar) is found.
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let fsck = env.strata().arg("fsck").output().unwrap();
    let said =
        String::from_utf8_lossy(&fsck.stdout).into_owned() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(!fsck.status.success(), "{said}");
    assert!(
        said.contains(blob.file_name().unwrap().to_str().unwrap()) && said.contains("hash"),
        "{said}"
    );
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();

    // A read-only mount or a plain directory is not something to commit.
    let ro = env.path("ro");
    run_ok(env.strata().args(["mount", "hostile:1"]).arg(&ro));
    let (_, err) = run_err(env.strata().arg("commit").arg(&ro).arg("x:1"));
    assert!(err.contains("read-only"), "{err}");
    run_ok(env.strata().arg("umount").arg(&ro));
    let plain = env.path("plain");
    std::fs::create_dir(&plain).unwrap();
    let (_, err) = run_err(env.strata().arg("commit").arg(&plain).arg("x:1"));
    assert!(err.contains("neither a writable strata mount"), "{err}");
}

#[test]
fn privileged_kill_9_during_commit_leaves_the_store_clean_and_the_next_commit_succeeds() {
    let env = Env::new();
    let root = busybox_rw_mount(&env);
    // Enough to take a while: 3000 small files and 48 MB of noise.
    sh(
        "mkdir \"$1/many\"; for i in $(seq 1 3000); do echo $i > \"$1/many/$i\"; done; head -c 48000000 /dev/urandom > \"$1/noise\"",
        &root,
    );
    std::fs::set_permissions(root.join("noise"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    for round in 0..8 {
        let mut child = env
            .strata()
            .arg("commit")
            .arg(&root)
            .arg(format!("killed:{round}"))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(20..900)));
        let _ = child.kill();
        let _ = child.wait();
        run_ok(env.strata().arg("fsck"));
        env.layer_dirs_complete();
        // Whatever name exists names a whole image.
        if let Ok(out) = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--store")
            .arg(env.store())
            .args(["flatten", &format!("killed:{round}")])
            .arg(env.path(&format!("f{round}")))
            .output()
            && out.status.success()
        {
            assert!(env.path(&format!("f{round}")).join("noise").is_file());
        }
    }
    let out = commit_json(&env, &root, "after:1", &[]);
    let flat = env.path("after");
    run_ok(env.strata().args(["flatten", "after:1"]).arg(&flat));
    assert_eq!(
        std::fs::read_dir(flat.join("many")).unwrap().count(),
        3000,
        "{out}"
    );
    run_ok(env.strata().arg("umount").arg(&root));
    run_ok(env.strata().arg("gc"));
    run_ok(env.strata().arg("fsck"));
}

#[test]
fn privileged_what_commit_refuses_it_refuses_naming_it_and_leaves_nothing() {
    let env = Env::new();
    let root = busybox_rw_mount(&env);
    let nothing_left = |env: &Env| {
        run_ok(env.strata().arg("fsck"));
        assert!(
            std::fs::read_dir(env.store().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            std::fs::read_dir(env.store().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
        );
    };
    // Names and settings are refused before anything is written.
    for (name, env_value, want) in [
        (
            "app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            None,
            "digest",
        ),
        ("oci:/tmp/somewhere:t", None, "registry-style name"),
        ("app:1", Some("253402300800"), "SOURCE_DATE_EPOCH"),
        ("app:1", Some("-5"), "SOURCE_DATE_EPOCH"),
    ] {
        let mut cmd = env.strata();
        cmd.arg("commit").arg(&root).arg(name);
        if let Some(v) = env_value {
            cmd.env("SOURCE_DATE_EPOCH", v);
        }
        let (code, err) = run_err(&mut cmd);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{name}: {err}"
        );
        nothing_left(&env);
    }
    // A file named like a whiteout cannot be in any layer: refused, named.
    sh("echo s > \"$1/etc/.wh.passwd\"", &root);
    let (code, err) = run_err(env.strata().arg("commit").arg(&root).arg("wh:1"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("etc/.wh.passwd") && err.contains("rename"),
        "{err}"
    );
    nothing_left(&env);
    sh("rm \"$1/etc/.wh.passwd\"", &root);

    // `user.overlay.opaque` set in a mount made by root is the user's own
    // xattr, which the kernel does not obey: the lower content stays.
    sh(
        "python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.overlay.opaque\", b\"y\")' \"$1/data\"",
        &root,
    );
    assert!(root.join("data/a.txt").exists());
    commit_json(&env, &root, "xattr:1", &[]);
    let flat = env.path("flat");
    run_ok(env.strata().args(["flatten", "xattr:1"]).arg(&flat));
    assert!(
        flat.join("data/a.txt").is_file(),
        "the lower data/a.txt was hidden"
    );

    // The image under a kept upper cannot lose its last name.
    let kept = run_ok(env.strata().args(["umount", "--keep"]).arg(&root));
    let upper = String::from_utf8(kept).unwrap().trim().to_owned();
    let base = format!("oci:{}:latest", busybox_layout().display());
    let (code, err) = run_err(env.strata().args(["rm", &base]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&upper), "{err}");
    run_ok(env.strata().arg("gc"));
    commit_json(&env, Path::new(&upper), "from-kept:1", &[]);
}
