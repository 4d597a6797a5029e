//! Entries into a layer blob: tar, compressed while it is written, its
//! diff_id (the tar's sha256) and its digest (the blob's) hashed in the same
//! pass, and, from the same entries as they pass, the layer's directory in
//! overlay form, so that nothing is read twice or extracted again.
//!
//! ```text
//! EntrySource ─► clamp mtimes ─┬─► TarWriter ─► sha256 (diff_id) ─► encoder ─► sha256 (digest) ─► blob
//!                              └─► engine (overlay mode) ─► layer directory
//! ```

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::entry::{Entry, EntrySource};
use crate::tar_writer::TarWriter;
use crate::{Compression, Error, Options, Result, Summary, engine};

/// How to write a layer blob.
#[derive(Debug, Clone, Copy)]
pub struct BlobOptions {
    /// The blob's compression.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: every mtime later than this becomes this (and
    /// loses its nanoseconds), so that the same tree gives the same digests.
    pub clamp_mtime: Option<i64>,
    /// Threads the compressor may use.
    pub threads: usize,
    /// How the layer directory is written (its owners, devices and overlay
    /// xattr namespace, as the caller's privilege allows).
    pub layer: Options,
}

impl Default for BlobOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            clamp_mtime: None,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            layer: Options::default(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Blob {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The uncompressed tar's size in bytes.
    pub tar_bytes: u64,
    /// Entries written (whiteouts and opaque markers included).
    pub entries: u64,
    /// `.wh.` whiteouts written.
    pub whiteouts: u64,
    /// Opaque markers written.
    pub opaque_dirs: u64,
    /// The layer directory's extraction summary (when one was made): its
    /// fix-ups are the caller's to run with the lowers, as for a pulled
    /// layer.
    pub layer: Option<Summary>,
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    #[must_use]
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Writes the entries of `source` as a layer blob into `out`, and, with
/// `layer_dir` (an empty directory), the same entries as an overlay-form
/// layer directory there.
///
/// # Errors
/// A read or write error, an entry the tar or the directory cannot hold
/// (each names the entry). The caller discards `out` and `layer_dir` then.
pub fn write_blob<W: Write + Send + 'static>(
    source: &mut dyn EntrySource,
    out: W,
    layer_dir: Option<&Path>,
    options: &BlobOptions,
) -> Result<Blob> {
    let (blob_hash, tar_hash) = (Hashed::default(), Hashed::default());
    let encoder = Encoder::new(
        options.compression,
        options.threads,
        HashingWriter::new(out, &blob_hash),
    )?;
    let mut tar = TarWriter::new(HashingWriter::new(encoder, &tar_hash));
    let mut counts = Blob::default();
    // Hashes taken while writing: the tree digest the store records then
    // costs a metadata walk, not a second read of every byte.
    let extract_options = Options {
        mode: crate::Mode::Overlay,
        content_hashes: true,
        ..options.layer
    };
    let mut teed = Teed {
        inner: source,
        tar: &mut tar,
        clamp: options.clamp_mtime,
        counts: &mut counts,
    };
    let layer = match layer_dir {
        Some(dir) => Some(engine::Writer::new(dir, &extract_options)?.run(&mut teed)?),
        None => {
            teed.visit(&mut |_, data| {
                io::copy(data, &mut io::sink())
                    .map(drop)
                    .map_err(|e| Error::io("reading", Path::new("the layer"), e))
            })?;
            None
        }
    };
    tar.finish()?.inner.finish()?;
    let (diff_id, tar_bytes) = tar_hash.take();
    let (digest, size) = blob_hash.take();
    Ok(Blob {
        diff_id,
        digest,
        size,
        tar_bytes,
        layer,
        ..counts
    })
}

/// The source's entries, each written to the tar as it is handed on: a
/// file's bytes go to the tar as the consumer reads them.
struct Teed<'a, W: Write> {
    inner: &'a mut dyn EntrySource,
    tar: &'a mut TarWriter<W>,
    clamp: Option<i64>,
    counts: &'a mut Blob,
}

impl<W: Write> EntrySource for Teed<'_, W> {
    fn visit(&mut self, f: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>) -> Result<()> {
        let (tar, clamp, counts) = (&mut *self.tar, self.clamp, &mut *self.counts);
        self.inner.visit(&mut |entry, data| {
            let mut clamped;
            let entry = match clamp {
                Some(epoch)
                    if entry.mtime > epoch || (entry.mtime == epoch && entry.mtime_nsec > 0) =>
                {
                    clamped = entry.clone();
                    clamped.mtime = epoch;
                    clamped.mtime_nsec = 0;
                    &clamped
                }
                _ => entry,
            };
            counts.entries += 1;
            match entry.kind {
                crate::Kind::Whiteout => counts.whiteouts += 1,
                crate::Kind::Opaque => counts.opaque_dirs += 1,
                _ => {}
            }
            tar.append_with(entry, data, &mut |entry, data| f(entry, data))
        })
    }
}

/// A hash and a count, shared with the writer that feeds them (the gzip
/// compressor moves its output writer into a thread of its own).
#[derive(Clone, Default)]
struct Hashed(Arc<Mutex<(Sha256, u64)>>);

impl Hashed {
    /// `sha256:<hex>` and the byte count.
    fn take(&self) -> (String, u64) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hash, bytes) = std::mem::take(&mut *state);
        (format!("sha256:{}", hex::encode(hash.finalize())), bytes)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    state: Hashed,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W, state: &Hashed) -> Self {
        Self {
            inner,
            state: state.clone(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut state = self
            .state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0.update(&buf[..n]);
        state.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor: gzip over every core (gzp, pigz's scheme: blocks
/// compressed in parallel, one standard gzip stream), zstd with its own
/// worker threads, or none.
enum Encoder<W: Write + Send + 'static> {
    None(W),
    Gzip(gzp::par::compress::ParCompress<'static, gzp::deflate::Gzip, W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Encoder<W> {
    fn new(compression: Compression, threads: usize, out: W) -> Result<Self> {
        let threads = threads.max(1);
        Ok(match compression {
            Compression::None => Self::None(out),
            Compression::Gzip => Self::Gzip(
                gzp::par::compress::ParCompressBuilder::new()
                    .num_threads(threads)
                    .map_err(|e| Error::io("starting", Path::new("gzip"), io::Error::other(e)))?
                    .from_writer(out),
            ),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, 3)
                    .map_err(|e| Error::io("starting", Path::new("zstd"), e))?;
                if threads > 1 {
                    encoder
                        .multithread(u32::try_from(threads).unwrap_or(1))
                        .map_err(|e| Error::io("starting", Path::new("zstd"), e))?;
                }
                Self::Zstd(encoder)
            }
        })
    }

    /// Ends the stream and flushes it into the output, which is dropped.
    fn finish(self) -> Result<()> {
        let what = Path::new("the compressed layer");
        match self {
            Self::None(mut out) => out.flush().map_err(|e| Error::io("writing", what, e)),
            Self::Gzip(mut gz) => {
                use gzp::ZWriter as _;
                gz.finish()
                    .map_err(io::Error::other)
                    .and_then(|mut out| out.flush())
                    .map_err(|e| Error::io("compressing", what, e))
            }
            Self::Zstd(z) => z
                .finish()
                .and_then(|mut out| out.flush())
                .map_err(|e| Error::io("compressing", what, e)),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
            Self::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
            Self::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DirSource, extract};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        std::fs::write(root.join("etc/a"), b"alpha").unwrap();
        std::fs::write(root.join("etc/deep/big"), vec![7u8; 300_000]).unwrap();
        std::fs::hard_link(root.join("etc/a"), root.join("etc/a2")).unwrap();
        std::os::unix::fs::symlink("a", root.join("etc/link")).unwrap();
        std::fs::write(root.join("x".repeat(150)), b"long name").unwrap();
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&sparse, b"in the middle", 10 << 20).unwrap();
        dir
    }

    /// Name, kind, mode, size and data of each entry.
    type Listing = Vec<(Vec<u8>, crate::Kind, u32, u64, Vec<u8>)>;

    fn entries(dir: &Path) -> Listing {
        let mut out = Vec::new();
        DirSource::new(dir)
            .visit(&mut |e, data| {
                let mut bytes = Vec::new();
                data.read_to_end(&mut bytes).unwrap();
                out.push((e.name.clone(), e.kind.clone(), e.mode, e.size, bytes));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn one_pass_gives_a_blob_its_digests_and_the_same_tree_again() {
        let src = tree();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let out = tempfile::NamedTempFile::new().unwrap();
            let layer = tempfile::tempdir().unwrap();
            let options = BlobOptions {
                compression,
                threads: 2,
                ..BlobOptions::default()
            };
            let blob = write_blob(
                &mut DirSource::new(src.path()),
                out.reopen().unwrap(),
                Some(layer.path()),
                &options,
            )
            .unwrap();
            let bytes = std::fs::read(out.path()).unwrap();
            assert_eq!(blob.size, bytes.len() as u64);
            assert_eq!(
                blob.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
            );
            // The blob reads back (the reader sniffs the compression) with
            // that diff_id, into the same tree the pass made.
            let back = tempfile::tempdir().unwrap();
            let summary = extract(
                &bytes[..],
                None,
                Some(&blob.diff_id),
                back.path(),
                &Options::default(),
            )
            .unwrap();
            assert_eq!(summary.bytes, blob.tar_bytes, "{compression:?}");
            assert_eq!(entries(back.path()), entries(src.path()), "{compression:?}");
            assert_eq!(
                entries(layer.path()),
                entries(src.path()),
                "{compression:?}"
            );
            assert_eq!(blob.entries, entries(src.path()).len() as u64);
            // The hole stayed a hole: a few blocks, not 64 MiB, in the tar
            // and in both trees.
            assert!(blob.tar_bytes < 1 << 20, "{}", blob.tar_bytes);
            for tree in [back.path(), layer.path()] {
                let md = std::fs::metadata(tree.join("sparse")).unwrap();
                assert_eq!(md.len(), 64 << 20);
                assert!(
                    std::os::unix::fs::MetadataExt::blocks(&md) < 1024,
                    "{compression:?}"
                );
                let bytes = std::fs::read(tree.join("sparse")).unwrap();
                assert_eq!(&bytes[10 << 20..(10 << 20) + 13], b"in the middle");
            }
        }
    }

    #[test]
    fn a_clamped_tree_gives_the_same_digests_whenever_it_is_written() {
        let write = |src: &Path| {
            let out = tempfile::NamedTempFile::new().unwrap();
            let options = BlobOptions {
                clamp_mtime: Some(1_000_000_000),
                ..BlobOptions::default()
            };
            write_blob(
                &mut DirSource::new(src),
                out.reopen().unwrap(),
                None,
                &options,
            )
            .unwrap()
        };
        let first = tree();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = tree();
        let (a, b) = (write(first.path()), write(second.path()));
        assert_eq!((&a.diff_id, &a.digest), (&b.diff_id, &b.digest));
    }
}
