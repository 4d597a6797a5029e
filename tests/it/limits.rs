//! Running out of disk in the middle of a pull: a clear error, a store with
//! no partial layer, and a pull that succeeds once space is freed. And a
//! tree that would take descriptors by the thousand: pull and fsck stay
//! within a low descriptor limit.

use std::process::Command;

use crate::util::oci::{tar_of, write_layout};
use crate::util::{run_err, run_ok, strata};

/// A tmpfs of `mb` MiB mounted at `dir`, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path, mb: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m"),
                "strata-test",
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Self(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn incompressible(mb: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..mb << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn privileged_a_full_disk_mid_pull_fails_clearly_and_leaves_the_store_clean() {
    assert!(
        strata_layer::running_as_root(),
        "this test mounts a tmpfs: run as root (CI does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let big = incompressible(24, 7);
    write_layout(
        &layout,
        "t",
        &[
            tar_of(&[("base", b"base")]),
            tar_of(&[
                ("big/", b""),
                ("big/a", &big[..12 << 20]),
                ("big/b", &big[12 << 20..]),
            ]),
        ],
        &["/x"],
    );
    let image = format!("oci:{}:t", layout.display());
    // 40 MiB, of which a ballast file takes 26: the 24 MiB layer cannot fit.
    let fs = SmallFs::mount(&tmp.path().join("small"), 40);
    let store = fs.0.join("store");
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 26 << 20]).unwrap();

    let (code, stderr) = run_err(strata().arg("--store").arg(&store).args(["pull", &image]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("hint: no space left"), "{stderr}");
    // Nothing partial: only complete layers, no leftovers in tmp/.
    for entry in std::fs::read_dir(store.join("layers")).unwrap() {
        let dir = entry.unwrap().path();
        assert!(
            dir.join("layer.json").is_file(),
            "partial layer {}",
            dir.display()
        );
    }
    assert_eq!(
        std::fs::read_dir(store.join("tmp")).unwrap().count(),
        0,
        "the failed layer's tmp dir is removed"
    );
    assert!(
        run_ok(
            strata()
                .arg("--store")
                .arg(&store)
                .arg("--json")
                .arg("images")
        )
        .starts_with(b"[]"),
        "no image record"
    );

    // Space freed: the same store pulls it.
    std::fs::remove_file(&ballast).unwrap();
    run_ok(strata().arg("--store").arg(&store).args(["pull", &image]));
    let flat = tmp.path().join("flat");
    run_ok(
        strata()
            .arg("--store")
            .arg(&store)
            .arg("flatten")
            .arg(&image)
            .arg(&flat),
    );
    assert_eq!(
        std::fs::metadata(flat.join("big/b")).unwrap().len(),
        12 << 20
    );
    drop(fs);
}

/// Found by an attack on the tree digest's walk over both cores: a
/// directory with subdirectories too deep to list ahead kept its
/// descriptor until hashed, and the walk listed thousands of those ahead,
/// so a pull or an fsck (which then called the intact layer damaged) ran
/// out of descriptors. 400 such directories, under a limit of 128.
#[test]
fn privileged_a_tree_of_many_deep_directories_pulls_and_checks_within_128_descriptors() {
    let env = crate::util::store_env::Env::new();
    let chain = "a/".repeat(31);
    let names: Vec<String> = (0..400).map(|i| format!("{chain}d{i:03}/s/f")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let layout = env.path("layout");
    write_layout(&layout, "t", &[tar_of(&entries)], &["/bin/sh"]);
    let image = format!("oci:{}:t", layout.display());
    crate::util::require_tool("prlimit", "util-linux");
    let limited = |args: &[&str]| {
        let strata = env.strata();
        let mut cmd = Command::new("prlimit");
        cmd.arg("--nofile=128:128")
            .arg(strata.get_program())
            .args(strata.get_args())
            .args(args);
        for (key, value) in strata.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    };
    run_ok(&mut limited(&["pull", &image]));
    let out = run_ok(&mut limited(&["--json", "fsck"]));
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
}
