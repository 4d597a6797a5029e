//! The store's promises under damage, kills and concurrency, checked with
//! `strata fsck`: a changed byte is found, kill -9 at random points of pull,
//! mount, umount, rm and gc leaves a store fsck finds clean and the next
//! command works, and processes racing on one store all finish cleanly.
//!
//! The random choices are seeded: a failure prints its seed, and
//! `STRATA_TEST_SEED=N` replays it.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::oci::{big_layer, tar_of, write_layout};
use crate::util::store_env::{Env, is_mounted};
use crate::util::{run_err, run_ok};

fn seed() -> u64 {
    std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
}

/// An OCI layout of three layers (two of 16 MiB) plus a second image that
/// shares its two bottom layers.
fn images(env: &Env) -> (String, String) {
    let base = [big_layer(16, 11), big_layer(16, 12)];
    let a = env.path("layout-a");
    write_layout(
        &a,
        "t",
        &[base[0].clone(), base[1].clone(), tar_of(&[("etc/a", b"a")])],
        &["/bin/sh"],
    );
    let b = env.path("layout-b");
    write_layout(
        &b,
        "t",
        &[
            base[0].clone(),
            base[1].clone(),
            tar_of(&[("etc/b", b"b"), ("big/.wh.blob", b"")]),
        ],
        &["/bin/sh"],
    );
    (
        format!("oci:{}:t", a.display()),
        format!("oci:{}:t", b.display()),
    )
}

/// Runs `strata fsck` and requires a clean report.
fn fsck_clean(env: &Env, context: &str) {
    let out = env.strata().args(["--json", "fsck"]).output().unwrap();
    assert!(
        out.status.success(),
        "fsck after {context} is not clean:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "after {context}");
}

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn privileged_fsck_finds_a_changed_byte_a_changed_mode_and_a_dangling_name_and_repair_lets_a_pull_restore()
 {
    let env = Env::new();
    let (image, _) = images(&env);
    run_ok(env.strata().args(["pull", &image]));
    fsck_clean(&env, "a pull");
    let chain = std::fs::read_dir(env.store().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|c| {
            env.store()
                .join("layers")
                .join(c)
                .join("diff/big/blob")
                .is_file()
        })
        .expect("a layer holding big/blob");
    let diff = env.store().join("layers").join(&chain).join("diff");

    // One byte of 16 MiB, same size, same mtime.
    let blob = diff.join("big/blob");
    let mtime = std::fs::metadata(&blob).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[9 << 20] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&blob).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let (code, stderr) = run_err(env.strata().arg("fsck"));
    assert_eq!(code, 1, "{stderr}");
    let out = env.strata().arg("fsck").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&chain) && stdout.contains("differ from what was extracted"),
        "fsck names the layer: {stdout}"
    );
    assert!(stderr.contains("fsck --repair"), "{stderr}");

    // A name whose image record is gone.
    let refs_path = env.store().join("refs.json");
    let mut refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&refs_path).unwrap()).unwrap();
    refs["ghost:latest"] = serde_json::json!(format!("sha256:{}", "e".repeat(64)));
    std::fs::write(&refs_path, serde_json::to_vec(&refs).unwrap()).unwrap();
    let out = env.strata().arg("fsck").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ghost:latest"),
        "{}",
        output_text(&out)
    );

    // Repair removes the damaged layer and the dangling name; the image
    // record stays (its layer is missing until the next pull).
    let out = env.strata().args(["fsck", "--repair"]).output().unwrap();
    let text = output_text(&out);
    assert!(text.contains("(removed)"), "{text}");
    assert!(!diff.exists(), "the damaged layer is gone: {text}");
    let out = env.strata().arg("fsck").output().unwrap();
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("pull the image again"),
        "{text}"
    );
    let rootfs = env.path("rootfs");
    let (_, stderr) = run_err(
        env.strata()
            .args(["mount", &image, rootfs.to_str().unwrap()]),
    );
    assert!(
        stderr.contains("is not in the store") && stderr.contains("pull the image again"),
        "{stderr}"
    );
    run_ok(
        env.strata()
            .args(["pull-and-mount", &image, rootfs.to_str().unwrap()]),
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("big/blob")).unwrap().len(),
        16 << 20
    );
    run_ok(env.strata().args(["umount", rootfs.to_str().unwrap()]));
    fsck_clean(&env, "repair and a new pull");

    // A mode change is damage too.
    let etc_a = env.store().join("layers");
    let top = std::fs::read_dir(&etc_a)
        .unwrap()
        .map(|e| e.unwrap().path().join("diff/etc/a"))
        .find(|p| p.exists())
        .unwrap();
    std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = env.strata().arg("fsck").output().unwrap();
    let text = output_text(&out);
    let layer = top.parent().unwrap().parent().unwrap().parent().unwrap();
    assert!(
        !out.status.success()
            && text.contains(&layer.display().to_string())
            && text.contains("differ from what was extracted"),
        "{text}"
    );
}

#[derive(Debug, Clone, Copy)]
enum Op {
    ColdPull,
    Mount,
    Umount,
    Rm,
    Gc,
}

/// Waits for a command that may fail, as long as it fails with a message
/// (never a panic or a signal).
fn finish_cleanly(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(
        out.status.code().is_some(),
        "{what} died of a signal: {text}"
    );
    assert!(!text.contains("panicked"), "{what} panicked: {text}");
    if !out.status.success() {
        assert!(
            text.contains("error: "),
            "{what} failed without an error message: {text}"
        );
    }
    out
}

/// Kill -9 at a random moment of a random command, then: fsck is clean, the
/// command run again completes, fsck is clean. Bounded in iterations and
/// time; seeded.
#[test]
fn privileged_kill_9_at_random_points_of_pull_mount_umount_rm_and_gc_leaves_a_clean_store() {
    let env = Env::new();
    let (image, _) = images(&env);
    let rootfs = env.path("rootfs");
    let dir = rootfs.to_str().unwrap().to_owned();
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut landed = 0;
    let ops = [Op::ColdPull, Op::Mount, Op::Umount, Op::Rm, Op::Gc];
    let iterations = 40;
    // Milliseconds each command took when last run to completion.
    let mut took = [600u64, 20, 20, 20, 20];
    for i in 0..iterations {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let op = ops[rng.usize(..ops.len())];
        let context = format!(
            "iteration {i}: kill -9 during {op:?} (seed {seed}; STRATA_TEST_SEED={seed} replays)"
        );
        // Bring the store to the state the command needs.
        let mounted = is_mounted(&rootfs);
        match op {
            Op::ColdPull | Op::Gc => {
                if mounted {
                    run_ok(env.strata().args(["umount", &dir]));
                }
                let _ = env.strata().args(["rm", &image]).output();
                if matches!(op, Op::ColdPull) {
                    run_ok(env.strata().arg("gc"));
                }
            }
            Op::Mount | Op::Rm => {
                if mounted {
                    run_ok(env.strata().args(["umount", &dir]));
                }
                run_ok(env.strata().args(["pull", &image]));
            }
            Op::Umount => {
                if !mounted {
                    run_ok(env.strata().args(["pull-and-mount", &image, &dir]));
                }
            }
        }
        let args: Vec<&str> = match op {
            Op::ColdPull => vec!["pull", &image],
            Op::Mount => vec!["mount", &image, &dir],
            Op::Umount => vec!["umount", &dir],
            Op::Rm => vec!["rm", &image],
            Op::Gc => vec!["gc"],
        };
        // Somewhere within the time the command took when last completed.
        let max_delay = took[op as usize] * 5 / 4;
        let mut child = env
            .strata()
            .arg("-q")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(0..=max_delay)));
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            landed += 1;
        }
        env.layer_dirs_complete();
        fsck_clean(&env, &context);

        // The command again (or what finishes it) succeeds.
        let completing = Instant::now();
        match op {
            Op::ColdPull => {
                run_ok(env.strata().args(["pull", &image]));
            }
            Op::Mount => {
                if !is_mounted(&rootfs) {
                    run_ok(env.strata().args(["mount", &image, &dir]));
                }
                assert!(rootfs.join("etc/a").is_file(), "{context}");
            }
            Op::Umount => {
                let out = env.strata().args(["umount", &dir]).output().unwrap();
                let text = output_text(&out);
                assert!(
                    out.status.success() || text.contains("is not mounted"),
                    "{context}: {text}"
                );
                assert!(!is_mounted(&rootfs), "{context}");
                let mounts = env.json(&["mounts"]);
                assert_eq!(mounts, serde_json::json!([]), "{context}");
            }
            Op::Rm => {
                let out = env.strata().args(["rm", &image]).output().unwrap();
                let text = output_text(&out);
                assert!(
                    out.status.success() || text.contains("no image"),
                    "{context}: {text}"
                );
                let images = env.json(&["images"]);
                assert!(
                    !images.to_string().contains("layout-a"),
                    "{context}: {images}"
                );
            }
            Op::Gc => {
                run_ok(env.strata().arg("gc"));
            }
        }
        took[op as usize] = completing.elapsed().as_millis().clamp(5, 2000) as u64;
        env.layer_dirs_complete();
        fsck_clean(&env, &format!("{context}, then completing it"));
    }
    assert!(
        landed >= iterations / 4,
        "only {landed} kills landed while a command ran (seed {seed}); the test no longer tests kills"
    );
}

/// Six processes at once on one store, three rounds: pulls of two images
/// that share layers, a pull-and-mount, an rm and a gc. Each succeeds or
/// fails with a message; the store is clean after; everything still works.
#[test]
fn privileged_concurrent_pulls_mounts_rms_and_gcs_on_one_store_finish_cleanly() {
    let env = Env::new();
    let (a, b) = images(&env);
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..3 {
        let rootfs = env.path(&format!("rootfs-{round}"));
        let dir = rootfs.to_str().unwrap().to_owned();
        let commands: Vec<Vec<&str>> = vec![
            vec!["pull", &a],
            vec!["pull", &a],
            vec!["pull", &b],
            vec!["pull-and-mount", &b, &dir],
            vec!["rm", &a],
            vec!["gc"],
        ];
        let children: Vec<(String, Child)> = commands
            .iter()
            .map(|args| {
                std::thread::sleep(Duration::from_millis(rng.u64(0..20)));
                let child = env
                    .strata()
                    .arg("-q")
                    .args(args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (format!("round {round}: {args:?} (seed {seed})"), child)
            })
            .collect();
        for (what, child) in children {
            let out = finish_cleanly(child, &what);
            // Only rm may fail (the image may not be there yet).
            if !what.contains("\"rm\"") {
                assert!(out.status.success(), "{what}: {}", output_text(&out));
            }
        }
        assert!(rootfs.join("etc/b").is_file(), "round {round}");
        assert!(!rootfs.join("big/blob").exists(), "the whiteout hides it");
        env.layer_dirs_complete();
        fsck_clean(&env, &format!("round {round}"));
        run_ok(env.strata().args(["umount", &dir]));
    }
    // Everything still works on the store the races left.
    run_ok(env.strata().args(["pull", &a]));
    let flat = env.path("flat");
    run_ok(env.strata().args(["flatten", &a, flat.to_str().unwrap()]));
    assert_eq!(
        std::fs::metadata(flat.join("big/blob")).unwrap().len(),
        16 << 20
    );
    fsck_clean(&env, "the rounds");
}

/// A `mount` killed after writing its record and before mounting leaves a
/// second record of the mountpoint once the directory is mounted again (as
/// the kill loop above found at random): `umount` ends every record of the
/// mountpoint, so none is left behind as if mounted.
#[test]
fn privileged_umount_ends_every_record_of_its_mountpoint() {
    let env = Env::new();
    let (image, _) = images(&env);
    let dir = env.path("rootfs");
    run_ok(
        env.strata()
            .args(["-q", "pull-and-mount", &image])
            .arg(&dir),
    );
    // The killed mount's leftover: the same record under another id.
    let mounts = env.store().join("mounts");
    let live = std::fs::read_dir(&mounts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(live.join("mount.json")).unwrap()).unwrap();
    record["id"] = serde_json::json!("leftover");
    std::fs::create_dir(mounts.join("leftover")).unwrap();
    std::fs::write(
        mounts.join("leftover/mount.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    assert_eq!(env.json(&["mounts"]).as_array().unwrap().len(), 2);
    run_ok(env.strata().arg("umount").arg(&dir));
    assert!(!is_mounted(&dir));
    assert_eq!(env.json(&["mounts"]), serde_json::json!([]));
    fsck_clean(&env, "after umount");
}
