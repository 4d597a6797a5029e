//! Random access to the members of a tar file, without unpacking it.
//!
//! The archive is scanned once for member names and offsets; a member is then
//! read straight from the file, so a multi-gigabyte `docker save` is never
//! copied or held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::{Error, Result};

const MAX_LINK_HOPS: usize = 16;

enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// The member index of one tar file.
pub(crate) struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

/// `./a//b/` → `a/b`; `..` is resolved lexically and may not climb above the root.
fn normalise(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    pub(crate) fn open(path: &Path, format: &'static str) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        let invalid = |detail: String| Error::InvalidLayout {
            path: path.to_owned(),
            format,
            detail,
        };
        let entries = archive
            .entries()
            .map_err(|e| invalid(format!("not a tar file: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(format!("not a readable tar file: {e}")))?;
            let name = entry
                .path()
                .map_err(|e| invalid(format!("bad member name: {e}")))?;
            let Some(name) = normalise(&name.to_string_lossy()) else {
                continue;
            };
            let member = match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                EntryType::Symlink | EntryType::Link => {
                    let Some(target) = entry.link_name().ok().flatten() else {
                        continue;
                    };
                    let target = target.to_string_lossy().into_owned();
                    // Hard links and absolute symlinks name the target from
                    // the archive root, relative symlinks from their directory.
                    let hard = entry.header().entry_type() == EntryType::Link;
                    if hard || target.starts_with('/') {
                        Member::Link(target)
                    } else {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        Member::Link(format!("{dir}/{target}"))
                    }
                }
                _ => continue,
            };
            members.insert(name, member);
        }
        Ok(Self {
            path: path.to_owned(),
            members,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Finds a regular member, following links inside the archive.
    fn locate(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalise(name)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => name = normalise(target)?,
            }
        }
        None
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }

    /// Opens a member for reading; returns the reader and its size.
    pub(crate) fn open_member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let (offset, size) = self.locate(name).ok_or_else(|| Error::InvalidLayout {
            path: self.path.clone(),
            format: "tar archive",
            detail: format!("it has no file {name:?}"),
        })?;
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok((
            Box::new(BufReader::with_capacity(1 << 20, file).take(size)),
            size,
        ))
    }

    /// Reads a small member whole.
    pub(crate) fn read_member(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let (reader, size) = self.open_member(name)?;
        if size > limit {
            return Err(Error::TooLarge {
                what: format!("{name} in {}", self.path.display()),
                size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_cannot_climb() {
        assert_eq!(normalise("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalise("a/../b").as_deref(), Some("b"));
        assert_eq!(normalise("../x"), None);
        assert_eq!(
            normalise("/blobs/sha256/x").as_deref(),
            Some("blobs/sha256/x")
        );
    }

    #[test]
    fn members_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, "./blobs/sha256/abc", &b"hello"[..])
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "layer1/layer.tar", "../blobs/sha256/abc")
            .unwrap();
        b.finish().unwrap();
        drop(b);
        let idx = TarIndex::open(&path, "test").unwrap();
        assert_eq!(idx.read_member("blobs/sha256/abc", 100).unwrap(), b"hello");
        assert_eq!(idx.read_member("layer1/layer.tar", 100).unwrap(), b"hello");
        assert!(idx.read_member("blobs/sha256/abc", 2).is_err());
        assert!(idx.open_member("nope").is_err());
    }
}
