//! inspect, ls, which, diff, waste: exact answers on an image of known
//! content, agreement with the mounted rootfs, Docker-made archives, and a
//! run without root and without a store.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::util::oci::{tar_of, write_layout};
use crate::util::{busybox_layout, real_images_dir, run_err, run_ok, strata};

/// Layer 0: etc/a (10 B), etc/b (20 B), big (100 B), dir/x (5 B).
/// Layer 1: etc/a rewritten (12 B), big deleted, dir made opaque with dir/y (3 B), hl a hard link to etc/b.
fn known_image(dir: &Path) -> String {
    let l0 = tar_of(&[
        ("etc/", b""),
        ("etc/a", &[b'a'; 10]),
        ("etc/b", &[b'b'; 20]),
        ("big", &[0; 100]),
        ("dir/", b""),
        ("dir/x", b"xxxxx"),
    ]);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("etc/a", &[b'A'; 12][..]),
        (".wh.big", b""),
        ("dir/.wh..wh..opq", b""),
        ("dir/y", b"yyy"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    b.append_link(&mut h, "hl", "etc/b").unwrap();
    let l1 = b.into_inner().unwrap();
    write_layout(dir, "v1", &[l0, l1], &["/bin/sh"]);
    format!("oci:{}:v1", dir.display())
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap()
}

fn store_less() -> Command {
    let mut c = strata();
    c.args(["--store", "/nonexistent/strata-store"]);
    c
}

#[test]
fn exact_trees_diffs_and_waste_on_a_known_image() {
    let tmp = tempfile::tempdir().unwrap();
    let image = known_image(&tmp.path().join("layout"));

    assert_eq!(
        text(run_ok(store_less().args(["ls", "-R", &image]))),
        "/\n/dir\n/dir/y\n/etc\n/etc/a\n/etc/b\n/hl\n".replacen("/\n", "", 1)
    );
    assert_eq!(
        text(run_ok(store_less().args(["ls", &image, "/etc"]))),
        "a\nb\n"
    );
    assert_eq!(
        text(run_ok(store_less().args(["ls", "-l", &image, "/etc"]))),
        "-rw-r--r-- 0/0         12 2023-11-14 22:13 /etc/a\n-rw-r--r-- 0/0         20 2023-11-14 22:13 /etc/b\n"
    );
    assert_eq!(
        text(run_ok(
            store_less().args(["ls", "--layer", "1", "-R", &image])
        )),
        "/big\n/dir/.wh..wh..opq\n/dir/y\n/etc/a\n/hl\n",
        "a layer's own entries: exactly what its tar lists"
    );

    assert_eq!(
        text(run_ok(store_less().args(["diff", &image])))
            .lines()
            .filter(|l| !l.starts_with("layer"))
            .collect::<Vec<_>>(),
        [
            "A /big", "A /dir", "A /dir/x", "A /etc", "A /etc/a", "A /etc/b", "D /big", "D /dir/x",
            "A /dir/y", "M /etc/a", "A /hl"
        ]
    );
    let which: serde_json::Value = serde_json::from_slice(&run_ok(
        store_less().args(["--json", "which", &image, "/etc/a"]),
    ))
    .unwrap();
    assert_eq!(which["visible_layer"], 1);
    assert_eq!(which["history"][0]["change"], "Added");
    assert_eq!(which["history"][1]["change"], "Modified");
    let (code, stderr) = run_err(store_less().args(["which", &image, "/nope"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no layer of") && stderr.contains("/nope"),
        "{stderr}"
    );
    assert!(
        text(run_ok(store_less().args(["which", &image, "/big"])))
            .contains("/big is not in the merged tree (deleted)")
    );

    // Direct count: files in all layers 10+20+100+5 + 12+3 = 150; hidden: old etc/a 10, big 100, dir/x 5 = 115.
    let waste: serde_json::Value =
        serde_json::from_slice(&run_ok(store_less().args(["--json", "waste", &image]))).unwrap();
    assert_eq!(waste["total_bytes"], 150);
    assert_eq!(waste["wasted_bytes"], 115);
    assert!((waste["efficiency"].as_f64().unwrap() - (1.0 - 115.0 / 150.0)).abs() < 1e-9);
    assert_eq!(waste["worst"][0]["path"], "/big");
    let (code, stderr) = run_err(store_less().args(["waste", "--max-waste", "100", &image]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("wastes 115 bytes, more than --max-waste 100"),
        "{stderr}"
    );
    run_ok(store_less().args([
        "waste",
        "--max-waste",
        "115",
        "--min-efficiency",
        "0.2",
        &image,
    ]));
    let (_, stderr) = run_err(store_less().args(["waste", "--min-efficiency", "0.5", &image]));
    assert!(stderr.contains("below --min-efficiency 0.5"), "{stderr}");

    let inspect: serde_json::Value =
        serde_json::from_slice(&run_ok(store_less().args(["--json", "inspect", &image]))).unwrap();
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect["layers"][1]["whiteouts"], 1);
    assert_eq!(inspect["layers"][1]["opaque_dirs"], 1);
    assert_eq!(inspect["layers"][1]["entries"], 5);
    assert_eq!(inspect["config"]["cmd"], serde_json::json!(["/bin/sh"]));

    // Two images compared.
    let other_dir = tmp.path().join("other");
    write_layout(
        &other_dir,
        "v2",
        &[tar_of(&[
            ("etc/", b""),
            ("etc/a", &[b'a'; 10]),
            ("new", b"n"),
        ])],
        &["/bin/sh"],
    );
    let d = text(run_ok(store_less().args([
        "diff",
        &image,
        &format!("oci:{}:v2", other_dir.display()),
    ])));
    assert_eq!(
        d.lines().collect::<Vec<_>>(),
        [
            "D /dir", "D /dir/y", "M /etc/a", "D /etc/b", "D /hl", "A /new"
        ]
    );
}

/// path → "kind mode uid:gid size" of a directory on disk.
fn disk_listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let kind = if md.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if md.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let size = if kind == "file" { md.len() } else { 0 };
            let mode = if kind == "symlink" {
                0
            } else {
                md.mode() & 0o7777
            };
            out.insert(
                format!("/{}", p.strip_prefix(root).unwrap().display()),
                format!("{kind} {mode:o} {}:{} {size}", md.uid(), md.gid()),
            );
        }
    }
    out
}

fn ls_listing(json: &serde_json::Value) -> BTreeMap<String, String> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let kind = match n["kind"].as_str().unwrap() {
                "hardlink" => "file",
                k => k,
            };
            let mode = if kind == "symlink" {
                0
            } else {
                n["mode"].as_u64().unwrap()
            };
            let size = if kind == "file" {
                n["size"].as_u64().unwrap()
            } else {
                0
            };
            (
                n["path"].as_str().unwrap().to_owned(),
                format!("{kind} {mode:o} {}:{} {size}", n["uid"], n["gid"]),
            )
        })
        .collect()
}

#[test]
fn privileged_ls_of_the_merged_tree_equals_the_mounted_rootfs() {
    assert!(
        strata_layer::running_as_root(),
        "this test mounts: run as root (CI does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let image = format!("oci:{}:latest", busybox_layout().display());
    let rootfs = tmp.path().join("rootfs");
    run_ok(
        strata()
            .arg("--store")
            .arg(&store)
            .args(["pull-and-mount", &image])
            .arg(&rootfs),
    );
    let mounted = disk_listing(&rootfs);
    // From the store, and streamed without it: both equal the mount.
    let from_store: serde_json::Value = serde_json::from_slice(&run_ok(
        strata()
            .arg("--store")
            .arg(&store)
            .args(["--json", "ls", "-R", &image]),
    ))
    .unwrap();
    let streamed: serde_json::Value =
        serde_json::from_slice(&run_ok(store_less().args(["--json", "ls", "-R", &image]))).unwrap();
    run_ok(
        strata()
            .arg("--store")
            .arg(&store)
            .arg("umount")
            .arg(&rootfs),
    );
    let mut from_store = ls_listing(&from_store);
    from_store.remove("/");
    assert_eq!(from_store, mounted);
    let mut streamed = ls_listing(&streamed);
    streamed.remove("/");
    assert_eq!(
        streamed.keys().collect::<Vec<_>>(),
        mounted.keys().collect::<Vec<_>>()
    );
}

#[test]
fn docker_save_archives_inspect_with_history_aligned() {
    let archive = real_images_dir().join("imagesv11.tar");
    for n in 0..3 {
        let image = format!("docker-archive:{}:@{n}", archive.display());
        let inspect: serde_json::Value =
            serde_json::from_slice(&run_ok(store_less().args(["--json", "inspect", &image])))
                .unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&run_ok(store_less().args(["config", &image]))).unwrap();
        let non_empty: Vec<&str> = config["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
            .map(|h| h["created_by"].as_str().unwrap_or(""))
            .collect();
        let layers = inspect["layers"].as_array().unwrap();
        assert_eq!(layers.len(), non_empty.len(), "{image}");
        for (layer, created) in layers.iter().zip(non_empty) {
            assert_eq!(layer["created_by"], created, "{image}");
            assert!(layer["uncompressed_size"].as_u64().unwrap() > 0);
        }
        let listing = text(run_ok(store_less().args(["ls", "-R", &image])));
        assert!(!listing.is_empty(), "{image}");
        run_ok(store_less().args(["diff", &image]));
        run_ok(store_less().args(["waste", &image]));
    }
}

#[test]
fn inspect_ls_which_diff_work_without_root_and_without_a_store() {
    // A copy nobody may read (umoci writes index.json 0600).
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(busybox_layout())
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(tmp.path())
            .status()
            .unwrap()
            .success()
    );
    let image = format!("oci:{}:latest", layout.display());
    // The unprivileged tier runs this as nobody already; the root tier
    // drops to nobody for strata itself.
    let as_nobody = |args: &[&str]| {
        let mut cmd = if strata_layer::running_as_root() {
            let mut setpriv = Command::new("setpriv");
            setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            setpriv.arg(env!("CARGO_BIN_EXE_strata"));
            setpriv
        } else {
            Command::new(env!("CARGO_BIN_EXE_strata"))
        };
        let out = cmd
            .env("HOME", "/nonexistent")
            .env("STRATA_STORE", "/nonexistent/store")
            .args(args)
            .output()
            .expect("strata runs (as nobody, through setpriv from util-linux, under root)");
        assert!(
            out.status.success(),
            "strata {args:?} as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(as_nobody(&["inspect", &image]).contains("sha256:"));
    assert!(as_nobody(&["ls", "-R", &image]).contains("/bin/busybox"));
    assert!(as_nobody(&["which", &image, "/etc/hello.txt"]).contains("provided by layer 2"));
    assert!(as_nobody(&["diff", &image]).contains("D /data/b.txt"));
    assert!(!Path::new("/nonexistent").exists(), "nothing was written");
}
