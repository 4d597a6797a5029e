//! Digest validation and streams that verify what they carry.
//!
//! A digest taken from a manifest, an index or a reference is data from the
//! outside: it is validated here before it is used in a URL or a path
//! (CVE-2024-3727 was a digest used as a path unchecked).

use std::io::{self, Read};
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Parses a digest and accepts it only if strata can verify it (sha256).
///
/// # Errors
/// [`Error::InvalidDigest`] when the text is not `sha256:` followed by 64
/// lowercase hex digits.
pub fn parse_digest(text: &str) -> Result<Digest> {
    let digest = Digest::from_str(text).map_err(|_| Error::InvalidDigest {
        digest: text.to_owned(),
        reason: "expected sha256:<64 lowercase hex digits>",
    })?;
    check_digest(&digest)?;
    Ok(digest)
}

/// Accepts an already parsed digest only if it is a well-formed sha256.
///
/// `oci-spec` accepts any algorithm name; strata verifies only sha256, and a
/// digest it cannot verify must never be used as a path or URL.
///
/// # Errors
/// [`Error::InvalidDigest`] for other algorithms or a malformed hex part.
pub fn check_digest(digest: &Digest) -> Result<()> {
    let hex = digest.digest();
    let well_formed = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        return Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: "only sha256 digests are supported",
        });
    }
    if !well_formed {
        return Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: "expected sha256:<64 lowercase hex digits>",
        });
    }
    Ok(())
}

/// The sha256 digest of `bytes`, as `sha256:<hex>`.
#[must_use]
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks `bytes` against `expected`.
///
/// # Errors
/// [`Error::DigestMismatch`] naming `what`.
pub(crate) fn verify_bytes(what: &str, expected: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = sha256_of(bytes);
    if actual != expected.to_string() {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// An `io::Write` sink that computes a sha256 digest.
#[derive(Default)]
pub struct StreamHasher(Sha256);

impl StreamHasher {
    /// The digest of everything written, as `sha256:<hex>`.
    #[must_use]
    pub fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

impl io::Write for StreamHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A byte stream that hashes what passes through it and, when it reaches its
/// end, fails unless size and sha256 match the descriptor.
///
/// The check happens at end of stream, so a consumer must read to EOF: the
/// layer extractor drains the stream after the tar end marker for this reason
/// ([`VerifiedReader::finish`] does it for other callers). A stream that runs
/// past the descriptor's size fails at once, so a hostile source cannot feed
/// an endless body.
///
/// Errors come out of `read` as `io::Error`s of kind `InvalidData` wrapping an
/// [`Error`]; [`crate::integrity_error`] gets it back.
pub struct VerifiedReader<R> {
    inner: R,
    what: String,
    expected_digest: Digest,
    expected_size: u64,
    hasher: Sha256,
    read: u64,
    verified: bool,
}

impl<R: Read> VerifiedReader<R> {
    /// Wraps `inner`, which must yield exactly `size` bytes hashing to `digest`.
    pub fn new(inner: R, what: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            inner,
            what: what.into(),
            expected_digest: digest,
            expected_size: size,
            hasher: Sha256::new(),
            read: 0,
            verified: false,
        }
    }

    /// Bytes read so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Reads whatever is left and verifies; the way to check a stream whose
    /// consumer stopped before its end.
    ///
    /// # Errors
    /// The read error, or the digest or size mismatch.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }

    fn mismatch(&self, error: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.expected_size {
            return Err(self.mismatch(Error::SizeMismatch {
                what: self.what.clone(),
                digest: self.expected_digest.to_string(),
                expected: self.expected_size,
                actual: self.read,
            }));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 {
            if self.read != self.expected_size {
                return Err(self.mismatch(Error::SizeMismatch {
                    what: self.what.clone(),
                    digest: self.expected_digest.to_string(),
                    expected: self.expected_size,
                    actual: self.read,
                }));
            }
            let actual = format!(
                "sha256:{}",
                hex::encode(std::mem::take(&mut self.hasher).finalize())
            );
            if actual != self.expected_digest.to_string() {
                return Err(self.mismatch(Error::DigestMismatch {
                    what: self.what.clone(),
                    expected: self.expected_digest.to_string(),
                    actual,
                }));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

/// Gets the [`Error`] out of an `io::Error` raised by a [`VerifiedReader`] (or
/// any reader of this crate), if it carries one.
#[must_use]
pub fn integrity_error(error: &io::Error) -> Option<&Error> {
    error.get_ref().and_then(|e| e.downcast_ref::<Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_that_could_be_paths_are_refused() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            "sha256",
            "",
        ] {
            assert!(parse_digest(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_digest(EMPTY).unwrap().to_string(), EMPTY);
    }

    #[test]
    fn verified_reader_accepts_exact_bytes() {
        let digest = parse_digest(&sha256_of(b"hello")).unwrap();
        let mut r = VerifiedReader::new(&b"hello"[..], "blob", digest, 5);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn verified_reader_fails_on_wrong_bytes_at_the_end() {
        let digest = parse_digest(&sha256_of(b"hello")).unwrap();
        let mut r = VerifiedReader::new(&b"hellp"[..], "layer blob", digest, 5);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        let inner = integrity_error(&err).unwrap();
        assert!(matches!(inner, Error::DigestMismatch { .. }), "{inner}");
        assert!(
            inner
                .to_string()
                .starts_with("layer blob digest mismatch: expected sha256:2cf24")
        );
    }

    #[test]
    fn verified_reader_fails_on_short_and_long_streams() {
        let digest = parse_digest(&sha256_of(b"hello")).unwrap();
        let err = VerifiedReader::new(&b"hell"[..], "blob", digest.clone(), 5)
            .finish()
            .unwrap_err();
        assert!(matches!(
            integrity_error(&err),
            Some(Error::SizeMismatch { actual: 4, .. })
        ));
        let err = VerifiedReader::new(&b"hello world"[..], "blob", digest, 5)
            .finish()
            .unwrap_err();
        assert!(matches!(
            integrity_error(&err),
            Some(Error::SizeMismatch { expected: 5, .. })
        ));
    }
}
