//! Layer tars built entry by entry, for the layer-rule cases: any name (absolute,
//! `..`, not UTF-8, over 100 bytes via PAX), any type, mode, owner, device,
//! xattrs (PAX `SCHILY.xattr.*`), written with the tar crate's raw headers so
//! nothing is normalised on the way.

/// One entry of a test layer.
#[derive(Debug, Clone)]
pub struct TarEntry {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Vec<u8>,
    device: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

fn entry(name: impl AsRef<[u8]>, kind: tar::EntryType, mode: u32) -> TarEntry {
    TarEntry {
        name: name.as_ref().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        data: Vec::new(),
        link: Vec::new(),
        device: (0, 0),
        pax: Vec::new(),
    }
}

/// A regular file (0644 root).
pub fn file(name: impl AsRef<[u8]>, data: &[u8]) -> TarEntry {
    TarEntry {
        data: data.to_vec(),
        ..entry(name, tar::EntryType::Regular, 0o644)
    }
}

/// A directory (0755 root).
pub fn dir(name: impl AsRef<[u8]>) -> TarEntry {
    entry(name, tar::EntryType::Directory, 0o755)
}

/// A symbolic link.
pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> TarEntry {
    TarEntry {
        link: target.as_ref().to_vec(),
        ..entry(name, tar::EntryType::Symlink, 0o777)
    }
}

/// A hard link to an earlier name.
pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> TarEntry {
    TarEntry {
        link: target.as_ref().to_vec(),
        ..entry(name, tar::EntryType::Link, 0o644)
    }
}

/// A character device.
pub fn chardev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> TarEntry {
    TarEntry {
        device: (major, minor),
        ..entry(name, tar::EntryType::Char, 0o666)
    }
}

/// A named pipe.
pub fn fifo(name: impl AsRef<[u8]>) -> TarEntry {
    entry(name, tar::EntryType::Fifo, 0o644)
}

/// An OCI whiteout of `dir/name` (an empty file `dir/.wh.name`).
pub fn whiteout(path: &str) -> TarEntry {
    let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
    let wh = if parent.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{parent}/.wh.{name}")
    };
    file(wh, b"")
}

/// An opaque marker for `dir` (`dir/.wh..wh..opq`; `""` is the root).
pub fn opaque(dir: &str) -> TarEntry {
    if dir.is_empty() {
        file(".wh..wh..opq", b"")
    } else {
        file(format!("{dir}/.wh..wh..opq"), b"")
    }
}

impl TarEntry {
    /// Sets the permission bits (with setuid/setgid/sticky).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the mtime.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Adds an xattr (as PAX `SCHILY.xattr.KEY`).
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.pax
            .push((format!("SCHILY.xattr.{key}"), value.to_vec()));
        self
    }

    /// Adds a raw PAX record.
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_owned(), value.to_vec()));
        self
    }
}

/// The tar bytes of `entries`, end-of-archive blocks included.
pub fn layer(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        let mut h = tar::Header::new_ustar();
        if e.name.len() <= 100 {
            h.as_old_mut().name[..e.name.len()].copy_from_slice(&e.name);
        } else {
            pax.push(("path".to_owned(), e.name.clone()));
            h.as_old_mut().name[..100].copy_from_slice(&e.name[..100]);
        }
        if e.link.len() <= 100 {
            h.set_link_name_literal(&e.link).unwrap();
        } else {
            pax.push(("linkpath".to_owned(), e.link.clone()));
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        for (id, set) in [(e.uid, 0), (e.gid, 1)] {
            if id > 0o7777777 {
                pax.push((["uid", "gid"][set].to_owned(), id.to_string().into_bytes()));
            } else if set == 0 {
                h.set_uid(id);
            } else {
                h.set_gid(id);
            }
        }
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.device.0).unwrap();
            h.set_device_minor(e.device.1).unwrap();
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}
