//! PAX sparse files (GNU tar's `--sparse --format=posix`): versions 1.0 (the
//! map at the start of the data) and 0.1 (the map in `GNU.sparse.map`). The
//! tar crate reads the header as a file named `GNUSparseFile.N/NAME` whose
//! data holds the map; this turns it back into `NAME` with its holes.

use std::io::Read;

use crate::{Error, Result};

/// Chunks one map may list: more is refused (a map is read into memory).
const MAX_CHUNKS: usize = 1 << 20;

/// A sparse file's layout: its real size, and where its data chunks go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    /// The file's size, holes included.
    pub real_size: u64,
    /// (offset, length) of each data chunk, in order; the rest is holes.
    pub chunks: Vec<(u64, u64)>,
}

/// The PAX records of a sparse entry, gathered while reading its header.
#[derive(Debug, Default)]
pub(crate) struct SparseRecords {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    map: Option<Vec<u8>>,
}

fn number(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl SparseRecords {
    /// Takes one PAX record; false when it is not a sparse one.
    pub(crate) fn take(&mut self, key: &[u8], value: &[u8]) -> bool {
        match key {
            b"GNU.sparse.major" => self.major = Some(value.to_vec()),
            b"GNU.sparse.minor" => self.minor = Some(value.to_vec()),
            b"GNU.sparse.name" => self.name = Some(value.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.real_size = number(value),
            b"GNU.sparse.map" => self.map = Some(value.to_vec()),
            _ => return false,
        }
        true
    }

    /// The real name and the layout, reading a 1.0 map from the head of
    /// `data` (which is then positioned at the first chunk). `None` when the
    /// entry is not a PAX sparse file.
    pub(crate) fn resolve(
        self,
        data: &mut dyn Read,
        label: &str,
    ) -> Result<Option<(Vec<u8>, Sparse)>> {
        let bad = |why: &str| Error::entry(label, format!("bad PAX sparse map: {why}"));
        let version = (self.major.as_deref(), self.minor.as_deref());
        let chunks = match (version, self.map) {
            ((Some(b"1"), Some(b"0")), _) => read_map_1_0(data, &bad)?,
            (_, Some(map)) => parse_map_0_1(&map, &bad)?,
            _ => return Ok(None),
        };
        let (Some(name), Some(real_size)) = (self.name, self.real_size) else {
            return Err(bad("GNU.sparse.name or the real size is missing"));
        };
        if chunks
            .iter()
            .any(|(o, l)| o.checked_add(*l).is_none_or(|end| end > real_size))
        {
            return Err(bad("a chunk lies past the real size"));
        }
        Ok(Some((name, Sparse { real_size, chunks })))
    }
}

/// The data chunks of a sparse file on disk, one after the other: what a
/// PAX sparse entry's data holds after its map.
pub(crate) struct ChunkReader {
    file: std::fs::File,
    chunks: std::vec::IntoIter<(u64, u64)>,
    /// The current chunk's next offset and the bytes left in it.
    at: u64,
    left: u64,
}

impl ChunkReader {
    pub(crate) fn new(file: std::fs::File, sparse: &Sparse) -> Self {
        Self {
            file,
            chunks: sparse.chunks.clone().into_iter(),
            at: 0,
            left: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        while self.left == 0 {
            match self.chunks.next() {
                Some((offset, len)) => (self.at, self.left) = (offset, len),
                None => return Ok(0),
            }
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            // The file shrank: the caller sees the data end early.
            self.left = 0;
            self.chunks = Vec::new().into_iter();
            return Ok(0);
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The logical content of a sparse file (holes as zeros) from its chunk
/// data: what a reader of the file sees, for hashing.
pub(crate) struct Expand<'a> {
    data: &'a mut dyn Read,
    chunks: std::vec::IntoIter<(u64, u64)>,
    /// Zeros, then data bytes, left in the current chunk.
    zeros: u64,
    bytes: u64,
    pos: u64,
    end: u64,
}

impl<'a> Expand<'a> {
    pub(crate) fn new(data: &'a mut dyn Read, sparse: &Sparse) -> Self {
        Self {
            data,
            chunks: sparse.chunks.clone().into_iter(),
            zeros: 0,
            bytes: 0,
            pos: 0,
            end: sparse.real_size,
        }
    }
}

impl Read for Expand<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.zeros == 0 && self.bytes == 0 {
            match self.chunks.next() {
                Some((offset, len)) => {
                    self.zeros = offset.saturating_sub(self.pos);
                    self.bytes = len;
                }
                None if self.pos < self.end => self.zeros = self.end - self.pos,
                None => return Ok(0),
            }
        }
        let n = if self.zeros > 0 {
            let n = usize::try_from(self.zeros)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf[..n].fill(0);
            self.zeros -= n as u64;
            n
        } else {
            let want = usize::try_from(self.bytes)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.data.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.bytes -= n as u64;
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

fn parse_map_0_1(map: &[u8], bad: &dyn Fn(&str) -> Error) -> Result<Vec<(u64, u64)>> {
    let numbers: Vec<u64> = map
        .split(|b| *b == b',')
        .map(|n| number(n).ok_or_else(|| bad("not a number")))
        .collect::<Result<_>>()?;
    if !numbers.len().is_multiple_of(2) || numbers.len() / 2 > MAX_CHUNKS {
        return Err(bad("an odd or too long list"));
    }
    Ok(numbers.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// Reads the 1.0 map: decimal lines (count, then offset and length per
/// chunk), padded with NULs to a 512-byte block.
fn read_map_1_0(data: &mut dyn Read, bad: &dyn Fn(&str) -> Error) -> Result<Vec<(u64, u64)>> {
    let mut consumed = 0u64;
    let mut line = || -> Result<u64> {
        let mut digits = Vec::new();
        loop {
            let mut byte = [0u8];
            data.read_exact(&mut byte)
                .map_err(|_| bad("the data ends inside the map"))?;
            consumed += 1;
            match byte[0] {
                b'\n' => break,
                b'0'..=b'9' if digits.len() < 20 => digits.push(byte[0]),
                _ => return Err(bad("not a decimal line")),
            }
        }
        number(&digits).ok_or_else(|| bad("not a number"))
    };
    let count = usize::try_from(line()?).unwrap_or(usize::MAX);
    if count > MAX_CHUNKS {
        return Err(bad("too many chunks"));
    }
    let mut chunks = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = line()?;
        chunks.push((offset, line()?));
    }
    let pad = (512 - consumed % 512) % 512;
    std::io::copy(&mut data.take(pad), &mut std::io::sink())
        .map_err(|_| bad("the data ends inside the map's padding"))?;
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_both_versions() {
        let mut data = b"2\n0\n4\n8192\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcdxyz");
        let mut r = SparseRecords::default();
        for (k, v) in [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "f"),
            ("GNU.sparse.realsize", "10000"),
        ] {
            assert!(r.take(k.as_bytes(), v.as_bytes()));
        }
        let mut reader = &data[..];
        let (name, sparse) = r.resolve(&mut reader, "x").unwrap().unwrap();
        assert_eq!((name.as_slice(), sparse.real_size), (&b"f"[..], 10000));
        assert_eq!(sparse.chunks, [(0, 4), (8192, 3)]);
        assert_eq!(reader, b"abcdxyz");

        let mut r = SparseRecords::default();
        r.take(b"GNU.sparse.map", b"0,4,8192,3");
        r.take(b"GNU.sparse.name", b"g");
        r.take(b"GNU.sparse.size", b"10000");
        let (_, sparse) = r.resolve(&mut &b""[..], "x").unwrap().unwrap();
        assert_eq!(sparse.chunks, [(0, 4), (8192, 3)]);
    }

    #[test]
    fn hostile_maps_are_refused() {
        let mut r = SparseRecords::default();
        r.take(b"GNU.sparse.map", b"0,4,9999,3");
        r.take(b"GNU.sparse.name", b"g");
        r.take(b"GNU.sparse.size", b"10000");
        assert!(r.resolve(&mut &b""[..], "x").is_err(), "past the real size");
        let mut r = SparseRecords::default();
        r.take(b"GNU.sparse.major", b"1");
        r.take(b"GNU.sparse.minor", b"0");
        r.take(b"GNU.sparse.name", b"g");
        r.take(b"GNU.sparse.realsize", b"1");
        assert!(r.resolve(&mut &b"99999999\n"[..], "x").is_err(), "too many");
        assert!(r_default_is_none());
    }

    fn r_default_is_none() -> bool {
        SparseRecords::default()
            .resolve(&mut &b""[..], "x")
            .unwrap()
            .is_none()
    }
}
