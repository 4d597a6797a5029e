//! What strata puts between the layer stream and the `tar` crate.
//!
//! - [`PadAtEof`]: tars that end without the end-of-archive blocks, or even
//!   without the last entry's padding (`umoci insert` 0.4.7 writes these),
//!   are read as umoci, containerd and Go's archive/tar read them.
//! - [`Framing`]: the `tar` crate reads a PAX extended header or a GNU
//!   long-name/long-link body whole into memory, however large its header
//!   says it is (a 1 MB gzip layer could take the process to 1 GB). This
//!   reader follows the tar framing as the crate does (headers, sizes, PAX
//!   `size` overrides, GNU sparse extension blocks) and refuses such a body
//!   over [`MAX_EXTENSION_BYTES`] (Go's archive/tar uses the same 1 MiB)
//!   before the crate reads it, naming the header.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest PAX extended header or GNU long name/link body read.
pub(crate) const MAX_EXTENSION_BYTES: u64 = 1 << 20;

const BLOCK: u64 = 512;

/// After the last real byte, yields the zeros that were left out (at most a
/// block's padding and the two end blocks). The hash (diff_id) is taken
/// below it, so it covers exactly the bytes received; [`PadAtEof::real_end`]
/// lets the source refuse an entry whose data would come from the padding.
pub(crate) struct PadAtEof<R> {
    inner: R,
    pos: u64,
    /// Where the real bytes ended (`u64::MAX` until then), shared with the
    /// source while the tar crate holds this reader.
    real_end: Arc<AtomicU64>,
    zeros_left: u64,
}

impl<R> PadAtEof<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            pos: 0,
            real_end: Arc::new(AtomicU64::new(u64::MAX)),
            zeros_left: 0,
        }
    }

    /// Where the real bytes end (`u64::MAX` until the end is reached).
    pub(crate) fn real_end(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.real_end)
    }
}

impl<R: Read> Read for PadAtEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.real_end.load(Ordering::Relaxed) == u64::MAX {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            self.real_end.store(self.pos, Ordering::Relaxed);
            self.zeros_left = (BLOCK - self.pos % BLOCK) % BLOCK + 2 * BLOCK;
        }
        let n = usize::try_from(self.zeros_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf[..n].fill(0);
        self.zeros_left -= n as u64;
        Ok(n)
    }
}

/// Where the stream is in the tar framing. A block being collected (a
/// header, a sparse extension) fills [`Framing::block`].
enum State {
    /// Collecting a 512-byte header block, `filled` bytes so far.
    Header { filled: usize },
    /// Inside an entry's data, padded to the block; a PAX body is kept (up
    /// to `size` bytes) to find its `size` record.
    Data {
        left: u64,
        pax: Option<(Vec<u8>, usize)>,
    },
    /// GNU sparse extension blocks after an old-style sparse header.
    SparseExt { filled: usize, data: u64 },
    /// Past the end-of-archive marker: nothing more to follow.
    Done,
}

/// Follows the tar framing to bound extension bodies (see the module doc).
pub(crate) struct Framing<R> {
    inner: R,
    state: State,
    /// The block being collected (one buffer for every header: a layer of
    /// many small files has as many headers as files).
    block: [u8; 512],
    /// A PAX `size` for the next entry.
    pax_size: Option<u64>,
    /// Tests: blocks taken for headers whose checksum is wrong (the framing
    /// lost step with the tar crate's).
    #[cfg(test)]
    bad_headers: u32,
}

impl<R> Framing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            state: header_state(),
            block: [0; 512],
            pax_size: None,
            #[cfg(test)]
            bad_headers: 0,
        }
    }
}

fn header_state() -> State {
    State::Header { filled: 0 }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// A numeric header field, octal or base-256, as the tar crate reads it.
fn numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let mut n: u64 = 0;
    for digit in field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(*b))
    {
        n = n.checked_mul(8)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some(n)
}

/// The `size` record of a PAX extended header body, if any.
fn pax_size(body: &[u8]) -> Option<u64> {
    let mut rest = body;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return found;
        }
        let record = &rest[space + 1..len];
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            found = std::str::from_utf8(value).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    found
}

fn too_big(block: &[u8; 512], size: u64) -> io::Error {
    let name = &block[..100];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(100)];
    let what = match block[156] {
        b'x' => "PAX extended header",
        b'L' => "GNU long-name entry",
        _ => "GNU long-link entry",
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the {what} {:?} holds {size} bytes, more than the {MAX_EXTENSION_BYTES} allowed",
            String::from_utf8_lossy(name)
        ),
    )
}

impl<R> Framing<R> {
    /// Advances the state over `bytes`, which just passed through.
    fn advance(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header { filled } => {
                    let n = (512 - *filled).min(bytes.len());
                    self.block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == 512 {
                        self.state = self.after_header()?;
                    }
                }
                State::Data { left, pax } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    if let Some((body, size)) = pax {
                        let keep = (*size - body.len()).min(n);
                        body.extend_from_slice(&bytes[..keep]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if let Some((body, _)) = pax.take() {
                            self.pax_size = pax_size(&body);
                        }
                        self.state = header_state();
                    }
                }
                State::SparseExt { filled, data } => {
                    let n = (512 - *filled).min(bytes.len());
                    self.block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == 512 {
                        let more = self.block[504] != 0;
                        let data = *data;
                        self.state = if more {
                            State::SparseExt { filled: 0, data }
                        } else {
                            data_state(data, None)
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after the header block just collected in [`Self::block`].
    fn after_header(&mut self) -> io::Result<State> {
        let block = &self.block;
        if block.iter().all(|b| *b == 0) {
            // The tar crate stops at the first zero block.
            return Ok(State::Done);
        }
        #[cfg(test)]
        {
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            if numeric(&block[148..156]) != Some(sum) {
                self.bad_headers += 1;
            }
        }
        let recognised = &block[257..263] == b"ustar\0" || &block[257..265] == b"ustar  \0";
        let size = numeric(&block[124..136]).unwrap_or(0);
        let kind = block[156];
        if recognised && matches!(kind, b'x' | b'L' | b'K') {
            if size > MAX_EXTENSION_BYTES {
                return Err(too_big(block, size));
            }
            let body = (kind == b'x').then(|| Vec::with_capacity(size as usize));
            return Ok(data_state(size, body));
        }
        let size = self.pax_size.take().unwrap_or(size);
        if recognised && kind == b'S' && block[482] != 0 {
            return Ok(State::SparseExt {
                filled: 0,
                data: size,
            });
        }
        Ok(data_state(size, None))
    }
}

/// The data of an entry of `size` bytes, padded to the block.
fn data_state(size: u64, pax: Option<Vec<u8>>) -> State {
    if size == 0 {
        return header_state();
    }
    State::Data {
        left: padded(size),
        pax: pax.map(|body| (body, usize::try_from(size).unwrap_or(usize::MAX))),
    }
}

impl<R: Read> Read for Framing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_through(tar: &[u8]) -> io::Result<Vec<String>> {
        let mut archive = tar::Archive::new(Framing::new(tar));
        let mut names = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
            io::copy(&mut entry, &mut io::sink())?;
        }
        let framing = archive.into_inner();
        assert_eq!(framing.bad_headers, 0, "the framing lost step");
        Ok(names)
    }

    #[test]
    fn a_huge_pax_header_is_refused_before_it_is_read() {
        let mut b = tar::Builder::new(Vec::new());
        let big = vec![b'a'; (MAX_EXTENSION_BYTES + 1) as usize];
        b.append_pax_extensions([("comment", big.as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let err = read_through(&tar).unwrap_err().to_string();
        assert!(
            err.contains("PAX extended header") && err.contains("1048576"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_gnu_long_name_is_refused() {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend(vec![b'n'; 4096]);
        let err = read_through(&tar).unwrap_err().to_string();
        assert!(
            err.contains(r#"GNU long-name entry "././@LongLink""#),
            "{err}"
        );
    }

    #[test]
    fn ordinary_pax_long_names_and_pax_sizes_pass() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        // A PAX size that wins over the header's.
        b.append_pax_extensions([("size", &b"3"[..]), ("path", long.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "last", &b"zz"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let names = read_through(&tar).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[2], "last");
        assert_eq!(pax_size(b"9 size=3\n12 path=abc\n"), Some(3));
    }

    /// GNU tar's own archives (old GNU sparse headers with extension
    /// blocks, long names, PAX sparse) frame as the tar crate frames them.
    #[test]
    fn gnu_tar_archives_of_every_format_pass_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let long = src.join("n".repeat(200));
        std::fs::write(&long, b"long name").unwrap();
        // Many holes: more than the 4 sparse slots of a GNU header.
        let sparse = std::fs::File::create(src.join("sparse")).unwrap();
        for i in 0..40u64 {
            std::os::unix::fs::FileExt::write_at(&sparse, b"data", i * 65536).unwrap();
        }
        drop(sparse);
        std::fs::write(src.join("after"), b"after").unwrap();
        for format in ["gnu", "posix"] {
            let out = dir.path().join(format!("{format}.tar"));
            let status = std::process::Command::new("tar")
                .args(["--sparse", &format!("--format={format}"), "-cf"])
                .arg(&out)
                .arg("-C")
                .arg(&src)
                .arg(".")
                .status()
                .expect("GNU tar");
            assert!(status.success());
            let bytes = std::fs::read(&out).unwrap();
            let mut plain = Vec::new();
            for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
                plain.push(String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned());
            }
            assert_eq!(read_through(&bytes).unwrap(), plain, "{format}");
            assert!(plain.iter().any(|n| n.ends_with("after")), "{plain:?}");
        }
    }
}
