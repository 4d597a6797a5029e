//! Entries back into a layer tar: the writing side of [`crate::TarSource`].
//!
//! Each entry is a ustar header, preceded by a PAX extended header when
//! ustar cannot hold it (a name or link target over 100 bytes, ids or a
//! size past their octal fields, a time before 1970 or with nanoseconds,
//! xattrs). Output is a function of the entries only: no host name, no
//! current time, no user database, so the same entries give the same bytes.
//! The tar crate encodes the ustar fields; it writes no PAX headers itself.

use std::io::{self, Read, Write};

use crate::entry::{Entry, Kind};
use crate::{Error, Result};

const BLOCK: usize = 512;
/// The largest value of a 7-digit octal field (uid, gid, mode).
const MAX_ID: u64 = 0o7_777_777;
/// The largest value of an 11-digit octal field (size, mtime).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// Writes a tar stream of [`Entry`]s.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes one entry; a file's `entry.size` bytes are read from `data`
    /// (exactly that many: a file that shrank or grew while it was read is
    /// an error naming it, never a tar whose framing is off).
    ///
    /// # Errors
    /// A write error, or a file whose data is not `entry.size` bytes.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        self.append_with(entry, data, &mut |_, _| Ok(()))
    }

    /// As [`TarWriter::append`], handing the entry on to `consumer` with a
    /// reader of its data that writes into the tar what it reads (what the
    /// consumer leaves unread is copied after it returns): one read of the
    /// source feeds both.
    pub(crate) fn append_with(
        &mut self,
        entry: &Entry,
        data: &mut dyn Read,
        consumer: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let real_name = tar_name(entry);
        if !matches!(entry.kind, Kind::Whiteout | Kind::Opaque) {
            refuse_whiteout_name(entry, &real_name)?;
        }
        // A sparse file is a PAX sparse 1.0 entry (GNU tar's
        // `--sparse --format=posix`): a stand-in name, the real one in
        // `GNU.sparse.name`, and the data led by the chunk map.
        let sparse_map = entry
            .sparse
            .as_ref()
            .filter(|_| entry.kind == Kind::File)
            .map(sparse_map_block);
        let name = if sparse_map.is_some() {
            sparse_stand_in(&real_name)
        } else {
            real_name.clone()
        };
        let (kind, link) = match &entry.kind {
            Kind::File | Kind::Whiteout | Kind::Opaque => (tar::EntryType::Regular, None),
            Kind::Dir => (tar::EntryType::Directory, None),
            Kind::Symlink(target) => (
                tar::EntryType::Symlink,
                Some(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec()),
            ),
            Kind::Hardlink(target) => (tar::EntryType::Link, Some(target.clone())),
            Kind::Char(..) => (tar::EntryType::Char, None),
            Kind::Block(..) => (tar::EntryType::Block, None),
            Kind::Fifo => (tar::EntryType::Fifo, None),
        };
        let data_size = if entry.kind == Kind::File {
            entry.size
        } else {
            0
        };
        let size = data_size + sparse_map.as_ref().map_or(0, |m| m.len() as u64);

        let mut pax = Vec::new();
        if name.len() > 100 {
            pax_record(&mut pax, "path", &name);
        }
        if let Some(link) = &link
            && link.len() > 100
        {
            pax_record(&mut pax, "linkpath", link);
        }
        if entry.uid > MAX_ID {
            pax_record(&mut pax, "uid", entry.uid.to_string().as_bytes());
        }
        if entry.gid > MAX_ID {
            pax_record(&mut pax, "gid", entry.gid.to_string().as_bytes());
        }
        if size > MAX_OCTAL_11 {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if let Some(sparse) = entry.sparse.as_ref().filter(|_| sparse_map.is_some()) {
            pax_record(&mut pax, "GNU.sparse.major", b"1");
            pax_record(&mut pax, "GNU.sparse.minor", b"0");
            pax_record(&mut pax, "GNU.sparse.name", &real_name);
            pax_record(
                &mut pax,
                "GNU.sparse.realsize",
                sparse.real_size.to_string().as_bytes(),
            );
        }
        let mtime_fits = u64::try_from(entry.mtime).is_ok_and(|t| t <= MAX_OCTAL_11);
        if !mtime_fits || entry.mtime_nsec != 0 {
            pax_record(
                &mut pax,
                "mtime",
                pax_time(entry.mtime, entry.mtime_nsec).as_bytes(),
            );
        }
        let mut xattrs: Vec<&(String, Vec<u8>)> = entry.xattrs.iter().collect();
        xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{key}"), value);
        }
        if !pax.is_empty() {
            let mut header = tar::Header::new_ustar();
            set_name(&mut header, &pax_header_name(&name));
            header.set_entry_type(tar::EntryType::XHeader);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(pax.len() as u64);
            header.set_cksum();
            self.write(header.as_bytes())?;
            self.write(&pax)?;
            self.pad(pax.len() as u64)?;
        }

        let mut header = tar::Header::new_ustar();
        set_name(&mut header, &name);
        header.set_entry_type(kind);
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(entry.uid.min(MAX_ID));
        header.set_gid(entry.gid.min(MAX_ID));
        header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0).min(MAX_OCTAL_11));
        header.set_size(size.min(MAX_OCTAL_11));
        if let Some(link) = &link {
            let field = &mut header.as_old_mut().linkname;
            let n = link.len().min(field.len());
            field[..n].copy_from_slice(&link[..n]);
        }
        if let Kind::Char(major, minor) | Kind::Block(major, minor) = entry.kind {
            header
                .set_device_major(major)
                .and_then(|()| header.set_device_minor(minor))
                .map_err(|e| Error::entry(entry.label(), format!("its device numbers: {e}")))?;
        }
        header.set_cksum();
        self.write(header.as_bytes())?;

        if let Some(map) = &sparse_map {
            self.write(map)?;
        }
        if data_size == 0 {
            consumer(entry, &mut io::empty())?;
            return self.pad(size);
        }
        {
            let size = data_size;
            let mut tee = Tee {
                from: (&mut *data).take(size),
                to: &mut self.out,
                copied: 0,
                write_error: None,
            };
            let consumed = consumer(entry, &mut tee).and_then(|()| {
                io::copy(&mut tee, &mut io::sink())
                    .map(drop)
                    .map_err(|e| Error::io("reading", std::path::Path::new(&*entry.label()), e))
            });
            if let Some(e) = tee.write_error.take() {
                return Err(Error::io("writing", std::path::Path::new("the layer"), e));
            }
            consumed?;
            let copied = tee.copied;
            let mut probe = [0u8; 1];
            let longer = data.read(&mut probe).is_ok_and(|n| n > 0);
            if copied != size || longer {
                return Err(Error::entry(
                    entry.label(),
                    format!(
                        "it changed while it was read: {size} bytes when it was listed, {}",
                        if longer {
                            "more now".to_owned()
                        } else {
                            format!("{copied} now")
                        }
                    ),
                ));
            }
        }
        self.pad(size)
    }

    /// Writes the end-of-archive blocks and hands back the output.
    ///
    /// # Errors
    /// A write error.
    pub fn finish(mut self) -> Result<W> {
        self.write(&[0; 2 * BLOCK])?;
        self.out
            .flush()
            .map_err(|e| Error::io("writing", std::path::Path::new("the layer"), e))?;
        Ok(self.out)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing", std::path::Path::new("the layer"), e))
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rest = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
        self.write(&[0; BLOCK][..rest])
    }
}

/// Reads from `from`, writing what it reads to `to`; a write error is kept
/// aside (the reader only sees that the data stopped).
struct Tee<'a, R: Read, W: Write> {
    from: R,
    to: &'a mut W,
    copied: u64,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.from.read(buf)?;
        if let Err(e) = self.to.write_all(&buf[..n]) {
            let message = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(message));
        }
        self.copied += n as u64;
        Ok(n)
    }
}

/// A file whose name starts with `.wh.` cannot be in a layer: every reader
/// (strata's, umoci's, containerd's, Docker's) takes it for a whiteout or
/// an opaque marker and deletes instead of writing it.
fn refuse_whiteout_name(entry: &Entry, name: &[u8]) -> Result<()> {
    let name = name.strip_suffix(b"/").unwrap_or(name);
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    if base.starts_with(crate::names::WHITEOUT_PREFIX.as_bytes()) {
        return Err(Error::entry(
            entry.label(),
            "a name starting with .wh. means a deletion in any layer tar (OCI image-spec), \
             so no layer can hold this file: rename it",
        ));
    }
    Ok(())
}

/// A PAX sparse 1.0 map: the chunk count, then each chunk's offset and
/// length, one decimal number per line, padded to a block.
fn sparse_map_block(sparse: &crate::Sparse) -> Vec<u8> {
    let mut map = format!("{}\n", sparse.chunks.len());
    for (offset, len) in &sparse.chunks {
        map.push_str(&format!("{offset}\n{len}\n"));
    }
    let mut map = map.into_bytes();
    map.resize(map.len().div_ceil(BLOCK) * BLOCK, 0);
    map
}

/// `DIR/GNUSparseFile.0/NAME`, the name GNU tar gives the header of a
/// sparse file (a reader without sparse support extracts it there).
fn sparse_stand_in(name: &[u8]) -> Vec<u8> {
    let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"GNUSparseFile.0/");
    out.extend_from_slice(base);
    out
}

/// The name as a tar spells it: relative, directories with a trailing `/`.
fn tar_name(entry: &Entry) -> Vec<u8> {
    let mut name: Vec<u8> = entry.name.clone();
    while name.starts_with(b"/") {
        name.remove(0);
    }
    if entry.kind == Kind::Dir && !name.ends_with(b"/") {
        name.push(b'/');
    }
    name
}

/// The ustar name field holds the first 100 bytes (the PAX `path` the rest).
fn set_name(header: &mut tar::Header, name: &[u8]) {
    let field = &mut header.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

/// `PaxHeaders/<base name>`, as GNU tar and Go name them (cut to fit).
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
    let mut out = b"PaxHeaders/".to_vec();
    out.extend_from_slice(&base[..base.len().min(100 - out.len())]);
    out
}

/// One PAX record, `LEN key=value\n`, where LEN counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A PAX time: seconds, with nanoseconds when there are any.
fn pax_time(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    if secs < 0 {
        // -1.25 s is written as "-1.25": seconds and fraction both negative.
        let total = i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        let (whole, frac) = (total / 1_000_000_000, (total % 1_000_000_000).abs());
        let sign = if total < 0 && whole == 0 { "-" } else { "" };
        return format!("{sign}{whole}.{frac:09}");
    }
    format!("{secs}.{nsec:09}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntrySource, TarSource};

    fn entry(name: &str, kind: Kind) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            size: 0,
            xattrs: Vec::new(),
            sparse: None,
        }
    }

    fn read_back(tar: &[u8]) -> Vec<(Entry, Vec<u8>)> {
        let mut out = Vec::new();
        TarSource::new(tar)
            .visit(&mut |e, data| {
                let mut bytes = Vec::new();
                data.read_to_end(&mut bytes).unwrap();
                out.push((e.clone(), bytes));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", &[b'x'; 93]);
        assert_eq!(out.len(), 103, "{}", String::from_utf8_lossy(&out));
        assert!(out.starts_with(b"103 path="));
        let mut out = Vec::new();
        pax_record(&mut out, "uid", b"5");
        assert_eq!(out, b"8 uid=5\n");
    }

    #[test]
    fn what_ustar_cannot_hold_goes_through_pax_and_reads_back() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let mut file = entry(&long, Kind::File);
        file.size = 5;
        file.uid = 5_000_000_000 % (1 << 32);
        file.gid = 3_000_000;
        file.mtime_nsec = 123_456_789;
        file.xattrs = vec![
            ("user.b".into(), b"2".to_vec()),
            ("security.capability".into(), vec![0, 1, 2, 255]),
        ];
        let link = entry(
            &format!("l/{}", "x".repeat(150)),
            Kind::Symlink(long.clone().into()),
        );
        let mut tar = TarWriter::new(Vec::new());
        tar.append(&file, &mut &b"hello"[..]).unwrap();
        tar.append(&link, &mut io::empty()).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let back = read_back(&bytes);
        assert_eq!(back.len(), 2);
        let (f, data) = &back[0];
        assert_eq!(f.name, long.as_bytes());
        assert_eq!(data, b"hello");
        assert_eq!(
            (f.uid, f.gid, f.mtime, f.mtime_nsec),
            (file.uid, file.gid, file.mtime, 123_456_789)
        );
        let mut want = file.xattrs.clone();
        want.sort();
        let mut got = f.xattrs.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(back[1].0.kind, Kind::Symlink(long.into()));
    }

    #[test]
    fn the_same_entries_give_the_same_bytes() {
        let write = || {
            let mut tar = TarWriter::new(Vec::new());
            let mut e = entry("a", Kind::File);
            e.size = 3;
            e.xattrs = vec![
                ("user.z".into(), b"1".to_vec()),
                ("user.a".into(), b"2".to_vec()),
            ];
            tar.append(&e, &mut &b"abc"[..]).unwrap();
            tar.append(&entry("d", Kind::Dir), &mut io::empty())
                .unwrap();
            tar.finish().unwrap()
        };
        assert_eq!(write(), write());
    }

    #[test]
    fn a_file_that_changed_size_while_read_is_an_error_naming_it() {
        let mut e = entry("grew", Kind::File);
        e.size = 2;
        let mut tar = TarWriter::new(Vec::new());
        let err = tar.append(&e, &mut &b"abc"[..]).unwrap_err().to_string();
        assert!(err.contains("grew") && err.contains("changed"), "{err}");
        let mut tar = TarWriter::new(Vec::new());
        e.size = 9;
        let err = tar.append(&e, &mut &b"abc"[..]).unwrap_err().to_string();
        assert!(err.contains("3 now"), "{err}");
    }

    #[test]
    fn a_file_named_like_a_whiteout_is_refused_naming_it() {
        for name in ["etc/.wh.passwd", "opt/.wh..wh..opq", ".wh.d"] {
            let mut tar = TarWriter::new(Vec::new());
            let err = tar
                .append(&entry(name, Kind::File), &mut io::empty())
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(".wh."), "{err}");
        }
        let mut tar = TarWriter::new(Vec::new());
        tar.append(&entry("etc/.wh.passwd", Kind::Whiteout), &mut io::empty())
            .unwrap();
        tar.append(&entry("etc/x.wh.y", Kind::File), &mut io::empty())
            .unwrap();
    }

    #[test]
    fn negative_and_fractional_times() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(5, 1), "5.000000001");
        assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(pax_time(-1, 750_000_000), "-0.250000000");
        // And back through the reader.
        for (secs, nsec) in [(-2, 500_000_000), (-1, 750_000_000), (-7, 0), (9, 1)] {
            let mut e = entry("t", Kind::Dir);
            (e.mtime, e.mtime_nsec) = (secs, nsec);
            let mut tar = TarWriter::new(Vec::new());
            tar.append(&e, &mut io::empty()).unwrap();
            let back = read_back(&tar.finish().unwrap());
            assert_eq!((back[0].0.mtime, back[0].0.mtime_nsec), (secs, nsec));
        }
    }
}
