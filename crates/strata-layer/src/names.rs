//! Entry names: lexical cleaning inside the root, and whiteout recognition.
//! Pure functions, so each rule is a unit test.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The OCI whiteout prefix.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Cleans a tar name into a path relative to the layer root, the way
/// `filepath.Clean("/" + name)` does for umoci and Docker: a leading `/` and
/// `./` go, `..` at the root stays at the root. An empty result is the root.
pub(crate) fn clean(name: &[u8]) -> Result<PathBuf> {
    if name.contains(&0) {
        return Err(Error::entry(
            String::from_utf8_lossy(name),
            "the name contains a NUL byte",
        ));
    }
    // Built in one buffer (a layer of many small files cleans as many
    // names): `..` cuts the last part off, as popping a component would.
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|b| *b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// What an entry's name says it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// An ordinary path.
    Plain,
    /// `dir/.wh.NAME`: delete `dir/NAME` from the layers below.
    Whiteout(PathBuf),
    /// `dir/.wh..wh..opq`: hide everything below in `dir`.
    Opaque(PathBuf),
    /// `.wh..wh.*` other than the opaque marker: aufs metadata, ignored.
    AufsMeta,
}

/// Whether a raw name could be classified as anything but plain: only one
/// with [`WHITEOUT_PREFIX`] in it (a quick test for every entry; the
/// classification is [`classify`]'s).
pub(crate) fn may_be_whiteout(name: &[u8]) -> bool {
    name.windows(WHITEOUT_PREFIX.len())
        .any(|w| w == WHITEOUT_PREFIX.as_bytes())
}

/// Classifies a cleaned path by its last component, whatever the tar type.
/// Names are bytes: a whiteout of a name that is not UTF-8 is a whiteout.
pub(crate) fn classify(path: &Path, entry: &str) -> Result<Name> {
    use std::os::unix::ffi::OsStrExt;
    let Some(base) = path.file_name().map(OsStrExt::as_bytes) else {
        return Ok(Name::Plain);
    };
    let Some(rest) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(Name::Plain);
    };
    let parent = path.parent().unwrap_or(Path::new("")).to_owned();
    if base == OPAQUE_MARKER.as_bytes() {
        return Ok(Name::Opaque(parent));
    }
    if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(Name::AufsMeta);
    }
    if rest.is_empty() || rest == b"." || rest == b".." {
        return Err(Error::entry(
            entry,
            format!(
                "{:?} is not a valid whiteout: it names no file",
                String::from_utf8_lossy(base)
            ),
        ));
    }
    Ok(Name::Whiteout(
        parent.join(std::ffi::OsStr::from_bytes(rest)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        clean(s.as_bytes()).unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn names_stay_inside_the_root() {
        let cases = [
            ("a/b", "a/b"),
            ("./a/b/", "a/b"),
            ("/abs/x", "abs/x"),
            ("../x", "x"),
            ("a/../../../../etc/passwd", "etc/passwd"),
            ("a/./b//c", "a/b/c"),
            ("./", ""),
            (".", ""),
            ("/", ""),
            ("..", ""),
        ];
        for (input, want) in cases {
            assert_eq!(c(input), want, "{input}");
        }
        assert!(clean(b"a\0b").is_err());
    }

    #[test]
    fn whiteout_forms() {
        let k = |s: &str| classify(&clean(s.as_bytes()).unwrap(), s);
        assert_eq!(k("a/b").unwrap(), Name::Plain);
        assert_eq!(k("a/.wh.b").unwrap(), Name::Whiteout("a/b".into()));
        assert_eq!(k(".wh.top").unwrap(), Name::Whiteout("top".into()));
        assert_eq!(k("a/.wh..wh..opq").unwrap(), Name::Opaque("a".into()));
        assert_eq!(k(".wh..wh..opq").unwrap(), Name::Opaque("".into()));
        assert_eq!(k("a/.wh..wh..plnk").unwrap(), Name::AufsMeta);
        assert_eq!(k(".wh..wh.aufs").unwrap(), Name::AufsMeta);
        assert_eq!(
            k("a/.wh.b.wh.c").unwrap(),
            Name::Whiteout("a/b.wh.c".into())
        );
        assert_eq!(k("a/x.wh.b").unwrap(), Name::Plain);
        // The quick test lets every form through, and only names with the
        // prefix somewhere.
        for form in ["a/.wh.b", ".wh..wh..opq", "/a/./.wh.b/", "a/.wh..wh.aufs"] {
            assert!(may_be_whiteout(form.as_bytes()), "{form}");
            assert_ne!(k(form).unwrap(), Name::Plain, "{form}");
        }
        for plain in ["a/b", "a/.whb", "a/wh.b", "./a/b/", ".w/h."] {
            assert!(!may_be_whiteout(plain.as_bytes()), "{plain}");
            assert_eq!(k(plain).unwrap(), Name::Plain, "{plain}");
        }
        let latin1 = clean(b"d/.wh.caf\xe9").unwrap();
        assert_eq!(
            classify(&latin1, "d/.wh.caf\u{fffd}").unwrap(),
            Name::Whiteout(clean(b"d/caf\xe9").unwrap())
        );
    }

    #[test]
    fn whiteouts_that_name_nothing_are_refused() {
        for bad in ["a/.wh.", ".wh.", "a/.wh..", "a/.wh..."] {
            let err = classify(&clean(bad.as_bytes()).unwrap(), bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a valid whiteout"), "{bad}: {err}");
        }
    }
}
