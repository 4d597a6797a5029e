//! A tar layer into a directory, in both modes, with names, links and xattrs
//! drawn from the shapes attacks use (`..`, absolute paths, symlinks out of
//! the target, whiteouts, opaque markers, overlay xattrs). Whatever the
//! entries, extraction returns Ok or an error, never panics, and nothing
//! outside the target changes: not the canary beside it, not the "host"
//! directory its symlinks point at, not `/a`, `/b`, `/c` of the real root.
//!
//! The input is structured (`arbitrary`) rather than raw tar bytes: raw
//! mutations almost never keep a header checksum valid, so they would fuzz
//! the tar parser's refusal and not the extraction rules.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata_layer::{Mode, Options};

#[derive(Arbitrary, Debug)]
enum Part {
    A,
    B,
    C,
    Dot,
    DotDot,
    Empty,
    Whiteout(u8),
    Opaque,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Name {
    absolute: bool,
    parts: Vec<Part>,
}

#[derive(Arbitrary, Debug)]
enum LinkTarget {
    Name(Name),
    Up,
    UpUp,
    Root,
    Host,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(LinkTarget),
    Hardlink(Name),
    Char,
    Fifo,
}

#[derive(Arbitrary, Debug)]
enum Xattr {
    User(Vec<u8>),
    OverlayOpaque,
    OverlayRedirect(Vec<u8>),
    Capability(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Item {
    name: Name,
    kind: Kind,
    mode: u16,
    xattr: Option<Xattr>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    apply: bool,
    items: Vec<Item>,
}

struct Scratch {
    base: PathBuf,
    canary: Vec<u8>,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = tempfile::tempdir().expect("scratch dir").keep();
        let canary = b"outside the target".to_vec();
        std::fs::write(base.join("canary"), &canary).unwrap();
        std::fs::create_dir(base.join("host")).unwrap();
        Scratch { base, canary }
    })
}

fn name_string(name: &Name) -> String {
    let parts: Vec<String> = name
        .parts
        .iter()
        .take(6)
        .map(|p| match p {
            Part::A => "a".into(),
            Part::B => "b".into(),
            Part::C => "c".into(),
            Part::Dot => ".".into(),
            Part::DotDot => "..".into(),
            Part::Empty => String::new(),
            Part::Whiteout(n) => [".wh.a", ".wh.b", ".wh.c", ".wh..."][usize::from(*n) % 4].into(),
            Part::Opaque => ".wh..wh..opq".into(),
            Part::Raw(s) => s.chars().filter(|c| *c != '\0').take(12).collect(),
        })
        .collect();
    let joined = parts.join("/");
    if name.absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

fn link_string(target: &LinkTarget) -> String {
    match target {
        LinkTarget::Name(n) => name_string(n),
        LinkTarget::Up => "..".into(),
        LinkTarget::UpUp => "../..".into(),
        LinkTarget::Root => "/".into(),
        LinkTarget::Host => scratch().base.join("host").to_string_lossy().into_owned(),
    }
}

/// Writes a header with the name and link name copied in raw, as an
/// attacker would (the `tar` builder refuses `..`).
fn append(b: &mut tar::Builder<Vec<u8>>, item: &Item) {
    let name = name_string(&item.name);
    if name.is_empty() || name.len() > 100 {
        return;
    }
    let mut h = tar::Header::new_gnu();
    let (kind, data, link): (tar::EntryType, &[u8], Option<String>) = match &item.kind {
        Kind::File(d) => (tar::EntryType::Regular, d, None),
        Kind::Dir => (tar::EntryType::Directory, &[], None),
        Kind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(link_string(t))),
        Kind::Hardlink(t) => (tar::EntryType::Link, &[], Some(name_string(t))),
        Kind::Char => (tar::EntryType::Char, &[], None),
        Kind::Fifo => (tar::EntryType::Fifo, &[], None),
    };
    if link.as_ref().is_some_and(|l| l.len() > 100) {
        return;
    }
    if let Some(x) = &item.xattr {
        let (key, value): (&str, &[u8]) = match x {
            Xattr::User(v) => ("SCHILY.xattr.user.fuzz", v),
            Xattr::OverlayOpaque => ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            Xattr::OverlayRedirect(v) => ("SCHILY.xattr.trusted.overlay.redirect", v),
            Xattr::Capability(v) => ("SCHILY.xattr.security.capability", v),
        };
        if b.append_pax_extensions([(key, value)]).is_err() {
            return;
        }
    }
    h.set_entry_type(kind);
    h.set_mode(u32::from(item.mode) & 0o7777);
    h.set_size(data.len() as u64);
    h.set_mtime(1_000_000);
    if matches!(item.kind, Kind::Char) {
        let _ = h.set_device_major(1);
        let _ = h.set_device_minor(3);
    }
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let _ = b.append(&h, data);
}

fn outside_untouched(s: &Scratch) {
    let mut names: Vec<String> = std::fs::read_dir(&s.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["canary", "host", "target"],
        "something was made beside the target"
    );
    assert_eq!(
        std::fs::read(s.base.join("canary")).unwrap(),
        s.canary,
        "the canary changed"
    );
    assert_eq!(
        std::fs::read_dir(s.base.join("host")).unwrap().count(),
        0,
        "something was written through a symlink to the host directory"
    );
    for p in ["/a", "/b", "/c", "/.wh.a"] {
        assert!(!Path::new(p).exists(), "{p} was written in the real root");
    }
}

fuzz_target!(|input: Input| {
    let s = scratch();
    let target = s.base.join("target");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir(&target).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for item in input.items.iter().take(64) {
        append(&mut b, item);
    }
    let tar = b.into_inner().unwrap();
    let options = Options {
        mode: if input.apply {
            Mode::Apply
        } else {
            Mode::Overlay
        },
        content_hashes: true,
        ..Options::default()
    };
    if input.apply {
        // What a lower layer may have left: links out of the target.
        std::os::unix::fs::symlink("..", target.join("up")).unwrap();
        std::os::unix::fs::symlink(s.base.join("host"), target.join("host")).unwrap();
    }
    let result = strata_layer::extract(&tar[..], None, None, &target, &options);
    outside_untouched(s);
    if let Ok(summary) = result {
        // The digest a store would record matches a full re-read.
        let recorded = strata_layer::tree_digest(&target, &summary.content);
        let reread = strata_layer::tree_digest(&target, &Default::default());
        if let (Ok(a), Ok(b)) = (recorded, reread) {
            assert_eq!(a, b, "recorded tree digest differs from a re-read");
        }
    }
});
