//! Blob bodies that survive a broken connection.

use std::io::{self, Read};
use std::thread::sleep;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header::CONTENT_RANGE;
use tracing::warn;

use super::Remote;
use super::client::status_error;

/// A blob body that, when the connection breaks off before `size` bytes,
/// asks again with `Range: bytes=N-` and carries on from byte N.
pub(super) struct ResumingBody {
    remote: Remote,
    url: String,
    size: u64,
    pos: u64,
    body: Response,
    resumes: u32,
}

impl ResumingBody {
    pub(super) fn new(remote: Remote, url: String, body: Response, size: u64) -> Self {
        Self::starting_at(remote, url, body, size, 0)
    }

    /// A body whose first byte is byte `pos` of the blob.
    pub(super) fn starting_at(
        remote: Remote,
        url: String,
        body: Response,
        size: u64,
        pos: u64,
    ) -> Self {
        Self {
            remote,
            url,
            size,
            pos,
            body,
            resumes: 0,
        }
    }

    fn resume(&mut self, cause: &dyn std::fmt::Display) -> io::Result<()> {
        self.resumes += 1;
        warn!(url = %self.url, offset = self.pos, resume = self.resumes, %cause, "blob body broke off, resuming");
        sleep(
            self.remote
                .0
                .retry
                .backoff(self.resumes.saturating_sub(1))
                .min(Duration::from_secs(5)),
        );
        let response = self
            .remote
            .open_blob_at(&self.url, self.pos)
            .map_err(io::Error::other)?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let want = format!("bytes {}-", self.pos);
                if !range.starts_with(&want) {
                    return Err(io::Error::other(format!(
                        "resuming {} at byte {}: the registry answered Content-Range {range:?}",
                        self.url, self.pos
                    )));
                }
                self.body = response;
            }
            StatusCode::OK => {
                // No Range support: read again from the start and skip.
                let mut body = response;
                let skipped = io::copy(&mut (&mut body).take(self.pos), &mut io::sink())?;
                if skipped != self.pos {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob got shorter on retry",
                    ));
                }
                self.body = body;
            }
            _ => return Err(io::Error::other(status_error("GET", &self.url, response))),
        }
        Ok(())
    }
}

impl Read for ResumingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let can_resume = self.resumes < self.remote.0.retry.resumes;
            match self.body.read(buf) {
                Ok(0) if self.pos < self.size && can_resume => {
                    self.resume(&"connection closed early")?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if can_resume => self.resume(&e)?,
                Err(e) => return Err(e),
            }
        }
    }
}
