//! Decompression chosen by media type and confirmed by magic bytes, and the
//! counting/hashing reader that yields the diff_id.

use std::io::{self, BufRead, BufReader, Read};

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
        } else if head.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else {
            Self::None
        }
    }
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

/// The decompressed tar stream: counts and hashes every byte, enforces the
/// size limit, and can drain what is left of both streams at the end (so the
/// registry's digest check of the compressed bytes sees their end).
pub(crate) struct TarStream<R: Read> {
    inner: Inner<R>,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> TarStream<R> {
    /// Wraps `reader`. The magic bytes decide; `hint` (from the media type)
    /// only matters for a mismatch, which is reported.
    pub(crate) fn new(reader: R, hint: Option<Compression>, limit: u64) -> Result<Self> {
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
        Ok(Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
        })
    }

    /// Decompressed bytes so far.
    pub(crate) fn decompressed_bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads the rest of the tar stream (end-of-archive padding) into the
    /// hash, then the rest of the compressed stream; returns the diff_id.
    pub(crate) fn finish(mut self) -> Result<String> {
        io::copy(&mut self, &mut io::sink()).map_err(|source| Error::Stream {
            what: "layer end",
            source,
        })?;
        let rest: Option<&mut dyn Read> = match &mut self.inner {
            Inner::Plain(_) => None,
            Inner::Gzip(g) => g.rest.as_mut().map(|r| r as &mut dyn Read),
            Inner::Zstd(z) => Some(z.get_mut()),
        };
        if let Some(rest) = rest {
            io::copy(rest, &mut io::sink()).map_err(|source| Error::Stream {
                what: "bytes after the compressed stream",
                source,
            })?;
        }
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Plain(r) => r.read(buf)?,
            Inner::Gzip(r) => r.read(buf)?,
            Inner::Zstd(r) => r.read(buf)?,
        };
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
        let mut s = TarStream::new(bytes, None, u64::MAX).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let id = s.finish().unwrap();
        (out, id)
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
    fn nul_padding_after_gzip_is_accepted() {
        let data = b"x".repeat(5000);
        let mut padded = gzip(&data);
        padded.extend([0u8; 1024]);
        assert_eq!(read_all(&padded), (data.clone(), diff_id(&data)));
    }

    #[test]
    fn the_limit_stops_a_bomb() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        let mut s = TarStream::new(&bomb[..], Some(Compression::Gzip), 1 << 20).unwrap();
        let err = io::copy(&mut s, &mut io::sink()).unwrap_err();
        assert!(
            err.to_string()
                .contains("limit of 1048576 decompressed bytes"),
            "{err}"
        );
    }
}
