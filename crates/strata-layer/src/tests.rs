//! The whiteout, metadata and path-safety rules, one test per rule, on layer
//! tars built here with the `tar` crate. They create devices and `trusted.*`
//! xattrs, so they need root (as `just test` runs in CI).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Mode, Options, Summary, extract, fix_up};

fn require_root() {
    assert!(
        crate::running_as_root(),
        "these tests create device nodes and trusted.* xattrs: run them as root (CI does; locally `sudo -E just test`)"
    );
}

/// One tar entry to build.
#[derive(Clone, Copy)]
enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32, u64),
    Dir(&'a str),
    DirMode(&'a str, u32, u64),
    Sym(&'a str, &'a str),
    Link(&'a str, &'a str),
    /// A whiteout written as a directory entry (some tools do).
    DirNamed(&'a str),
    Char(&'a str, u32, u32),
    Xattr(&'a str, &'a [u8], &'a str, &'a [u8]),
    DirXattr(&'a str, &'a str, &'a [u8]),
    /// A file with these PAX xattr records, in order (a name may repeat).
    Xattrs(&'a str, &'a [u8], &'a [(&'a str, &'a [u8])]),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h
}

/// Appends with the name (and link target) written raw into the header, so
/// names the `tar` crate's builder refuses (`..`) can be made, as an attacker would.
fn append(
    b: &mut tar::Builder<Vec<u8>>,
    h: &mut tar::Header,
    name: &str,
    link: Option<&str>,
    data: &[u8],
) {
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    b.append(h, data).unwrap();
}

/// A regular file after a PAX header of these xattr records, in order.
fn file_with_xattrs(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    data: &[u8],
    pairs: &[(&str, &[u8])],
) {
    let keys: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
        .collect();
    b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
        .unwrap();
    append(
        b,
        &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
        name,
        None,
        data,
    );
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(name, data) => append(
                &mut b,
                &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
                name,
                None,
                data,
            ),
            E::FileMode(name, data, mode, mtime) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                h.set_mtime(*mtime);
                h.set_uid(1000);
                h.set_gid(1000);
                append(&mut b, &mut h, name, None, data);
            }
            E::Dir(name) | E::DirNamed(name) => append(
                &mut b,
                &mut header(tar::EntryType::Directory, 0o755, 0),
                name,
                None,
                &[],
            ),
            E::DirMode(name, mode, mtime) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                h.set_mtime(*mtime);
                append(&mut b, &mut h, name, None, &[]);
            }
            E::Sym(name, target) => append(
                &mut b,
                &mut header(tar::EntryType::Symlink, 0o777, 0),
                name,
                Some(target),
                &[],
            ),
            E::Link(name, target) => append(
                &mut b,
                &mut header(tar::EntryType::Link, 0o644, 0),
                name,
                Some(target),
                &[],
            ),
            E::Char(name, major, minor) => {
                let mut h = header(tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                append(&mut b, &mut h, name, None, &[]);
            }
            E::DirXattr(name, key, value) => {
                let key = format!("SCHILY.xattr.{key}");
                b.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                append(
                    &mut b,
                    &mut header(tar::EntryType::Directory, 0o755, 0),
                    name,
                    None,
                    &[],
                );
            }
            E::Xattrs(name, data, pairs) => file_with_xattrs(&mut b, name, data, pairs),
            E::Xattr(name, data, key, value) => {
                file_with_xattrs(&mut b, name, data, &[(key, value)]);
            }
        }
    }
    b.into_inner().unwrap()
}

fn opts(mode: Mode) -> Options {
    Options {
        mode,
        ..Options::default()
    }
}

fn layer(entries: &[E<'_>], target: &Path, mode: Mode) -> crate::Result<Summary> {
    extract(&tar_of(entries)[..], None, None, target, &opts(mode))
}

/// A listing of a tree: path → "kind mode [owner] [details] [xattrs]".
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let md = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = md.permissions().mode() & 0o7777;
            let ft = md.file_type();
            let mut desc = if ft.is_dir() {
                format!("dir {mode:o}")
            } else if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if ft.is_file() {
                format!(
                    "file {mode:o} {:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            } else if std::os::unix::fs::FileTypeExt::is_char_device(&ft) {
                format!(
                    "char {}:{}",
                    rustix::fs::major(md.rdev()),
                    rustix::fs::minor(md.rdev())
                )
            } else {
                "other".into()
            };
            if !ft.is_symlink()
                && let Ok(fd) = rustix::fs::open(
                    &path,
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW,
                    rustix::fs::Mode::empty(),
                )
            {
                for (k, v) in crate::sys::xattrs(&fd).unwrap() {
                    if !k.starts_with("security.selinux") {
                        desc.push_str(&format!(" [{k}={}]", String::from_utf8_lossy(&v)));
                    }
                }
            }
            out.insert(rel, desc);
            if ft.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn t(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const OPQ: &str = " [trusted.overlay.opaque=y]";

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------- overlay mode: each whiteout form ----------

#[test]
fn privileged_overlay_whiteout_forms() {
    require_root();
    let d = dir();
    let s = layer(
        &[
            E::Dir("a/"),
            E::File("a/.wh.gone", b""),
            E::File(".wh.top", b""),
            E::File("a/.wh..wh..opq", b""),
            E::File("a/.wh..wh..plnk", b""),
            E::File("a/kept", b"k"),
        ],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[
            ("a", &format!("dir 755{OPQ}")),
            ("a/gone", "char 0:0"),
            ("a/kept", "file 644 \"k\""),
            ("top", "char 0:0"),
        ])
    );
    // The aufs entry is tar-format noise the source drops (like a PAX header).
    assert_eq!(
        (s.whiteouts, s.opaque_dirs, s.skipped, s.entries),
        (2, 1, 0, 5)
    );
}

#[test]
fn privileged_whiteout_and_file_of_the_same_name_in_one_layer_both_orders() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let d = dir();
        layer(
            &[E::File("x", b"file first"), E::File(".wh.x", b"")],
            d.path(),
            mode,
        )
        .unwrap();
        assert_eq!(
            tree(d.path()),
            t(&[("x", "file 644 \"file first\"")]),
            "{mode:?} file then whiteout"
        );
        let d = dir();
        layer(
            &[E::File(".wh.x", b""), E::File("x", b"whiteout first")],
            d.path(),
            mode,
        )
        .unwrap();
        assert_eq!(
            tree(d.path()),
            t(&[("x", "file 644 \"whiteout first\"")]),
            "{mode:?} whiteout then file"
        );
    }
}

#[test]
fn privileged_delete_then_recreate_makes_an_opaque_directory() {
    require_root();
    let d = dir();
    layer(
        &[
            E::File(".wh.a", b""),
            E::Dir("a/"),
            E::File("a/child", b"new"),
        ],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[
            ("a", &format!("dir 755{OPQ}")),
            ("a/child", "file 644 \"new\"")
        ])
    );
    // Without a dir entry: the implied directory replaces the whiteout, opaque too.
    let d = dir();
    layer(
        &[E::File(".wh.a", b""), E::File("a/child", b"new")],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[
            ("a", &format!("dir 755{OPQ}")),
            ("a/child", "file 644 \"new\"")
        ])
    );
    // A dir of this layer whited out afterwards: it stays, lower content hidden.
    let d = dir();
    layer(
        &[
            E::Dir("a/"),
            E::File("a/child", b"mine"),
            E::File(".wh.a", b""),
        ],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[
            ("a", &format!("dir 755{OPQ}")),
            ("a/child", "file 644 \"mine\"")
        ])
    );

    // Apply mode: the lower a goes, the new content stays.
    let d = dir();
    layer(
        &[E::Dir("a/"), E::File("a/old", b"lower")],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    layer(
        &[
            E::File(".wh.a", b""),
            E::Dir("a/"),
            E::File("a/child", b"new"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[("a", "dir 755"), ("a/child", "file 644 \"new\"")])
    );
}

#[test]
fn privileged_opaque_marker_before_and_after_the_directorys_own_files() {
    require_root();
    for marker_first in [true, false] {
        let d = dir();
        layer(
            &[
                E::Dir("a/"),
                E::File("a/lower", b"l"),
                E::Dir("a/sub/"),
                E::File("a/sub/deep", b"d"),
            ],
            d.path(),
            Mode::Apply,
        )
        .unwrap();
        let mut entries = vec![E::Dir("a/"), E::File("a/mine", b"m")];
        if marker_first {
            entries.insert(1, E::File("a/.wh..wh..opq", b""));
        } else {
            entries.push(E::File("a/.wh..wh..opq", b""));
        }
        layer(&entries, d.path(), Mode::Apply).unwrap();
        assert_eq!(
            tree(d.path()),
            t(&[("a", "dir 755"), ("a/mine", "file 644 \"m\"")]),
            "marker first: {marker_first}"
        );
    }
}

#[test]
fn privileged_whiteout_of_a_directory_and_of_a_path_that_is_not_below() {
    require_root();
    let d = dir();
    layer(
        &[
            E::Dir("a/"),
            E::Dir("a/b/"),
            E::File("a/b/c", b"c"),
            E::File("keep", b"k"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    let s = layer(
        &[
            E::File(".wh.a", b""),
            E::File("x/.wh.nothing", b""),
            E::File(".wh.never", b""),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    assert_eq!(s.whiteouts, 3);
    assert_eq!(tree(d.path()), t(&[("keep", "file 644 \"k\"")]));
}

#[test]
fn privileged_nested_opaque_directories() {
    require_root();
    let d = dir();
    layer(
        &[
            E::File("a/x", b"1"),
            E::File("a/b/y", b"2"),
            E::File("a/b/c/z", b"3"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    layer(
        &[
            E::File("a/b/.wh..wh..opq", b""),
            E::File("a/b/new", b"n"),
            E::File("a/b/c/.wh..wh..opq", b""),
            E::File("a/b/c/n2", b"n2"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[
            ("a", "dir 755"),
            ("a/b", "dir 755"),
            ("a/b/c", "dir 755"),
            ("a/b/c/n2", "file 644 \"n2\""),
            ("a/b/new", "file 644 \"n\""),
            ("a/x", "file 644 \"1\""),
        ])
    );
    let o = dir();
    layer(
        &[
            E::File("a/b/.wh..wh..opq", b""),
            E::File("a/b/c/.wh..wh..opq", b""),
        ],
        o.path(),
        Mode::Overlay,
    )
    .unwrap();
    // a/b/c, made only for its marker inside the opaque a/b, hides nothing
    // and goes (umoci's a/b marker removes the lower a/b/c first).
    assert_eq!(
        tree(o.path()),
        t(&[("a", "dir 755"), ("a/b", &format!("dir 755{OPQ}"))])
    );
}

#[test]
fn privileged_whiteouts_are_recognised_by_name_whatever_their_tar_type() {
    require_root();
    let d = dir();
    layer(
        &[E::File("f", b"f"), E::File("g", b"g"), E::File("h", b"h")],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    layer(
        &[
            E::File("target", b"t"),
            E::Link(".wh.f", "target"),
            E::DirNamed(".wh.g/"),
            E::Sym(".wh.h", "target"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    assert_eq!(tree(d.path()), t(&[("target", "file 644 \"t\"")]));
}

#[test]
fn privileged_whiteouts_that_name_nothing_are_refused() {
    require_root();
    for bad in [".wh.", "a/.wh..", "a/.wh..."] {
        let d = dir();
        let err = layer(&[E::File(bad, b"")], d.path(), Mode::Overlay).unwrap_err();
        assert!(matches!(err, Error::BadEntry { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("not a valid whiteout"), "{err}");
    }
}

#[test]
fn privileged_root_entry_is_accepted_and_a_symlink_named_dot_is_refused() {
    require_root();
    let d = dir();
    layer(
        &[E::DirMode("./", 0o711, 5), E::File("./x", b"x")],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    for name in [".", "./", "a/.."] {
        let d = dir();
        let err = layer(&[E::Sym(name, "/etc")], d.path(), Mode::Apply).unwrap_err();
        assert!(
            err.to_string().contains("replace the layer's root"),
            "{name}: {err}"
        );
        assert!(std::fs::symlink_metadata(d.path()).unwrap().is_dir());
    }
}

#[test]
fn privileged_hardlink_to_a_file_that_a_later_entry_replaces_keeps_the_old_content() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let d = dir();
        layer(
            &[
                E::File("orig", b"old"),
                E::Link("link", "orig"),
                E::File("orig", b"new"),
            ],
            d.path(),
            mode,
        )
        .unwrap();
        assert_eq!(
            tree(d.path()),
            t(&[("link", "file 644 \"old\""), ("orig", "file 644 \"new\"")]),
            "{mode:?}"
        );
    }
}

#[test]
fn privileged_hardlink_to_a_lower_layers_file() {
    require_root();
    // Apply: a real link into the merged tree.
    let d = dir();
    layer(
        &[E::FileMode("bin/tool", b"ELF", 0o4755, 7)],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    layer(&[E::Link("bin/alias", "bin/tool")], d.path(), Mode::Apply).unwrap();
    let (a, b) = (
        std::fs::metadata(d.path().join("bin/alias")).unwrap(),
        std::fs::metadata(d.path().join("bin/tool")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());

    // Overlay: the layer directory gets a copy, with the target's metadata, after fix-up.
    let lower = dir();
    layer(
        &[E::FileMode("bin/tool", b"ELF", 0o4755, 7)],
        lower.path(),
        Mode::Overlay,
    )
    .unwrap();
    let upper = dir();
    let mut s = layer(
        &[
            E::Link("bin/alias", "bin/tool"),
            E::Link("bin/alias2", "bin/tool"),
        ],
        upper.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(s.fixups.lower_links.len(), 2);
    fix_up(
        upper.path(),
        &mut s.fixups,
        &[lower.path()],
        crate::Owners::of_process(),
    )
    .unwrap();
    let copy = std::fs::metadata(upper.path().join("bin/alias")).unwrap();
    assert_eq!(
        std::fs::read(upper.path().join("bin/alias")).unwrap(),
        b"ELF"
    );
    assert_eq!(
        (copy.mode() & 0o7777, copy.uid(), copy.mtime()),
        (0o4755, 1000, 7)
    );
    let copy2 = std::fs::metadata(upper.path().join("bin/alias2")).unwrap();
    assert_eq!(
        copy.ino(),
        copy2.ino(),
        "two links to one lower file stay one file"
    );
    // A link to nothing anywhere is an error naming it.
    let lonely = dir();
    let mut s = layer(&[E::Link("x", "missing")], lonely.path(), Mode::Overlay).unwrap();
    let err = fix_up(
        lonely.path(),
        &mut s.fixups,
        &[lower.path()],
        crate::Owners::of_process(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("missing is in neither this layer nor the layers below"),
        "{err}"
    );
}

#[test]
fn privileged_a_directory_entry_after_its_children_keeps_its_mode_and_mtime() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let d = dir();
        layer(
            &[E::File("d/f", b"x"), E::DirMode("d/", 0o555, 12345)],
            d.path(),
            mode,
        )
        .unwrap();
        let md = std::fs::metadata(d.path().join("d")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.mtime()), (0o555, 12345), "{mode:?}");
        assert_eq!(std::fs::read(d.path().join("d/f")).unwrap(), b"x");
    }
}

#[test]
fn privileged_an_implied_tmp_keeps_the_sticky_mode_from_below() {
    require_root();
    let lower = dir();
    layer(
        &[E::DirMode("tmp/", 0o1777, 1)],
        lower.path(),
        Mode::Overlay,
    )
    .unwrap();
    let upper = dir();
    let mut s = layer(
        &[E::File("tmp/x", b"x"), E::File("fresh/y", b"y")],
        upper.path(),
        Mode::Overlay,
    )
    .unwrap();
    assert_eq!(
        s.fixups.implied_dirs,
        vec![PathBuf::from("fresh"), PathBuf::from("tmp")]
    );
    fix_up(
        upper.path(),
        &mut s.fixups,
        &[lower.path()],
        crate::Owners::of_process(),
    )
    .unwrap();
    let mode = |p: &str| std::fs::metadata(upper.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("tmp"), 0o1777, "the merged /tmp must stay 1777");
    assert_eq!(mode("fresh"), 0o755, "with nothing below, 0755");
    // In apply mode the lower /tmp is simply kept.
    let flat = dir();
    layer(&[E::DirMode("tmp/", 0o1777, 1)], flat.path(), Mode::Apply).unwrap();
    layer(&[E::File("tmp/x", b"x")], flat.path(), Mode::Apply).unwrap();
    assert_eq!(
        std::fs::metadata(flat.path().join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn privileged_setuid_survives_chown_and_capabilities_survive_too() {
    require_root();
    let d = dir();
    let cap = [
        1u8, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    layer(
        &[
            E::FileMode("su", b"x", 0o4755, 1),
            E::Xattr("ping", b"p", "security.capability", &cap),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    let md = std::fs::metadata(d.path().join("su")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o4755, 1000, 1000)
    );
    assert!(
        tree(d.path())["ping"].contains("security.capability"),
        "{:?}",
        tree(d.path())
    );
}

#[test]
fn privileged_overlay_xattrs_injected_through_pax_are_escaped_or_dropped() {
    require_root();
    let d = dir();
    let s = layer(
        &[
            E::Xattr("f", b"f", "trusted.overlay.opaque", b"y"),
            E::Xattr("g", b"g", "user.overlay.redirect", b"/x"),
        ],
        d.path(),
        Mode::Overlay,
    )
    .unwrap();
    let listing = tree(d.path());
    assert!(
        !listing["f"].contains("[trusted.overlay.opaque"),
        "{listing:?}"
    );
    if crate::sys::kernel_at_least(6, 7) {
        assert!(
            listing["f"].contains("[trusted.overlay.overlay.opaque=y]"),
            "{listing:?}"
        );
    }
    assert!(!listing["g"].contains("overlay"), "{listing:?}");
    assert!(s.skipped >= 1);
    let a = dir();
    layer(
        &[E::Xattr("f", b"f", "trusted.overlay.opaque", b"y")],
        a.path(),
        Mode::Apply,
    )
    .unwrap();
    assert!(!tree(a.path())["f"].contains("overlay"));
}

#[test]
fn privileged_pax_size_wins_over_a_disagreeing_ustar_size() {
    require_root();
    // A PAX header saying 5 bytes before a ustar header saying 3.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("size", &b"5"[..])]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 3);
    h.set_path("f").unwrap();
    h.set_cksum();
    b.append(&h, &b"hello"[..]).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 1),
        "after",
        &b"z"[..],
    )
    .unwrap();
    let bytes = b.into_inner().unwrap();
    let d = dir();
    extract(&bytes[..], None, None, d.path(), &Options::default()).unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[("after", "file 644 \"z\""), ("f", "file 644 \"hello\"")])
    );
}

// ---------- crane's flatten regressions ----------

#[test]
fn privileged_crane_one_layer_image_holding_an_opaque_marker() {
    require_root();
    let d = dir();
    layer(
        &[
            E::Dir("a/"),
            E::File("a/.wh..wh..opq", b""),
            E::File("a/x", b"x"),
        ],
        d.path(),
        Mode::Apply,
    )
    .unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[("a", "dir 755"), ("a/x", "file 644 \"x\"")])
    );
}

#[test]
fn privileged_crane_foo_then_whiteout_then_baz_leaves_only_baz() {
    require_root();
    let d = dir();
    layer(&[E::File("a/foo", b"foo")], d.path(), Mode::Apply).unwrap();
    layer(&[E::File(".wh.a", b"")], d.path(), Mode::Apply).unwrap();
    layer(&[E::File("a/baz", b"baz")], d.path(), Mode::Apply).unwrap();
    assert_eq!(
        tree(d.path()),
        t(&[("a", "dir 755"), ("a/baz", "file 644 \"baz\"")])
    );
}

#[test]
fn privileged_crane_opaque_dir_hides_a_lower_nested_file() {
    require_root();
    let d = dir();
    layer(&[E::File("a/b/foo", b"foo")], d.path(), Mode::Apply).unwrap();
    layer(&[E::File("a/.wh..wh..opq", b"")], d.path(), Mode::Apply).unwrap();
    assert_eq!(tree(d.path()), t(&[("a", "dir 755")]));
}

// ---------- hostile layers: nothing outside the target changes ----------

/// A target directory with a canary directory beside it.
struct Arena {
    _dir: tempfile::TempDir,
    target: PathBuf,
    canary: PathBuf,
}

fn arena() -> Arena {
    let dir = dir();
    let target = dir.path().join("target");
    let canary = dir.path().join("canary");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    std::fs::write(canary.join("sub/deep"), b"deep").unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o700)).unwrap();
    Arena {
        _dir: dir,
        target,
        canary,
    }
}

impl Arena {
    fn check(&self, layers: &[&[E<'_>]], mode: Mode) {
        let before = tree(&self.canary);
        let before_mode = std::fs::metadata(&self.canary).unwrap().mode();
        for l in layers {
            let _ = layer(l, &self.target, mode);
        }
        assert_eq!(
            tree(&self.canary),
            before,
            "the canary beside the target changed ({mode:?})"
        );
        assert_eq!(
            std::fs::metadata(&self.canary).unwrap().mode(),
            before_mode,
            "the canary's mode changed"
        );
        let outside: Vec<_> = std::fs::read_dir(self.target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside.len(),
            2,
            "something appeared beside the target: {outside:?}"
        );
    }
}

#[test]
fn privileged_hostile_names_land_inside() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let a = arena();
        a.check(
            &[&[
                E::File("../canary/file", b"pwned"),
                E::File("/abs", b"a"),
                E::File("../../x", b"x"),
            ]],
            mode,
        );
        assert_eq!(
            std::fs::read(a.target.join("canary/file")).unwrap(),
            b"pwned",
            "cleaned into the target"
        );
        assert!(a.target.join("abs").exists() && a.target.join("x").exists());
    }
}

#[test]
fn privileged_hostile_symlinks_are_never_followed_out() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let a = arena();
        let canary = a.canary.to_str().unwrap().to_owned();
        // Same layer: symlink, then write through it.
        a.check(
            &[&[
                E::Sym("evil", &canary),
                E::File("evil/file", b"pwned"),
                E::File("evil/new", b"pwned"),
            ]],
            mode,
        );
        let a = arena();
        a.check(
            &[&[
                E::Sym("rel", "../canary"),
                E::File("rel/file", b"pwned"),
                E::Dir("rel/sub/"),
                E::File("rel/sub/deep", b"x"),
            ]],
            mode,
        );
        // `foo -> outside`, then a directory entry `foo`: the chmod must not go outside (CVE-2026-33056).
        let a = arena();
        a.check(
            &[&[E::Sym("foo", &canary), E::DirMode("foo/", 0o777, 1)]],
            mode,
        );
        // GHSL-2020-261: chained relative symlinks.
        let a = arena();
        a.check(
            &[&[
                E::Sym("a", "."),
                E::Sym("b", "a/../a/.."),
                E::Sym("c", "b/../../.."),
                E::Sym("d", "c/canary"),
                E::File("d/file", b"pwned"),
                E::File("c/canary/new", b"pwned"),
            ]],
            mode,
        );
        // Hard links to outside paths.
        let a = arena();
        a.check(
            &[&[
                E::Link("pw", "/etc/passwd"),
                E::Link("up", "../canary/file"),
            ]],
            mode,
        );
        assert!(std::fs::metadata(a.target.join("pw")).is_err() || mode == Mode::Overlay);
    }
    // Across layers in apply mode: the link comes from the lower layer.
    let a = arena();
    let canary = a.canary.to_str().unwrap().to_owned();
    a.check(
        &[
            &[E::Sym("evil", &canary)],
            &[
                E::File("evil/file", b"pwned"),
                E::File("evil/.wh.file", b""),
                E::File("evil/.wh..wh..opq", b""),
            ],
        ],
        Mode::Apply,
    );
    let a = arena();
    a.check(
        &[
            &[E::Sym("up", "..")],
            &[
                E::File("up/canary/.wh.file", b""),
                E::File("up/canary/.wh..wh..opq", b""),
                E::File("up/.wh.canary", b""),
            ],
        ],
        Mode::Apply,
    );
}

#[test]
fn privileged_hostile_whiteouts_stay_inside() {
    require_root();
    for mode in [Mode::Overlay, Mode::Apply] {
        let a = arena();
        a.check(
            &[&[
                E::File("../.wh.canary", b""),
                E::File("../canary/.wh.file", b""),
                E::File("/../canary/.wh..wh..opq", b""),
            ]],
            mode,
        );
    }
}

#[test]
fn privileged_device_nodes_are_made_inside_as_root() {
    require_root();
    let a = arena();
    a.check(
        &[&[
            E::Char("dev/null", 1, 3),
            E::Char("dev/../../canary/evil", 1, 3),
        ]],
        Mode::Apply,
    );
    assert_eq!(tree(&a.target)["dev/null"], "char 1:3");
    assert_eq!(tree(&a.target)["canary/evil"], "char 1:3");
}

#[test]
fn privileged_a_decompression_bomb_stops_at_the_limit() {
    require_root();
    let tar = tar_of(&[E::File("zeros", &vec![0u8; 4 << 20])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let bomb = gz.finish().unwrap();
    let d = dir();
    let options = Options {
        max_bytes: 1 << 20,
        ..Options::default()
    };
    let err = extract(&bomb[..], None, None, d.path(), &options).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                what: "decompressed bytes",
                ..
            }
        ),
        "{err}"
    );
    let options = Options {
        max_entries: 2,
        ..Options::default()
    };
    let err = extract(
        &tar_of(&[E::File("a", b""), E::File("b", b""), E::File("c", b"")])[..],
        None,
        None,
        d.path(),
        &options,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn privileged_nul_padding_after_the_gzip_stream_is_accepted_and_the_diff_id_checked() {
    require_root();
    let tar = tar_of(&[E::File("a", b"hello")]);
    let diff_id = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tar))
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut padded = gz.finish().unwrap();
    padded.extend([0u8; 512]);
    let d = dir();
    let s = extract(
        &padded[..],
        Some(crate::Compression::Gzip),
        Some(&diff_id),
        d.path(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(s.diff_id, diff_id);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let d = dir();
    let err = extract(
        &padded[..],
        None,
        Some(&wrong),
        d.path(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("expected {wrong}, got {diff_id}")),
        "{err}"
    );
}

#[test]
fn privileged_a_layer_directory_applies_like_its_tar() {
    require_root();
    // Layer 2 in overlay form, then applied from the directory onto layer 1.
    let l1 = [
        E::File("a/old", b"o"),
        E::File("b", b"b"),
        E::File("c/x", b"x"),
    ];
    let l2 = [
        E::File(".wh.b", b""),
        E::File("c/.wh..wh..opq", b""),
        E::File("c/y", b"y"),
        E::File("n", b"n"),
        E::Link("n2", "n"),
    ];
    let via_tar = dir();
    layer(&l1, via_tar.path(), Mode::Apply).unwrap();
    layer(&l2, via_tar.path(), Mode::Apply).unwrap();

    let overlay_dir = dir();
    layer(&l2, overlay_dir.path(), Mode::Overlay).unwrap();
    let via_dir = dir();
    layer(&l1, via_dir.path(), Mode::Apply).unwrap();
    crate::apply_source(
        &mut crate::DirSource::new(overlay_dir.path()),
        via_dir.path(),
        &opts(Mode::Apply),
    )
    .unwrap();
    assert_eq!(tree(via_dir.path()), tree(via_tar.path()));
    let (n, n2) = (
        std::fs::metadata(via_dir.path().join("n")).unwrap(),
        std::fs::metadata(via_dir.path().join("n2")).unwrap(),
    );
    assert_eq!(n.ino(), n2.ino());
}

/// The digest recorded from the hashes taken while writing equals the one
/// read back from disk (what fsck recomputes), whatever the entries did, and
/// any change to content or metadata changes it.
#[test]
fn privileged_tree_digest_from_extraction_matches_a_full_read_and_sees_changes() {
    require_root();
    let lower = dir();
    layer(
        &[E::File("old", b"lower content")],
        lower.path(),
        Mode::Overlay,
    )
    .unwrap();
    // A capability (cap_net_bind_service, effective): the kernel may
    // rewrite it. A default ACL with a named user: the files below inherit
    // an access ACL nobody set on them. An access ACL the mode says all
    // of: the kernel folds it into the mode and keeps no xattr.
    let capability = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let default_acl = [
        2, 0, 0, 0, 1, 0, 7, 0, 255, 255, 255, 255, 2, 0, 7, 0, 0xe8, 3, 0, 0, 4, 0, 5, 0, 255,
        255, 255, 255, 0x10, 0, 7, 0, 255, 255, 255, 255, 0x20, 0, 5, 0, 255, 255, 255, 255,
    ];
    let minimal_acl = [
        2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 0x20, 0, 4, 0,
        255, 255, 255, 255,
    ];
    let entries = [
        E::Xattr("acl-file", b"m", "system.posix_acl_access", &minimal_acl),
        E::File("a/f", b"first"),
        E::File("a/f", b"replaced by a later entry"),
        E::Link("a/hard", "a/f"),
        E::Link("from-lower", "old"),
        E::File("gone/x", b"x"),
        E::File(".wh.gone", b""),
        E::File("empty", b""),
        E::Sym("s", "a/f"),
        E::Char("dev", 1, 3),
        E::Xattr("x", b"with xattr", "user.k", b"v"),
        // One name twice (the last value stays), and two names that are one
        // once made UTF-8 (`user.~` becomes `user.\xff` below).
        E::Xattrs("twice", b"t", &[("user.a", b"1"), ("user.a", b"2")]),
        E::Xattrs("lossy", b"l", &[("user.\u{fffd}", b"1"), ("user.~", b"2")]),
        E::Xattr("cap", b"binary", "security.capability", &capability),
        E::File("implied/deep/y", b"y"),
        E::FileMode("setuid", b"s", 0o4755, 1000),
        E::File("f-before-acl", b"before"),
        E::DirXattr("acl", "system.posix_acl_default", &default_acl),
        E::File("acl/inherits", b"an access ACL"),
        E::File("f-after-acl", b"after"),
    ];
    let mut last = None;
    for owners in [crate::Owners::of_process(), crate::Owners::Record] {
        let d = dir();
        let options = Options {
            content_hashes: true,
            owners,
            ..opts(Mode::Overlay)
        };
        let mut tar = tar_of(&entries);
        let at = tar
            .windows(7)
            .position(|w| w == b"user.~=")
            .expect("the lossy record");
        tar[at + 5] = 0xff;
        let mut summary =
            extract(std::io::Cursor::new(tar), None, None, d.path(), &options).unwrap();
        fix_up(d.path(), &mut summary.fixups, &[lower.path()], owners).unwrap();
        assert!(summary.content.len() >= 10, "{owners:?}");
        let acl = rustix::fs::getxattr(
            d.path().join("acl/inherits"),
            "system.posix_acl_access",
            &mut [0u8; 256],
        );
        assert!(
            acl.is_ok(),
            "the test's file system should give files below a default ACL one: {acl:?}"
        );
        for (file, name) in [("twice", "user.a"), ("lossy", "user.\u{fffd}")] {
            let mut value = [0u8; 8];
            let n = rustix::fs::getxattr(d.path().join(file), name, &mut value).unwrap();
            assert_eq!(&value[..n], b"2", "{file}: the last value set stays");
        }
        let recorded = crate::tree_digest(d.path(), &summary.content).unwrap();
        let none = crate::WrittenFiles::default();
        assert_eq!(
            crate::tree_digest(d.path(), &none).unwrap(),
            recorded,
            "{owners:?}"
        );
        assert!(recorded.starts_with("blake3:") && recorded.len() == 7 + 64);
        last = Some(d);
    }
    let d = last.expect("two rounds");
    let none = crate::WrittenFiles::default();
    let recorded = crate::tree_digest(d.path(), &none).unwrap();

    // Same size, one byte different.
    let f = d.path().join("a/f");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 1;
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let write_keeping_mtime = |bytes: &[u8]| {
        std::fs::write(&f, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_modified(mtime).unwrap();
    };
    write_keeping_mtime(&bytes);
    let changed = crate::tree_digest(d.path(), &none).unwrap();
    assert_ne!(changed, recorded, "a flipped byte is seen");
    bytes[0] ^= 1;
    write_keeping_mtime(&bytes);
    assert_eq!(crate::tree_digest(d.path(), &none).unwrap(), recorded);

    std::fs::set_permissions(
        d.path().join("empty"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_ne!(
        crate::tree_digest(d.path(), &none).unwrap(),
        recorded,
        "a mode change is seen"
    );
    let before = crate::tree_digest(d.path(), &none).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o751)).unwrap();
    assert_ne!(
        crate::tree_digest(d.path(), &none).unwrap(),
        before,
        "a change to the layer's root directory is seen"
    );
}

/// The digest a store records is checked by later versions of strata
/// (`strata fsck`): the same tree gives the same digest, byte for byte of
/// the format, whichever version computed it.
#[test]
fn privileged_tree_digest_format_is_stable() {
    require_root();
    let d = dir();
    let options = Options {
        content_hashes: true,
        ..opts(Mode::Overlay)
    };
    let entries = [
        E::Dir("etc"),
        E::File("etc/a", b"alpha"),
        E::Xattr("etc/x", b"with xattr", "user.k", b"v"),
        E::Sym("etc/s", "a"),
        E::Char("dev", 1, 3),
        E::FileMode("bin/tool", b"tool", 0o4755, 1_500_000),
        E::Link("etc/a2", "etc/a"),
    ];
    let summary = extract(
        std::io::Cursor::new(tar_of(&entries)),
        None,
        None,
        d.path(),
        &options,
    )
    .unwrap();
    // Directories made without an entry of their own, and the root, get
    // the times and mode of no entry: fix them.
    let at = rustix::fs::Timespec {
        tv_sec: 1_000_000,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: at,
        last_modification: at,
    };
    for dir in ["bin", ""] {
        let path = d.path().join(dir);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::empty())
            .unwrap();
    }
    let from_writer = crate::tree_digest(d.path(), &summary.content).unwrap();
    let read_back = crate::tree_digest(d.path(), &crate::WrittenFiles::default()).unwrap();
    assert_eq!(from_writer, read_back);
    // Computed by the walk of d3d0c05 (one hasher call per field) and by
    // the one after it (one per entry).
    assert_eq!(
        read_back, "blake3:300dd1d449f1cd6c699ee32c9b6d85ba50926ca31dbf01e964cc0db88a158936",
        "the tree digest's format changed: layers in existing stores would fail `strata fsck`"
    );
}

/// Issue 16, 2: a file the writer pool cannot create (a name past the
/// kernel's 255 bytes, among small files that go to the pool) fails the
/// layer with that file's error, the files beside it ended, in either mode.
#[test]
fn a_file_the_pool_cannot_create_fails_the_layer_with_its_error() {
    for mode in [Mode::Overlay, Mode::Apply] {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..300 {
            let name = if i == 150 {
                format!("d/{}", "n".repeat(300))
            } else {
                format!("d/f{i}")
            };
            let mut h = header(tar::EntryType::Regular, 0o644, 3);
            b.append_data(&mut h, &name, &b"abc"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let target = dir();
        let e = extract(&tar[..], None, None, target.path(), &opts(mode)).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("creating") && message.contains("nnnn"),
            "{mode:?}: the error should name the file it could not create: {message}"
        );
        assert!(
            format!("{e:?}").contains("name too long") || message.contains("name too long"),
            "{mode:?}: the error should say why: {e:?}"
        );
    }
}

/// Makes the writer pool sleep 30 ms before each file of the layers this
/// thread extracts, until the guard is dropped: files are surely still in
/// flight when the entries after them are read.
fn hold_files_in_flight() -> impl Drop {
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            crate::fanout::TEST_DELAY.with(|d| d.set(std::time::Duration::ZERO));
        }
    }
    crate::fanout::TEST_DELAY.with(|d| d.set(std::time::Duration::from_millis(30)));
    Held
}

/// Issue 16, 2: with every file held in flight (the pool sleeps before each),
/// the entries after it still see the tree as if it had landed: the last
/// of two files of one name wins, a file replaces a directory of files in
/// flight, a file below a file is refused, one file by two spellings (a
/// symlink of the layer) is one file, a hard link finds its target.
#[test]
fn files_in_flight_land_before_the_entries_that_concern_them() {
    let _held = hold_files_in_flight();
    for mode in [Mode::Overlay, Mode::Apply] {
        let target = dir();
        layer(
            &[
                E::Dir("d/"),
                E::File("d/a", b"first"),
                E::File("d/b", b"b"),
                E::File("d/a", b"second"),
                E::Dir("e/"),
                E::File("e/x", b"x"),
                E::File("e/y", b"y"),
                E::File("e", b"now a file"),
                E::Dir("real/"),
                E::Sym("alias", "real"),
                E::File("alias/f", b"1"),
                E::File("real/f", b"two"),
                E::File("g", b"g"),
                E::Link("h", "g"),
            ],
            target.path(),
            mode,
        )
        .unwrap();
        let read = |p: &str| std::fs::read(target.path().join(p)).unwrap();
        assert_eq!(read("d/a"), b"second", "{mode:?}: the last d/a wins");
        assert_eq!(read("e"), b"now a file", "{mode:?}");
        assert!(
            std::fs::symlink_metadata(target.path().join("e"))
                .unwrap()
                .is_file()
        );
        assert_eq!(read("real/f"), b"two", "{mode:?}: real/f is alias/f");
        assert_eq!(
            std::fs::metadata(target.path().join("h")).unwrap().ino(),
            std::fs::metadata(target.path().join("g")).unwrap().ino(),
            "{mode:?}: h is a link to g"
        );
        let target = dir();
        let e = layer(
            &[E::Dir("d/"), E::File("d/p", b"p"), E::File("d/p/x", b"x")],
            target.path(),
            mode,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is not a directory"),
            "{mode:?}: {e}"
        );
    }
}

/// Issue 16: the tree digest looks a directory's names up ahead, in batches
/// of 1024 on the writer pool. A directory of 2 600 names of every kind,
/// interleaved in name order, digests as the one-by-one lookup does, and a
/// change deep in the last batch is seen.
#[test]
fn the_tree_digest_looked_up_in_parallel_equals_one_by_one() {
    let d = dir();
    let big = d.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..2600 {
        let p = big.join(format!("n{i:04}"));
        match i % 4 {
            0 => std::fs::write(&p, format!("file {i}")).unwrap(),
            1 => std::os::unix::fs::symlink(format!("target-{i}"), &p).unwrap(),
            2 => {
                std::fs::create_dir(&p).unwrap();
                std::fs::write(p.join("inside"), b"x").unwrap();
            }
            _ => std::fs::write(&p, b"").unwrap(),
        }
    }
    let none = crate::WrittenFiles::default();
    let parallel = crate::tree_digest(d.path(), &none).unwrap();
    let one_by_one = crate::tree::tree_digest_with(
        d.path(),
        &none,
        &crate::tree::Limits {
            parallel: false,
            lookups_on_pool: false,
            ..crate::tree::Limits::default()
        },
    )
    .unwrap();
    assert_eq!(parallel, one_by_one);
    std::fs::set_permissions(big.join("n2400"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(
        crate::tree_digest(d.path(), &none).unwrap(),
        parallel,
        "a mode change in the last batch is seen"
    );
}

/// Issue 16: the tree digest lists directories ahead on helper threads and
/// hashes them in order. Whatever the limits make of the walk (a directory
/// too deep to list ahead, one with too many names to hold, helpers that
/// wait because they are too far ahead) gives the digest one thread walking
/// the whole tree gives, and a change in each of those places is seen.
#[test]
fn the_tree_digest_over_both_cores_equals_one_thread_walking() {
    let d = dir();
    // Deep: a chain of 12 directories, with a file and a sibling at each.
    let mut deep = d.path().join("deep");
    for level in 0..12 {
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), format!("level {level}")).unwrap();
        std::fs::create_dir(deep.join("side")).unwrap();
        deep = deep.join("d");
    }
    // Wide: 40 directories of 3 names, and one of 300 names with
    // subdirectories among them.
    for i in 0..40 {
        let p = d.path().join(format!("wide/w{i:02}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("a"), b"a").unwrap();
        std::os::unix::fs::symlink("a", p.join("s")).unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
    }
    let big = d.path().join("big");
    for i in 0..300 {
        if i % 10 == 0 {
            std::fs::create_dir_all(big.join(format!("n{i:03}/inner"))).unwrap();
        } else {
            std::fs::create_dir_all(&big).unwrap();
            std::fs::write(big.join(format!("n{i:03}")), format!("{i}")).unwrap();
        }
    }
    let none = crate::WrittenFiles::default();
    let one_thread = crate::tree::Limits {
        parallel: false,
        lookups_on_pool: false,
        ..crate::tree::Limits::default()
    };
    let tight = crate::tree::Limits {
        max_depth: 3,
        max_names: 100,
        max_ahead_bytes: 300,
        max_fds_ahead: 1,
        ..crate::tree::Limits::default()
    };
    let digest = |limits: &crate::tree::Limits| {
        crate::tree::tree_digest_with(d.path(), &none, limits).unwrap()
    };
    let reference = digest(&one_thread);
    assert_eq!(digest(&crate::tree::Limits::default()), reference);
    assert_eq!(digest(&tight), reference);
    for changed in [
        "deep/d/d/d/d/d/d/d/d/f",
        "deep/d/d/d/d/d/d/d/d/d/d/d",
        "big/n299",
        "big/n290/inner",
        "wide/w39/sub",
    ] {
        let p = d.path().join(changed);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(digest(&tight), reference, "{changed}");
        assert_eq!(digest(&tight), digest(&one_thread), "{changed}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert_eq!(digest(&tight), reference);
}

/// Issue 16, from an attack on the pool: a file in flight that replaces a
/// symlink must land before a later entry goes through that symlink (the
/// entry then meets a file, not the symlink's target), directly or through
/// a chain of symlinks, in apply mode over a lower layer and in overlay
/// mode within one layer.
#[test]
fn an_entry_through_a_symlink_a_file_in_flight_replaces_is_refused() {
    let _held = hold_files_in_flight();
    let lower = [E::Dir("d/"), E::Sym("l", "d"), E::Sym("m", "l")];
    for upper in [
        [E::File("l", b"now a file"), E::File("l/x", b"x")],
        [E::File("l", b"now a file"), E::File("m/x", b"x")],
        [E::File("l", b"now a file"), E::Dir("l/sub/")],
    ] {
        let target = dir();
        layer(&lower, target.path(), Mode::Apply).unwrap();
        let e = layer(&upper, target.path(), Mode::Apply).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "apply: {e}");
        assert!(!target.path().join("d/x").exists() && !target.path().join("d/sub").exists());

        let mut one = lower.to_vec();
        one.extend(upper);
        let target = dir();
        let e = layer(&one, target.path(), Mode::Overlay).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "overlay: {e}");
    }
}

/// Issue 16, from an attack on the pool: when a file on the pool fails and
/// a later entry fails too, the layer reports the earlier one, as a
/// one-by-one extraction would.
#[test]
fn the_first_failure_in_the_layer_is_the_one_reported() {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..120 {
        let mut h = header(tar::EntryType::Regular, 0o644, 3);
        b.append_data(&mut h, format!("d/f{i}"), &b"abc"[..])
            .unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o644, 3);
    b.append_data(&mut h, format!("d/{}", "n".repeat(300)), &b"abc"[..])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 3000);
    b.append_data(&mut h, "after", &[7u8; 3000][..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    // Cut inside the last file's data: a second, later error.
    tar.truncate(tar.len() - 1024 - 2048);
    let target = dir();
    let e = extract(&tar[..], None, None, target.path(), &opts(Mode::Apply)).unwrap_err();
    assert!(
        e.to_string().contains("creating") && e.to_string().contains("nnnn"),
        "the long name's error, not the cut: {e}"
    );
}
