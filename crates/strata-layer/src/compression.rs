//! Decompression chosen by media type and confirmed by magic bytes, and the
//! counting/hashing reader that yields the diff_id.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const BUFFER: usize = 256 << 10;

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) || is_zstd_skippable_frame(head) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// RFC 8878 3.1.2: a skippable frame (magic 0x184D2A5?, little-endian) may
/// open a zstd stream; the decoder steps over it.
fn is_zstd_skippable_frame(head: &[u8]) -> bool {
    matches!(head, [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50)
}

/// Reads one or more gzip members; stops (without error) at trailing bytes
/// that are not another member, such as the NUL padding some tools append,
/// leaving them in the inner reader to be drained.
struct MultiGz<R: BufRead> {
    current: Option<flate2::bufread::GzDecoder<R>>,
    rest: Option<R>,
}

impl<R: BufRead> Read for MultiGz<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.current.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let mut inner = self.current.take().expect("checked above").into_inner();
            if inner.fill_buf()?.starts_with(&GZIP_MAGIC) {
                self.current = Some(flate2::bufread::GzDecoder::new(inner));
            } else {
                self.rest = Some(inner);
                return Ok(0);
            }
        }
    }
}

enum Inner<R: Read> {
    Plain(BufReader<R>),
    Gzip(Box<MultiGz<BufReader<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

/// A layer blob's bytes decompressed: the format found from the bytes
/// (`hint`, from the media type, is only checked against them). Whatever
/// follows the compressed stream is read too, so a verifying reader below
/// sees the blob's end.
///
/// # Errors
/// When the first bytes cannot be read or a zstd stream cannot start.
pub fn decompress<R: Read>(reader: R, hint: Option<Compression>) -> Result<impl Read> {
    Ok(Draining {
        inner: Decompressor::new(reader, hint)?,
        drained: false,
    })
}

struct Draining<R: Read> {
    inner: Decompressor<R>,
    drained: bool,
}

impl<R: Read> Read for Draining<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.drained {
            self.drained = true;
            self.inner.drain_rest()?;
        }
        Ok(n)
    }
}

/// The decompressing half of the pipeline: the bytes decide the format (the
/// media type is only a hint, reported when it disagrees).
pub(crate) struct Decompressor<R: Read> {
    inner: Inner<R>,
}

impl<R: Read> Decompressor<R> {
    pub(crate) fn new(reader: R, hint: Option<Compression>) -> Result<Self> {
        let mut buffered = BufReader::with_capacity(BUFFER, reader);
        let head = buffered.fill_buf().map_err(|source| Error::Stream {
            what: "layer bytes",
            source,
        })?;
        let found = Compression::sniff(head);
        if let Some(hint) = hint {
            // A "plain" layer that is really compressed (or the reverse) is
            // common enough in the wild; trust the bytes but say so.
            if hint != found {
                tracing::warn!(
                    ?hint,
                    ?found,
                    "layer media type and content disagree; using the content"
                );
            }
        }
        let inner = match found {
            Compression::None => Inner::Plain(buffered),
            Compression::Gzip => Inner::Gzip(Box::new(MultiGz {
                current: Some(flate2::bufread::GzDecoder::new(buffered)),
                rest: None,
            })),
            Compression::Zstd => {
                Inner::Zstd(zstd::stream::read::Decoder::with_buffer(buffered).map_err(
                    |source| Error::Stream {
                        what: "zstd",
                        source,
                    },
                )?)
            }
        };
        Ok(Self { inner })
    }

    /// Reads what follows the compressed stream (NUL padding), so that a
    /// digest check in the reader below sees the blob's very end.
    fn drain_rest(&mut self) -> io::Result<()> {
        let rest: Option<&mut dyn Read> = match &mut self.inner {
            Inner::Plain(_) => None,
            Inner::Gzip(g) => g.rest.as_mut().map(|r| r as &mut dyn Read),
            Inner::Zstd(z) => Some(z.get_mut()),
        };
        if let Some(rest) = rest {
            io::copy(rest, &mut io::sink())?;
        }
        Ok(())
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
        }
    }
}

/// Chunks handed from the decompressing thread to the extracting one, and
/// how many may be in flight: memory per layer stays under 2 MiB.
const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

/// The consuming end of the pipeline: chunks from the other thread, buffers
/// sent back for reuse.
pub(crate) struct ChannelReader {
    full: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            let done = std::mem::take(&mut self.current);
            let _ = self.empty.try_send(done);
            self.pos = 0;
            match self.full.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads into `buf` until it is full or `reader` ends. Returns how many
/// bytes came, and the error that stopped it early (after those bytes).
pub(crate) fn fill<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// Reads, decompresses and drains the blob on one thread (with the digest
/// check of the compressed bytes, which happens in `reader`), while
/// `consume` hashes the tar and writes the files on the calling thread: the
/// two halves of a layer's work overlap, so even a single big layer uses
/// two cores.
pub(crate) fn pipeline<R: Read + Send, T>(
    reader: R,
    hint: Option<Compression>,
    max_bytes: u64,
    consume: impl FnOnce(&mut TarStream<ChannelReader>) -> Result<T>,
) -> Result<T> {
    let mut decompressor = Decompressor::new(reader, hint)?;
    let (full_tx, full_rx) = sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT + 1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // Each chunk is filled before it is sent: a chunk that comes
            // back whole needs no zeroing before the next fill (a
            // decompressor gives less than a chunk per read, and zeroing
            // the rest of every chunk was 1.5 % of a pull's CPU).
            loop {
                let mut chunk = empty_rx.try_recv().unwrap_or_default();
                chunk.resize(CHUNK, 0);
                let (filled, error) = fill(&mut decompressor, &mut chunk);
                chunk.truncate(filled);
                // What came before an error goes first.
                if filled > 0 && full_tx.send(Ok(chunk)).is_err() {
                    return; // the consumer stopped (an error there)
                }
                if let Some(e) = error {
                    let _ = full_tx.send(Err(e));
                    return;
                }
                if filled < CHUNK {
                    break; // the end of the stream
                }
            }
            if let Err(e) = decompressor.drain_rest() {
                let _ = full_tx.send(Err(e));
            }
        });
        let reader = ChannelReader {
            full: full_rx,
            empty: empty_tx,
            current: Vec::new(),
            pos: 0,
        };
        let mut stream = TarStream::new(reader, max_bytes);
        consume(&mut stream)
    })
}

/// The decompressed tar stream: counts and hashes every byte (the diff_id)
/// and enforces the size limit.
pub(crate) struct TarStream<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> TarStream<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
        }
    }

    /// Decompressed bytes so far.
    pub(crate) fn decompressed_bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads the rest of the tar stream (end-of-archive padding) into the
    /// hash; returns the diff_id.
    pub(crate) fn finish(&mut self) -> Result<String> {
        io::copy(self, &mut io::sink()).map_err(|source| Error::Stream {
            what: "layer end",
            source,
        })?;
        Ok(format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        ))
    }
}

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(Error::LimitExceeded {
                what: "decompressed bytes",
                limit: self.limit,
            }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn diff_id(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn read_all(bytes: &[u8]) -> (Vec<u8>, String) {
        pipeline(bytes, None, u64::MAX, |s| {
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            Ok((out, s.finish()?))
        })
        .unwrap()
    }

    #[test]
    fn plain_gzip_zstd_and_multi_member_gzip() {
        let data = b"some tar bytes".repeat(1000);
        assert_eq!(read_all(&data), (data.clone(), diff_id(&data)));
        assert_eq!(read_all(&gzip(&data)), (data.clone(), diff_id(&data)));
        assert_eq!(
            read_all(&zstd::encode_all(&data[..], 1).unwrap()),
            (data.clone(), diff_id(&data))
        );
        let mut two = gzip(&data[..100]);
        two.extend(gzip(&data[100..]));
        assert_eq!(read_all(&two), (data.clone(), diff_id(&data)));
    }

    #[test]
    fn a_zstd_stream_opening_with_a_skippable_frame_is_zstd() {
        let tar = b"not really a tar, but bytes".repeat(40);
        let mut blob = vec![0x5e, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        blob.extend(zstd::encode_all(&tar[..], 3).unwrap());
        assert_eq!(Compression::sniff(&blob), Compression::Zstd);
        let (out, _) = read_all(&blob);
        assert_eq!(out, tar);
    }

    #[test]
    fn nul_padding_after_gzip_is_accepted() {
        let data = b"x".repeat(5000);
        let mut padded = gzip(&data);
        padded.extend([0u8; 1024]);
        assert_eq!(read_all(&padded), (data.clone(), diff_id(&data)));
    }

    #[test]
    fn the_limit_stops_a_bomb() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        let err = pipeline(&bomb[..], Some(Compression::Gzip), 1 << 20, |s| {
            io::copy(s, &mut io::sink()).map_err(crate::entry::stream_error)
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("limit of 1048576 decompressed bytes"),
            "{err}"
        );
    }
}
