//! The `user.containers.override_stat` record: an entry's image owner and
//! mode, kept in an xattr where the file itself cannot carry them (a
//! rootless store without a subuid range). containers/storage writes the
//! same form and fuse-overlayfs reads it: `UID:GID:MODE:TYPE`, the mode as
//! four octal digits, the type `file`, `dir`, `symlink`, `pipe`, `socket`,
//! `char-MAJ-MIN` or `block-MAJ-MIN`.

use crate::entry::{Entry, Kind};

/// The record for `entry`.
pub(crate) fn format(entry: &Entry) -> String {
    let kind = match entry.kind {
        Kind::Dir => "dir".to_owned(),
        Kind::Symlink(_) => "symlink".to_owned(),
        Kind::Fifo => "pipe".to_owned(),
        Kind::Char(ma, mi) => format!("char-{ma}-{mi}"),
        Kind::Block(ma, mi) => format!("block-{ma}-{mi}"),
        _ => "file".to_owned(),
    };
    format!(
        "{}:{}:{:04o}:{kind}",
        entry.uid,
        entry.gid,
        entry.mode & 0o7777
    )
}

/// An owner and mode read back from a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideStat {
    /// The image's uid.
    pub uid: u64,
    /// The image's gid.
    pub gid: u64,
    /// The permission bits (`0o7777`).
    pub mode: u32,
}

/// Parses a record; `None` when it is not one strata or containers/storage
/// would write (then the file's own metadata stands).
#[must_use]
pub fn parse(value: &[u8]) -> Option<OverrideStat> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.trim_end_matches('\0').split(':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
    (mode <= 0o7777).then_some(OverrideStat { uid, gid, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_foreign_forms_parse() {
        let entry = Entry {
            name: b"a".to_vec(),
            kind: Kind::File,
            mode: 0o4755,
            uid: 0,
            gid: 42,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            xattrs: Vec::new(),
            sparse: None,
        };
        let text = format(&entry);
        assert_eq!(text, "0:42:4755:file");
        assert_eq!(
            parse(text.as_bytes()),
            Some(OverrideStat {
                uid: 0,
                gid: 42,
                mode: 0o4755
            })
        );
        // containers/storage's older form has no type.
        assert_eq!(
            parse(b"1000:1000:0644"),
            Some(OverrideStat {
                uid: 1000,
                gid: 1000,
                mode: 0o644
            })
        );
        assert_eq!(parse(b"x:1:0644"), None);
        assert_eq!(parse(b"1:1:99999"), None);
        assert_eq!(parse(b"1:1"), None);
    }
}
