//! The layer rules, one case at a time, through every path a rootfs can take:
//! a fresh (streamed) `flatten`, `pull-and-mount` (the overlay of the store's
//! layer directories) and `flatten` from the store, each compared with
//! `umoci unpack` of the same OCI layout (paths, types, modes, owners,
//! sizes, content, link targets, devices, xattrs, hard-link groups).
//!
//! A case is a list of layers, each a list of tar entries (`util::layer`).
//! Where umoci refuses an image, the case says what strata must do instead.
//! Cases named `r11_NN_*` are the defects of issue 11; the others cross the
//! rules of docs/whiteouts.md with symlinked parents, hard links and
//! same-layer re-creation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::util::layer::{
    TarEntry, chardev, dir, fifo, file, hardlink, layer, opaque, symlink, whiteout,
};
use crate::util::oci::write_layout;
use crate::util::store_env::{Env, is_mounted};
use crate::util::tree::{assert_same, full_manifest, manifest_with_links};
use crate::util::{require_tool, run_ok};

/// What strata must give for a case.
enum Want {
    /// umoci's tree, on every path.
    Umoci,
    /// umoci's tree, except that the mount lacks these paths: what an
    /// overlay cannot show (a real char 0:0 device is a whiteout to it).
    UmociButTheMountLacks(&'static [&'static str]),
    /// strata must refuse the image on every path with an error containing
    /// this text: umoci refuses it too, or gets it wrong (a case's doc says
    /// which, and why containerd's answer was chosen).
    Refused(&'static str),
}

/// The three trees of one image, or each path's error.
struct Paths {
    streamed: Result<BTreeMap<String, String>, String>,
    mounted: Result<BTreeMap<String, String>, String>,
    stored: Result<BTreeMap<String, String>, String>,
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn umoci(layout: &Path, bundle: &Path) -> Result<BTreeMap<String, String>, String> {
    require_tool("umoci", "umoci");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(manifest_with_links(&bundle.join("rootfs")))
    } else {
        Err(stderr_of(&out))
    }
}

fn strata_paths(env: &Env, image: &str) -> Paths {
    let streamed_dir = env.path("streamed");
    let out = crate::util::strata()
        .arg("--store")
        .arg(env.path("no-store"))
        .args(["flatten", image])
        .arg(&streamed_dir)
        .output()
        .unwrap();
    let streamed = if out.status.success() {
        Ok(manifest_with_links(&streamed_dir))
    } else {
        // A failed flatten leaves nothing of the image behind (issue 11, 17).
        let left = std::fs::read_dir(&streamed_dir).map_or(0, Iterator::count);
        assert_eq!(left, 0, "a failed flatten left {left} entries in DIR");
        Err(stderr_of(&out))
    };
    let mnt = env.path("mnt");
    let out = env
        .strata()
        .args(["pull-and-mount", image])
        .arg(&mnt)
        .output()
        .unwrap();
    let mounted = if out.status.success() {
        assert!(is_mounted(&mnt));
        // The tree digests the pull recorded from what it wrote are the ones
        // a full read of each layer gives (issue 16: no second walk).
        run_ok(env.strata().arg("fsck"));
        Ok(full_manifest(&mnt, false))
    } else {
        Err(stderr_of(&out))
    };
    let stored = if mounted.is_ok() {
        let flat = env.path("stored");
        let out = env
            .strata()
            .args(["flatten", image])
            .arg(&flat)
            .output()
            .unwrap();
        let json = env.json(&["images"]);
        assert!(
            json.to_string().contains(image),
            "the image should be in the store: {json}"
        );
        if out.status.success() {
            Ok(manifest_with_links(&flat))
        } else {
            Err(stderr_of(&out))
        }
    } else {
        Err("not pulled".to_owned())
    };
    if mounted.is_ok() {
        run_ok(env.strata().arg("umount").arg(&mnt));
    }
    Paths {
        streamed,
        mounted,
        stored,
    }
}

/// Hard-link groups cannot cross overlay layers (a link to a lower file is
/// a copy in the upper layer), so the mounted tree is compared without them.
fn without_links(tree: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tree.iter()
        .map(|(k, v)| (k.clone(), v.split(" link=").next().unwrap().to_owned()))
        .collect()
}

/// Runs one case through umoci and strata's three paths.
fn check(layers: &[Vec<TarEntry>], want: Want) {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| layer(l)).collect();
    check_tars(&tars, want);
}

/// Runs the OCI layout `make` writes (tag `t`) through umoci and strata's
/// three paths.
fn check_layout(make: &dyn Fn(&Path), want: Want) {
    let env = Env::new();
    let layout = env.path("layout");
    make(&layout);
    let image = format!("oci:{}:t", layout.display());
    let theirs = umoci(&layout, &env.path("bundle"));
    let ours = strata_paths(&env, &image);
    let (want, lacks): (Want, &[&str]) = match want {
        Want::UmociButTheMountLacks(lacks) => (Want::Umoci, lacks),
        other => (other, &[]),
    };
    match (want, theirs) {
        (Want::Umoci, Ok(theirs)) => {
            let mut theirs_mounted = without_links(&theirs);
            for path in lacks {
                assert!(
                    theirs_mounted.remove(*path).is_some(),
                    "{path} is not in umoci's tree"
                );
            }
            let tree = |name: &str, r: Result<BTreeMap<String, String>, String>| {
                r.unwrap_or_else(|e| panic!("strata's {name} failed where umoci unpacks:\n{e}"))
            };
            assert_same(
                &tree("streamed flatten", ours.streamed),
                &theirs,
                "streamed flatten vs umoci",
            );
            assert_same(
                &tree("pull-and-mount", ours.mounted),
                &theirs_mounted,
                "the mounted overlay vs umoci",
            );
            assert_same(
                &tree("flatten from the store", ours.stored),
                &theirs,
                "flatten from the store vs umoci",
            );
        }
        (Want::Umoci | Want::UmociButTheMountLacks(_), Err(e)) => {
            panic!("umoci refused a case said to unpack:\n{e}")
        }
        (Want::Refused(why), _) => {
            for (name, r) in [("streamed flatten", ours.streamed), ("pull", ours.mounted)] {
                let e = r
                    .err()
                    .unwrap_or_else(|| panic!("strata's {name} accepted what umoci refuses"));
                assert!(
                    e.contains(why),
                    "{name}: the error should say {why:?}:\n{e}"
                );
            }
        }
        (Want::UmociButTheMountLacks(_), Ok(_)) => unreachable!("mapped to Umoci above"),
    }
}

macro_rules! cases {
    ($($(#[$m:meta])* $name:ident: $want:expr, [$($layer:expr),+ $(,)?];)+) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                check(&[$($layer.to_vec()),+], $want);
            }
        )+
    };
}

cases! {
    /// docs/whiteouts.md: a whiteout deletes a lower file and a lower tree.
    privileged_rule_whiteout_deletes_lower_file_and_tree: Want::Umoci, [
        [dir("etc/"), file("etc/a", b"a"), file("etc/b", b"b"), dir("d/"), file("d/x", b"x")],
        [whiteout("etc/a"), whiteout("d")],
    ];
    /// An opaque directory hides the lower content, keeps its own.
    privileged_rule_opaque_keeps_own_content: Want::Umoci, [
        [dir("d/"), file("d/old", b"o"), dir("d/sub/"), file("d/sub/x", b"x")],
        [dir("d/"), file("d/new", b"n"), opaque("d")],
    ];
    /// `.wh.d` then `d/new` in one layer: the lower d goes, the new content stays.
    privileged_rule_delete_then_recreate: Want::Umoci, [
        [dir("d/").mode(0o700), file("d/old", b"o")],
        [whiteout("d"), dir("d/").mode(0o750), file("d/new", b"n")],
    ];
    /// An implied parent takes the lower's metadata (/tmp 1777).
    privileged_rule_implied_parent_keeps_lower_metadata: Want::Umoci, [
        [dir("tmp/").mode(0o1777).owner(0, 3), file("tmp/a", b"a")],
        [file("tmp/b", b"b")],
    ];
    /// A hard link to a lower file.
    privileged_rule_hard_link_to_a_lower_file: Want::Umoci, [
        [dir("bin/"), file("bin/busybox", b"bb").mode(0o755)],
        [hardlink("bin/sh", "bin/busybox"), hardlink("bin/ls", "bin/busybox")],
    ];
    /// Types, modes, owners, devices, fifos, xattrs survive every path.
    privileged_rule_metadata_of_every_kind: Want::Umoci, [
        [
            dir("d/").mode(0o2750).owner(1, 2),
            file("d/suid", b"s").mode(0o4755).owner(3, 4),
            file("d/x", b"x").xattr("user.k", b"v"),
            symlink("d/l", "../nowhere").owner(5, 6),
            chardev("d/null", 1, 3),
            fifo("d/p").mode(0o600),
        ],
    ];

    /// From fuzzing the writer pool: a directory entry replaced (with
    /// everything below it), then a directory at its path implied by a later
    /// entry. The new directory is not the entry's: it takes no metadata of
    /// it, though the kernel mostly gives it the old inode number (the mode
    /// came out 0700 or 0755 from run to run).
    privileged_r16_a_replaced_directory_entry_does_not_mark_the_next_one: Want::Umoci, [
        [
            dir("d/c/c/").mode(0o700),
            file("d/c", b"now a file"),
            dir("d/c/"),
            file("d/c/c/x", b"x"),
        ],
    ];
    /// Issue 11, 8: a whiteout with nothing below it is dropped (a one-layer
    /// image is a bind mount: no char 0:0 `etc/gone` may show).
    privileged_r11_08_a_bottom_layer_whiteout_hides_nothing: Want::Umoci, [
        [dir("etc/"), file("etc/keep", b"k"), whiteout("etc/gone"), opaque("etc")],
    ];
    /// Issue 11, 8: ghosts in an overlay: a bottom-layer whiteout, a whiteout
    /// inside an opaque directory of the same layer, and a parent made only
    /// to hold a whiteout.
    privileged_r11_08_whiteouts_that_hide_nothing_leave_no_ghosts: Want::Umoci, [
        [whiteout("ghost"), dir("d/"), file("d/a", b"a")],
        [opaque("d"), whiteout("d/a"), whiteout("new/deep/x"), file("top", b"t")],
    ];
    /// Issue 11, 14: duplicate directory entries: the last wins wholly.
    privileged_r11_14_the_last_duplicate_directory_entry_wins: Want::Umoci, [
        [dir("d/").mode(0o700).owner(1, 1), file("d/f", b"f"), dir("d/").mode(0o751).owner(2, 2)],
    ];
    /// Issue 11, 6: `x/` (04777) then `x -> /etc/shadow`: the directory's
    /// deferred mode must not land on the symlink's target.
    privileged_r11_06_deferred_dir_metadata_never_lands_on_a_replacement: Want::Umoci, [
        [dir("etc/"), file("etc/shadow", b"secret").mode(0o640)],
        [dir("x/").mode(0o4777), symlink("x", "/etc/shadow"), dir("b/").mode(0o6755), file("b", b"now a file")],
    ];
    /// Issue 11, 13: the root's metadata from a lower `./` entry survives a
    /// layer without one, in the mount root and in store flatten.
    privileged_r11_13_the_roots_metadata_from_a_lower_layer: Want::Umoci, [
        [dir("./").mode(0o750).owner(7, 8), file("a", b"a")],
        [file("b", b"b")],
    ];
    /// Issue 11, 9: a real char 0:0 device in a layer is a device after store flatten.
    privileged_r11_09_a_real_char_0_0_device_survives_the_store: Want::UmociButTheMountLacks(&["dev/zero0"]), [
        [dir("dev/"), chardev("dev/zero0", 0, 0)],
        [file("other", b"o")],
    ];
    /// Issue 11, 9: a directory literally named `.wh.foo` (from `.wh.foo/x`)
    /// and one named `.wh..wh..opq` are directories, not whiteouts, when read
    /// back from the store.
    privileged_r11_09_literal_whiteout_names_from_implied_directories: Want::Umoci, [
        [file("foo", b"f"), dir("p/"), file("p/keep", b"k")],
        [file(".wh.foo/x", b"x"), file("p/.wh..wh..opq/y", b"y")],
    ];
    /// Issue 11, 15: a whiteout whose name is not UTF-8.
    privileged_r11_15_a_whiteout_with_a_non_utf8_name: Want::Umoci, [
        [file(b"caf\xe9", b"c"), file("keep", b"k")],
        [whiteout_bytes(b".wh.caf\xe9")],
    ];

    /// Issue 16, 2 (files written on the pool while the tar is read on):
    /// the same file twice in a layer, a file in between: the last wins.
    privileged_r16_the_last_of_two_files_of_one_name_wins: Want::Umoci, [
        [dir("d/"), file("d/a", b"first"), file("d/b", b"b"), file("d/a", b"second").mode(0o600)],
    ];
    /// Issue 16, 2: a file replaces the directory whose files were just
    /// written, in its layer and over a lower one.
    privileged_r16_a_file_replaces_a_directory_of_files_in_flight: Want::Umoci, [
        [dir("low/"), file("low/x", b"x"), file("low/y", b"y")],
        [dir("d/"), file("d/x", b"x"), file("d/y", b"y"), file("d", b"now a file"),
         file("low", b"also a file"), file("after", b"a")],
    ];
    /// Issue 16, 2: hard links to files just written, and a whiteout and an
    /// opaque marker right after the files they concern.
    privileged_r16_links_and_whiteouts_right_after_their_files: Want::Umoci, [
        [dir("d/"), file("d/gone", b"g"), file("d/kept", b"k")],
        [dir("d/"), file("d/a", b"aaaa").mode(0o755), hardlink("d/b", "d/a"),
         whiteout("d/gone"), file("e", b"e"), hardlink("f", "e"), opaque("d")],
    ];
    /// Issue 16, 2: one file reached through a symlink made in the layer and
    /// by its real path: where it lands decides, not how it is spelled.
    privileged_r16_one_file_by_two_spellings: Want::Umoci, [
        [dir("real/"), symlink("alias", "real"), file("alias/f", b"1"), file("real/f", b"two")],
    ];
    /// Opaque markers as a layer's only entries for their directories, one
    /// inside the other: the outer stays, empty; the inner goes (umoci takes
    /// entries in order: the outer marker removed it). Found by an attack
    /// on the writer's set of touched paths, which must find `d/` (a
    /// directory resolved through the kernel) as `d`.
    privileged_r16_nested_opaque_markers_alone: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), dir("d/sub/"), file("d/sub/b", b"b")],
        [opaque("d"), opaque("d/sub")],
    ];
    /// The same, the inner marker first.
    privileged_r16_nested_opaque_markers_inner_first: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), dir("d/sub/"), file("d/sub/b", b"b")],
        [opaque("d/sub"), opaque("d"), file("d/c", b"c")],
    ];
    /// An inner marker with a file of the layer below it: the directory stays.
    privileged_r16_nested_opaque_marker_with_a_file_keeps_its_directory: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), dir("d/sub/"), file("d/sub/b", b"b")],
        [opaque("d"), opaque("d/sub"), file("d/sub/new", b"n")],
    ];
    /// An opaque marker, then a whiteout of its directory: the directory goes.
    privileged_r16_an_opaque_directory_then_whited_out_goes: Want::Umoci, [
        [dir("e/"), file("e/x", b"x")],
        [opaque("e"), whiteout("e")],
    ];
    /// The same with a whiteout below it first and a symlink elsewhere in
    /// the layer (which makes the writer resolve paths): the result does not
    /// depend on it.
    privileged_r16_whiteout_opaque_whiteout_with_an_unrelated_symlink: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), file("d/b", b"b")],
        [whiteout("d/a"), opaque("d"), whiteout("d"), symlink("zz", "nowhere")],
    ];
    /// Opaque markers whose directories a later symlink of the layer
    /// replaces (the outer one, one in between, the marked one itself, its
    /// parent): what the markers hid is not looked for through the symlink,
    /// so nothing at its destination goes (found by an attack on the
    /// marker rules above).
    privileged_r16_markers_then_a_symlink_over_the_outer_directory: Want::Umoci, [
        [dir("a/"), file("a/x", b"ax"), dir("a/b/"), file("a/b/y", b"by"), dir("c/"), file("c/q", b"cq")],
        [opaque("a"), opaque("a/b"), symlink("a", "c"), file("c/b/k", b"k")],
    ];
    privileged_r16_markers_then_a_symlink_in_between: Want::Umoci, [
        [dir("a/"), file("a/x", b"ax"), dir("a/b/"), dir("a/b/c/"), file("a/b/c/z", b"cz"), dir("c/"), file("c/q", b"cq")],
        [file("c/c/k", b"k"), opaque("a"), opaque("a/b/c"), symlink("a/b", "../c")],
    ];
    privileged_r16_a_marker_then_a_symlink_over_its_directory: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/y", b"by"), dir("c/"), file("c/q", b"cq")],
        [opaque("a/b"), symlink("a/b", "../c")],
    ];
    privileged_r16_a_marker_then_a_symlink_over_its_parent: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/y", b"by"), dir("c/"), dir("c/b/"), file("c/b/keep", b"keep")],
        [opaque("a/b"), symlink("a", "c")],
    ];
    /// Issue 16, 2: a file below a path that a file just took.
    privileged_r16_a_file_below_a_file_is_refused: Want::Refused("is not a directory"), [
        [dir("d/"), file("d/p", b"p"), file("d/p/x", b"x")],
    ];
}

/// Issue 16, 2: a layer of more files than the pool remembers at once
/// (16 Ki paths), the first file written again at the end and a directory
/// of the start replaced: forgetting what landed loses no rule.
#[test]
fn privileged_r16_more_files_than_the_pool_remembers() {
    let mut entries = vec![dir("many/"), dir("early/"), file("early/x", b"x")];
    for i in 0..20_000 {
        entries.push(file(format!("many/f{i:05}"), format!("{i}").as_bytes()));
    }
    entries.push(file("many/f00000", b"written again"));
    entries.push(file("early", b"a file now"));
    check(&[entries], Want::Umoci);
}

fn whiteout_bytes(name: &[u8]) -> TarEntry {
    file(name, b"")
}

/// Runs a case given as raw layer tars (headers no builder writes).
fn check_tars(tars: &[Vec<u8>], want: Want) {
    check_layout(
        &|layout: &Path| write_layout(layout, "t", tars, &["/bin/sh"]),
        want,
    );
}

/// A tar of one GNU-magic header whose ustar `prefix` field holds `prefix`
/// (so the atime/ctime fields are not numbers), as a Perl module tarball and
/// containerd's prefix-header case have them.
fn gnu_header_with_prefix(prefix: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.as_mut_bytes()[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// A char device whose major number is written base-256 as `major`.
fn device_with_base256_major(name: &str, major: i64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Char);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let field = &mut h.as_mut_bytes()[329..337];
    field.copy_from_slice(&major.to_be_bytes());
    field[0] |= 0x80;
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn privileged_r11_22_the_ustar_prefix_behind_gnu_magic_is_read() {
    check_tars(
        &[
            layer(&[dir("usr/"), file("usr/keep", b"k")]),
            gnu_header_with_prefix(
                "usr/share/perl5/blib/man3",
                "Plack::Middleware::Lint.3pm",
                b"manual",
            ),
        ],
        Want::Umoci,
    );
}

#[test]
fn privileged_r11_26_device_numbers_past_32_bits_are_refused() {
    for major in [1_i64 << 32, -1] {
        let tars = [device_with_base256_major("dev/big", major)];
        let env = Env::new();
        let layout = env.path("layout");
        write_layout(&layout, "t", &tars, &["/bin/sh"]);
        let image = format!("oci:{}:t", layout.display());
        let ours = strata_paths(&env, &image);
        for (name, r) in [("streamed flatten", ours.streamed), ("pull", ours.mounted)] {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{name} accepted major {major}"));
            assert!(
                e.contains("dev/big") && e.contains("32 bits"),
                "{name}: the error should name the entry and the limit:\n{e}"
            );
        }
    }
}

/// Issue 11, 1: `umoci insert` 0.4.7 writes a layer without the end blocks
/// and without the last entry's padding; umoci, containerd and Go read it.
#[test]
fn privileged_r11_01_a_layer_without_end_blocks_from_umoci_insert() {
    require_tool("umoci", "umoci");
    check_layout(
        &|layout: &Path| {
            write_layout(
                layout,
                "t",
                &[layer(&[dir("opt/"), file("opt/old", b"old")])],
                &["/bin/sh"],
            );
            let src = layout.with_file_name("insert-src");
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("new"), b"an odd length: 27 bytes...").unwrap();
            run_ok(
                Command::new("umoci")
                    .args(["insert", "--opaque", "--image"])
                    .arg(format!("{}:t", layout.display()))
                    .arg(&src)
                    .arg("/opt"),
            );
        },
        Want::Umoci,
    );
}

cases! {
    /// Issue 11, 5: a PAX uid past 2^32-1 is refused, never made root.
    privileged_r11_05_a_pax_uid_past_32_bits_is_refused: Want::Refused("uid"), [
        [file("suid", b"s").mode(0o4755).owner(1 << 32, 0)],
    ];
    /// Issue 11, 7: `lib -> usr/lib` below, `lib/libnew.so` above: the file
    /// lands in usr/lib, and /lib stays the symlink (merged /usr).
    privileged_r11_07_a_layer_writing_through_a_lower_symlinked_parent: Want::Umoci, [
        [dir("usr/"), dir("usr/lib/"), file("usr/lib/libc.so", b"c"), file("usr/lib/old.so", b"o"), symlink("lib", "usr/lib")],
        [file("lib/libnew.so", b"new"), whiteout("lib/old.so"), dir("lib/sub/").mode(0o700), file("lib/sub/x", b"x")],
    ];
    /// Issue 11, 7: an absolute symlinked parent, two levels deep.
    privileged_r11_07_an_absolute_symlinked_parent_two_levels_deep: Want::Umoci, [
        [dir("usr/"), dir("usr/lib/"), dir("usr/lib/x86/"), symlink("lib", "/usr/lib")],
        [file("lib/x86/libnew.so", b"new")],
    ];
    /// Issue 11, 10: an implied directory does not take the metadata of a
    /// path a middle layer deleted (`.wh.a`), or hid (`.wh.d` + `d/new`).
    privileged_r11_10_an_implied_dir_after_a_middle_layer_deleted_it: Want::Umoci, [
        [dir("a/"), dir("a/b/").mode(0o700).owner(5, 5), dir("d/"), dir("d/e/").mode(0o711).owner(6, 6)],
        [whiteout("a"), whiteout("d"), file("d/new", b"n")],
        [file("a/b/x", b"x"), file("d/e/y", b"y")],
    ];
    /// Issue 11, 10: a hard link to a lower file an opaque directory hid fails as umoci's does.
    privileged_r11_10_a_link_to_a_file_an_opaque_dir_hid: Want::Refused("link"), [
        [dir("d/"), file("d/f", b"secret")],
        [dir("d/"), opaque("d")],
        [hardlink("x", "d/f")],
    ];
    /// Issue 11, 11: `.wh.d` then `d/e/new` in one layer.
    privileged_r11_11_whiteout_then_a_deeper_recreation: Want::Umoci, [
        [dir("d/"), file("d/old", b"o"), dir("d/e/"), file("d/e/old", b"o")],
        [whiteout("d"), file("d/e/new", b"n")],
    ];
    /// Issue 11, 11: a link to a lower file, then a regular file of the same name.
    privileged_r11_11_a_link_then_a_file_of_the_same_name: Want::Umoci, [
        [file("f", b"lower")],
        [hardlink("l", "f"), file("l", b"own")],
    ];
    /// Issue 11, 11: a link to a link whose target is a lower file.
    privileged_r11_11_a_link_to_a_link_to_a_lower_file: Want::Umoci, [
        [file("f", b"lower")],
        [hardlink("l1", "f"), hardlink("l2", "l1")],
    ];
    /// Issue 11, 12: a parent that is a symlink to a missing directory.
    privileged_r11_12_a_symlinked_parent_to_a_missing_dir: Want::Umoci, [
        [dir("opt/"), symlink("link", "/opt/x"), file("link/f", b"f")],
    ];
    /// Issue 11, 12: `a -> ..` then `a/a/f`, in one layer and across two.
    privileged_r11_12_a_symlink_to_dotdot: Want::Umoci, [
        [symlink("a", ".."), file("a/a/f", b"f")],
    ];
    privileged_r11_12_a_lower_symlink_to_dotdot: Want::Umoci, [
        [symlink("a", "..")],
        [file("a/a/f", b"f"), file("a/g", b"g")],
    ];
    /// Issue 11, 12: the symlink to a missing directory is in a lower layer.
    privileged_r11_12_a_lower_symlink_to_a_missing_dir: Want::Umoci, [
        [dir("opt/"), symlink("link", "/opt/x")],
        [file("link/f", b"f")],
    ];
    /// Issue 11, 16: `a -> real`, `real/.wh..wh..opq`, `a/b`: the opaque
    /// deletes only the lower content of real, not the layer's own b.
    privileged_r11_16_an_opaque_keeps_what_the_layer_wrote_through_a_symlink: Want::Umoci, [
        [dir("real/"), file("real/old", b"o")],
        [symlink("a", "real"), opaque("real"), file("a/b", b"b")],
    ];
    /// Issue 11, 23: an opaque marker at the layer root hides every lower root entry.
    privileged_r11_23_an_opaque_marker_at_the_layer_root: Want::Umoci, [
        [dir("etc/"), file("etc/a", b"a"), file("top", b"t"), dir("keep/"), file("keep/old", b"o")],
        [opaque(""), dir("keep/"), file("keep/new", b"n"), file("fresh", b"f")],
    ];
    /// Issue 11, 24: a hard link whose target goes through a symlink of the same layer.
    privileged_r11_24_a_link_target_through_a_same_layer_symlink: Want::Umoci, [
        [dir("s/"), file("s/f", b"stale lower file")],
        [dir("real/"), file("real/f", b"own"), whiteout("s"), symlink("s", "real"), hardlink("l", "s/f")],
    ];
    /// Issue 11, 25: a hard link to a symlink stays one inode.
    privileged_r11_25_a_hard_link_to_a_symlink: Want::Umoci, [
        [symlink("sym", "target"), hardlink("sym2", "sym")],
    ];
    /// Issue 11, 25: a hard link to a symlink of a lower layer.
    privileged_r11_25_a_hard_link_to_a_lower_symlink: Want::Umoci, [
        [symlink("sym", "target")],
        [hardlink("sym2", "sym")],
    ];
}

/// Issue 11, 27: a later layer that deletes a child (or adds one) does not
/// change the parent's mtime: umoci restores it from the layer that set it,
/// and so do strata's three paths.
#[test]
fn privileged_r11_27_a_parents_mtime_survives_a_later_layers_changes() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let layout = env.path("layout");
    let tars = [
        layer(&[
            dir("d/").mtime(1_111_111_111),
            file("d/x", b"x"),
            dir("e/").mtime(1_222_222_222),
            dir("f/").mtime(1_333_333_333),
            file("f/old", b"o"),
        ]),
        layer(&[whiteout("d/x"), file("e/new", b"n"), opaque("f")]),
    ];
    write_layout(&layout, "t", &tars, &["/bin/sh"]);
    let image = format!("oci:{}:t", layout.display());
    umoci(&layout, &env.path("bundle")).unwrap();
    let mtimes = |root: &Path| -> Vec<i64> {
        ["d", "e", "f"]
            .iter()
            .map(|p| std::fs::metadata(root.join(p)).unwrap().mtime())
            .collect()
    };
    let theirs = mtimes(&env.path("bundle/rootfs"));
    assert_eq!(theirs, [1_111_111_111, 1_222_222_222, 1_333_333_333]);
    run_ok(
        crate::util::strata()
            .arg("--store")
            .arg(env.path("no-store"))
            .args(["flatten", &image])
            .arg(env.path("streamed")),
    );
    assert_eq!(mtimes(&env.path("streamed")), theirs, "streamed flatten");
    run_ok(
        env.strata()
            .args(["pull-and-mount", &image])
            .arg(env.path("mnt")),
    );
    assert_eq!(mtimes(&env.path("mnt")), theirs, "the mount");
    run_ok(
        env.strata()
            .args(["flatten", &image])
            .arg(env.path("stored")),
    );
    assert_eq!(
        mtimes(&env.path("stored")),
        theirs,
        "flatten from the store"
    );
    run_ok(env.strata().arg("umount").arg(env.path("mnt")));
}

/// Issue 11, 3: a PAX sparse file (GNU tar `--sparse --format=posix`,
/// GNU.sparse 1.0) is restored under its own name, holes as holes.
#[test]
fn privileged_r11_03_a_pax_sparse_file_is_restored_with_its_holes() {
    use std::os::unix::fs::MetadataExt;
    let src = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(src.path().join("sparse")).unwrap();
    for i in 0..8u64 {
        std::os::unix::fs::FileExt::write_at(&file, b"data", i << 20).unwrap();
    }
    file.set_len(9 << 20).unwrap();
    drop(file);
    std::fs::write(src.path().join("plain"), b"plain").unwrap();
    let out = Command::new("tar")
        .args([
            "--sparse",
            "--format=posix",
            "--owner=0",
            "--group=0",
            "-cf",
            "-",
            "-C",
        ])
        .arg(src.path())
        .args(["sparse", "plain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "GNU tar: {}", stderr_of(&out));
    assert!(
        out.stdout.windows(13).any(|w| w == b"GNUSparseFile"),
        "GNU tar wrote no PAX sparse entry"
    );
    let tars = [out.stdout];
    check_tars(&tars, Want::Umoci);
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(&layout, "t", &tars, &["/bin/sh"]);
    let flat = env.path("flat");
    run_ok(
        env.strata()
            .arg("flatten")
            .arg(format!("oci:{}:t", layout.display()))
            .arg(&flat),
    );
    let md = std::fs::metadata(flat.join("sparse")).unwrap();
    assert_eq!(md.len(), 9 << 20);
    assert!(
        md.blocks() * 512 < 1 << 20,
        "the holes were written out: {} blocks",
        md.blocks()
    );
}

/// Issue 11, 18: a path of 4 000 bytes inside a layer (legal: the kernel
/// limits a path given to it at once, not a tree's depth) extracts, its tree
/// digest is recorded and checked, and one too long for the kernel fails
/// with an error line that stays readable.
#[test]
fn privileged_r11_18_kilobyte_paths_and_readable_errors() {
    let deep = |total: usize| -> String {
        let mut p = String::new();
        while p.len() + 101 < total {
            p.push_str(&"d".repeat(99));
            p.push('/');
        }
        p.push_str("file");
        p
    };
    let env = Env::new();
    let layout = env.path("layout");
    write_layout(
        &layout,
        "t",
        &[layer(&[file(deep(4060), b"deep")])],
        &["/bin/sh"],
    );
    let image = format!("oci:{}:t", layout.display());
    run_ok(env.strata().args(["pull", &image]));
    run_ok(env.strata().arg("fsck"));
    let flat = env.path("flat");
    run_ok(env.strata().args(["flatten", &image]).arg(&flat));

    let env = Env::new();
    let layout = env.path("layout");
    write_layout(
        &layout,
        "t",
        &[layer(&[file(deep(5000), b"deep")])],
        &["/bin/sh"],
    );
    let image = format!("oci:{}:t", layout.display());
    let (_, stderr) = crate::util::run_err(env.strata().args(["pull", &image]));
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 600, "an error line of {longest} bytes:\n{stderr}");
    assert!(
        stderr.contains("bytes)"),
        "the path is shortened, with its length: {stderr}"
    );
}

/// Issue 11, 21: a layer 1500 directories deep under a descriptor limit of
/// 256 (below the common 1024): pull, flatten from the store, fsck, a
/// streamed flatten whose second layer whites the tree out, rm and gc all
/// work, and the store still opens afterwards.
#[test]
fn privileged_r11_21_a_tree_deeper_than_the_descriptor_limit() {
    let env = Env::new();
    let mut deep = Vec::new();
    let mut path = String::new();
    for _ in 0..1500 {
        path.push_str("d/");
        deep.push(dir(path.as_str()));
    }
    deep.push(file(format!("{path}f"), b"bottom"));
    let layout = env.path("layout");
    write_layout(
        &layout,
        "t",
        &[layer(&deep), layer(&[whiteout("d"), file("top", b"t")])],
        &["/bin/sh"],
    );
    let image = format!("oci:{}:t", layout.display());
    let limited_in = |store: &Path, args: &[&str]| {
        let mut c = Command::new("bash");
        c.args(["-c", "ulimit -n 256 && exec \"$@\"", "bash"])
            .arg(env!("CARGO_BIN_EXE_strata"))
            .arg("--store")
            .arg(store)
            .args(args);
        c
    };
    let store = env.store();
    let limited = |args: &[&str]| limited_in(&store, args);
    run_ok(&mut limited(&["pull", &image]));
    let flat = env.path("flat");
    run_ok(&mut limited(&["flatten", &image, flat.to_str().unwrap()]));
    assert!(flat.join("top").exists() && !flat.join("d").exists());
    run_ok(&mut limited(&["fsck"]));
    run_ok(&mut limited(&["ls", "-R", &image]));
    let streamed = env.path("streamed");
    run_ok(&mut limited_in(
        &env.path("other"),
        &["flatten", &image, streamed.to_str().unwrap()],
    ));
    assert!(streamed.join("top").exists() && !streamed.join("d").exists());
    run_ok(&mut limited(&["rm", &image]));
    run_ok(&mut limited(&["gc"]));
    run_ok(&mut limited(&["images"]));
    run_ok(&mut limited(&["fsck"]));
}

fn merged_usr() -> Vec<TarEntry> {
    vec![
        dir("usr/"),
        dir("usr/lib/"),
        file("usr/lib/old", b"o"),
        symlink("lib", "usr/lib"),
    ]
}

/// A valid v2 file capability (CAP_NET_RAW), as `setcap cap_net_raw+ep` writes it.
const CAP_NET_RAW: &[u8] = &[
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

cases! {
    /// Found by attacking the fix-up: an opaque marker written through a
    /// lower symlink marks where the symlink leads.
    privileged_attack_an_opaque_marker_through_a_lower_symlink: Want::Umoci, [
        merged_usr(),
        [opaque("lib"), file("lib/new", b"n")],
    ];
    /// Delete then recreate over a lower symlink: a real directory.
    privileged_attack_delete_then_recreate_over_a_lower_symlink: Want::Umoci, [
        merged_usr(),
        [whiteout("lib"), file("lib/x", b"x")],
    ];
    /// A whiteout of a child, then of its parent: the parent goes.
    privileged_attack_a_whiteout_of_a_child_then_of_the_parent: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), file("d/b", b"b")],
        [whiteout("d/a"), whiteout("d")],
    ];
    /// A whiteout, then a hard link to what it deleted: refused, as umoci's.
    privileged_attack_a_link_to_a_file_the_layer_whited_out: Want::Refused("link"), [
        [file("f", b"f")],
        [whiteout("f"), hardlink("l", "f")],
    ];
    /// Whiteouts and opaque markers over a lower file, or over nothing,
    /// make no directory.
    privileged_attack_markers_over_a_lower_file_or_nothing_make_no_directory: Want::Umoci, [
        [file("d", b"file"), file("e", b"file"), dir("opt/"), symlink("link", "/opt/x")],
        [whiteout("d/x"), opaque("e"), opaque("new"), opaque("link")],
    ];
    /// A symlink loop below, then a name through it: refused, as umoci's.
    privileged_attack_a_lower_symlink_loop: Want::Refused("link"), [
        [symlink("x", "y"), symlink("y", "x")],
        [file("x/f", b"f")],
    ];
    /// A lower symlink to a file, then a name through it: refused, as umoci's.
    privileged_attack_a_lower_symlink_to_a_file: Want::Refused("not a directory"), [
        [file("f", b"f"), symlink("l", "f")],
        [file("l/x", b"x")],
    ];
    /// A hard link to a lower file with a file capability keeps it (chown
    /// before the xattrs).
    privileged_attack_a_link_to_a_lower_file_keeps_its_capability: Want::Umoci, [
        [dir("bin/"), file("bin/ping", b"ping").mode(0o755).xattr("security.capability", CAP_NET_RAW)],
        [hardlink("bin/ping2", "bin/ping")],
    ];
}

cases! {
    /// Found by attacking the fix-up: a link to a lower file, then a new file
    /// of the target's name (or its whiteout), in one layer: the link keeps
    /// the lower bytes in store flatten too.
    privileged_attack_a_link_to_a_lower_file_its_layer_then_replaces: Want::Umoci, [
        [file("f", b"lower"), file("a", b"a")],
        [hardlink("l", "f"), file("f", b"new content"), hardlink("z2", "a"), whiteout("a")],
    ];
}

cases! {
    /// Found by attacking the fix-up: the layer deletes a lower symlink's
    /// destination, then writes into it through the symlink.
    privileged_attack_a_symlinks_destination_whited_out_then_written_through_it: Want::Umoci, [
        merged_usr(),
        [whiteout("usr/lib"), file("lib/x", b"x")],
    ];
}

cases! {
    /// Found by attacking the fix-up: hard links whose target the same layer
    /// wrote, through a lower symlink or at the path a lower symlink leads to.
    privileged_attack_links_to_what_the_layer_wrote_around_a_lower_symlink: Want::Umoci, [
        [dir("usr/"), dir("usr/lib/"), file("usr/lib/libc.so", b"old"), symlink("lib", "usr/lib")],
        [
            file("lib/new", b"n"),
            hardlink("l1", "usr/lib/new"),
            file("usr/lib/libc.so", b"new"),
            hardlink("l2", "lib/libc.so"),
        ],
    ];
}

cases! {
    /// The rules of docs/whiteouts.md crossed with symlinked parents: a
    /// whiteout through a lower symlink deletes at its destination, and a
    /// later layer recreates the file there, through the symlink again.
    privileged_cross_whiteout_then_recreation_through_a_lower_symlink: Want::Umoci, [
        merged_usr(),
        [whiteout("lib/old")],
        [file("lib/old", b"back")],
    ];
    /// A whiteout through a lower symlink and a re-creation through it, in one layer.
    privileged_cross_whiteout_and_recreation_through_a_lower_symlink_in_one_layer: Want::Umoci, [
        merged_usr(),
        [whiteout("lib/old"), file("lib/old", b"new")],
    ];
    /// An implied directory below a lower symlink takes nothing from the
    /// symlink; the directory it leads to keeps its metadata.
    privileged_cross_implied_dirs_through_a_lower_symlink: Want::Umoci, [
        [dir("usr/").mode(0o750).owner(1, 2), dir("usr/lib/").mode(0o700).owner(3, 4), symlink("lib", "usr/lib")],
        [file("lib/sub/deep/x", b"x")],
    ];
    /// An opaque directory crossed with hard links: a link inside it to a
    /// file it holds, and a link inside it to a lower file outside it.
    privileged_cross_opaque_with_hard_links: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), file("f", b"lower f")],
        [opaque("d"), file("d/b", b"b"), hardlink("d/c", "d/b"), hardlink("d/l", "f")],
    ];
    /// A later opaque directory or whiteout over a hard link's target leaves
    /// the link outside it whole.
    privileged_cross_links_outlive_their_targets_being_hidden: Want::Umoci, [
        [dir("d/"), file("d/a", b"a"), hardlink("b", "d/a"), file("e", b"e"), hardlink("g", "e")],
        [opaque("d"), whiteout("e")],
    ];
    /// Delete then recreate, with a hard link to the new content.
    privileged_cross_delete_then_recreate_with_a_hard_link: Want::Umoci, [
        [dir("d/"), file("d/old", b"o")],
        [whiteout("d"), file("d/new", b"n"), hardlink("e", "d/new")],
    ];
    /// A directory becomes a file, then a directory again, across layers.
    privileged_cross_directory_to_file_and_back: Want::Umoci, [
        [dir("d/").mode(0o711), file("d/x", b"x")],
        [whiteout("d"), file("d", b"now a file")],
        [whiteout("d"), dir("d/").mode(0o755), file("d/y", b"y")],
    ];
    /// A file becomes a directory in one layer without a whiteout (the
    /// directory entry replaces it), then gets an opaque marker below.
    privileged_cross_file_replaced_by_a_directory_then_made_opaque: Want::Umoci, [
        [file("d", b"file"), dir("e/"), file("e/x", b"x")],
        [dir("d/"), file("d/in", b"in")],
        [opaque("d"), file("d/only", b"only"), opaque("e")],
    ];
    /// A same-layer symlink as a parent, then an opaque marker through it.
    privileged_cross_opaque_through_a_same_layer_symlink: Want::Umoci, [
        [dir("real/"), file("real/old", b"o")],
        [symlink("a", "real"), opaque("a"), file("a/new", b"n")],
    ];
    /// A lower hard-link group, one of whose names a later layer deletes and
    /// recreates as a link to another lower file.
    privileged_cross_relinking_a_name_of_a_lower_link_group: Want::Umoci, [
        [file("x", b"x"), hardlink("y", "x"), file("z", b"z")],
        [whiteout("y"), hardlink("y", "z")],
    ];
}

cases! {
    /// A whiteout through a same-layer symlink deletes at its destination.
    privileged_cross_whiteout_through_a_same_layer_symlink: Want::Umoci, [
        [dir("real/"), file("real/old", b"o"), file("real/keep", b"k")],
        [symlink("a", "real"), whiteout("a/old")],
    ];
    /// An implied directory through a same-layer symlink takes the lower's metadata.
    privileged_cross_implied_dir_through_a_same_layer_symlink: Want::Umoci, [
        [dir("real/"), dir("real/sub/").mode(0o700).owner(5, 5), file("real/sub/old", b"o")],
        [symlink("a", "real"), file("a/sub/new", b"n")],
    ];
}

cases! {
    /// A same-layer symlink to a directory only the lowers hold, written
    /// through: the lower directory keeps its metadata and its content.
    privileged_cross_writing_through_a_same_layer_symlink_to_a_lower_dir: Want::Umoci, [
        [dir("real/").mode(0o700).owner(2, 3), file("real/old", b"o")],
        [symlink("a", "real"), file("a/new", b"n")],
    ];
    /// A hard link whose target goes through a same-layer symlink to a
    /// lower directory.
    privileged_cross_a_link_through_a_same_layer_symlink_to_a_lower_file: Want::Umoci, [
        [dir("real/"), file("real/f", b"lower f")],
        [symlink("a", "real"), hardlink("l", "a/f")],
    ];
}

/// Issue 16, from an attack on the pool: without `/proc` no path can be
/// resolved through a symlink, so two spellings of one file (`lib/f` over
/// `lib -> usr/lib`, then `usr/lib/f`) cannot be told apart: every file is
/// then written in order, and the later one wins in every file, as umoci's.
#[test]
fn privileged_r16_without_proc_two_spellings_of_a_file_keep_their_order() {
    require_tool("unshare", "util-linux");
    let mut upper = Vec::new();
    for i in 0..200 {
        upper.push(file(format!("lib/f{i}"), &[b'A'; 2000]));
        upper.push(file(format!("usr/lib/f{i}"), &[b'B'; 3000]));
    }
    let env = Env::new();
    let layout = env.path("layout");
    let lower = layer(&[dir("usr/"), dir("usr/lib/"), symlink("lib", "usr/lib")]);
    write_layout(&layout, "t", &[lower, layer(&upper)], &["/bin/sh"]);
    let out = env.path("out");
    let strata = crate::util::strata();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount -l /proc && exec "$0" "$@""#)
        .arg(strata.get_program())
        .args(["--store"])
        .arg(env.path("no-store"))
        .args(["-q", "flatten"])
        .arg(format!("oci:{}:t", layout.display()))
        .arg(&out)
        .envs(strata.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .status()
        .unwrap();
    assert!(status.success(), "flatten without /proc failed");
    for i in 0..200 {
        let got = std::fs::read(out.join(format!("usr/lib/f{i}"))).unwrap();
        assert_eq!(got, vec![b'B'; 3000], "usr/lib/f{i}: the later entry wins");
    }
}

cases! {
    /// A directory over a file (or a symlink, a hard link to a lower file)
    /// of the same layer is a new directory: the file replaced the lower
    /// directory, whose content must not show through (the mount showed it).
    privileged_rule_a_directory_over_the_layers_own_file_is_new: Want::Umoci, [
        [dir("x/"), file("x/old", b"o")],
        [file("x", b"f"), dir("x/"), file("x/new", b"n")],
    ];
    privileged_rule_a_directory_over_the_layers_own_symlink_is_new: Want::Umoci, [
        [dir("x/"), file("x/old", b"o")],
        [symlink("x", "nowhere"), dir("x/")],
    ];
    privileged_rule_a_directory_over_a_link_to_a_lower_file_is_new: Want::Umoci, [
        [file("t", b"t"), dir("x/"), file("x/old", b"o")],
        [hardlink("x", "t"), dir("x/")],
    ];
    /// The layer's own directory, then a file, then the directory again:
    /// only what follows the last one stays; a whiteout in it hides nothing.
    privileged_rule_directory_file_directory_keeps_the_last: Want::Umoci, [
        [dir("x/"), file("x/old", b"o"), file("x/keep", b"k")],
        [dir("x/"), file("x/a", b"a"), file("x", b"f"), dir("x/"), file("x/new", b"n"), whiteout("x/keep")],
    ];
    /// A directory implied by a file, then replaced by a file: the file does
    /// not take the lower directory's owner and mode (the fix-up gave it
    /// them after the tree digest was taken: fsck called the fresh layer
    /// damaged).
    privileged_rule_an_implied_directory_replaced_by_a_file: Want::Umoci, [
        [dir("d/").mode(0o700).owner(1, 1), file("d/a", b"a")],
        [file("d/x", b"x"), file("d", b"f").mode(0o644)],
    ];
    /// The same for a directory made to hold a whiteout, replaced by a file
    /// or a symlink (the whiteout goes with it).
    privileged_rule_a_whiteouts_parent_replaced_by_a_file: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/y", b"y")],
        [whiteout("a/b/y"), file("a/b", b"f")],
    ];
    privileged_rule_a_whiteouts_parent_replaced_by_a_symlink: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/y", b"y"), dir("a/c/"), file("a/c/q", b"q")],
        [whiteout("a/b/y"), symlink("a/b", "c")],
    ];
    /// A whiteout or an opaque marker below a file or a whiteout of the
    /// same layer hides nothing and makes nothing (the mount refused the
    /// first, and made an empty directory of the second).
    privileged_rule_a_whiteout_below_the_layers_own_file: Want::Umoci, [
        [dir("a/")],
        [file("a/b", b"f"), whiteout("a/b/x")],
    ];
    privileged_rule_a_whiteout_and_a_marker_below_a_whiteout: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/x", b"x")],
        [whiteout("a/b"), whiteout("a/b/x"), opaque("a/b")],
    ];
    privileged_rule_a_marker_on_a_whited_out_directory: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/z", b"z")],
        [whiteout("a/b"), opaque("a/b")],
    ];
    /// Directories made only to hold whiteouts or markers inside an opaque
    /// directory of the layer go, parents included (the mount showed them
    /// empty): the opaque directory hid what they were made for.
    privileged_rule_markers_on_a_and_a_grandchild: Want::Umoci, [
        [dir("a/"), dir("a/b/"), dir("a/b/c/"), file("a/b/c/z", b"z")],
        [opaque("a"), opaque("a/b/c")],
    ];
    privileged_rule_markers_on_a_grandchild_then_a: Want::Umoci, [
        [dir("a/"), dir("a/b/"), dir("a/b/c/"), file("a/b/c/z", b"z")],
        [opaque("a/b/c"), opaque("a")],
    ];
    privileged_rule_a_whiteout_deep_inside_an_opaque_directory: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/z", b"z")],
        [opaque("a"), whiteout("a/b/c")],
    ];
    privileged_rule_a_whiteout_inside_an_opaque_directory_beside_a_file: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/c", b"c"), file("a/z", b"z")],
        [opaque("a"), whiteout("a/b/c"), file("a/b/f", b"f")],
    ];
    /// A marker through a lower symlink into a directory the layer's own
    /// opaque parent hides: the directory it led to is not made.
    privileged_rule_a_marker_through_a_lower_symlink_into_an_opaque_directory: Want::Umoci, [
        [dir("a/"), dir("a/b/"), file("a/b/z", b"z"), symlink("s", "a/b")],
        [opaque("a"), opaque("s")],
    ];
    /// All of it in one layer: a file's implied parent holding a whiteout,
    /// replaced by a file, then by a directory.
    privileged_rule_implied_whiteout_file_directory: Want::Umoci, [
        [dir("a/"), file("a/x", b"x")],
        [file("a/b/c", b"c"), whiteout("a/b/c/d"), file("a/b", b"now a file"), dir("a/b/"), file("a/b/e", b"e")],
    ];
}
