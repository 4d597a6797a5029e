//! The write side of the distribution API: blob existence, cross-repository
//! mounts, uploads that survive a broken connection, and manifests.
//!
//! A blob upload is `POST …/blobs/uploads/`, then the bytes, then
//! `PUT <location>?digest=D`. Small blobs go in the `PUT` (one request);
//! bigger ones in `PATCH` chunks of [`CHUNK`] bytes, each kept in memory
//! until the registry has acknowledged it. When a chunk breaks off, the
//! registry is asked how much it holds (`GET <location>`, its `Range`
//! header) and the chunk goes on from there; a registry that has given up
//! the session (the distribution registry does, once a body broke off
//! mid-write) gets a fresh upload from the blob's first byte, the source
//! opened again. Nothing is tagged until every blob is in.

use std::io::Read;
use std::thread::sleep;

use bytes::Bytes;
use oci_spec::image::Descriptor;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use tracing::{debug, warn};

use super::Remote;
use super::client::status_error;
use crate::destination::{BlobOpener, Destination, Mount};
use crate::manifest::RawManifest;
use crate::{Error, Result};

/// Bytes per `PATCH`, and the largest blob sent in one `PUT`. The memory an
/// upload holds.
pub(crate) const CHUNK: usize = 8 << 20;

impl Remote {
    /// An absolute URL for a `Location` header, which may be relative: it
    /// is resolved against the URL of the request it answered (RFC 3986),
    /// as a browser would.
    fn absolute(location: &str, request_url: &str, method: &'static str) -> Result<String> {
        let base = reqwest::Url::parse(request_url).map_err(|e| Error::Status {
            method,
            url: request_url.to_owned(),
            status: 0,
            body: format!("the request URL does not parse: {e}"),
        })?;
        base.join(location)
            .map(String::from)
            .map_err(|e| Error::Status {
                method,
                url: request_url.to_owned(),
                status: 0,
                body: format!(
                    "the registry answered with Location {location:?}, which is no URL: {e}"
                ),
            })
    }

    /// Whether a URL is on this registry's origin: only then does a request
    /// carry the registry's credentials.
    fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(&self.0.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Sends to an upload URL: with credentials on the registry's own
    /// origin, without them anywhere else.
    fn send_to(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> reqwest::blocking::RequestBuilder,
    ) -> Result<Response> {
        if self.same_origin(url) {
            self.send(method, url, build)
        } else {
            self.send_with_retries(method, url, build)
        }
    }

    /// Where an upload goes on: the answer's `Location`, resolved
    /// against `url`, the request that got it.
    fn location(response: &Response, method: &'static str, url: &str) -> Result<String> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Status {
                method,
                url: url.to_owned(),
                status: response.status().as_u16(),
                body: "the registry answered without the Location header an upload goes on at"
                    .into(),
            })?;
        Self::absolute(location, url, method)
    }

    /// Turns a refusal of a write into the error a user can act on:
    /// 401/403 name the access that was refused with the registry's words,
    /// 413 and 507 say that the registry will not hold the blob.
    fn write_error(
        &self,
        doing: &str,
        method: &'static str,
        url: &str,
        response: Response,
    ) -> Error {
        match response.status().as_u16() {
            401 | 403 => self.refused(doing, response),
            413 => {
                let error = status_error(method, url, response);
                Error::Refused {
                    registry: self.0.reference.registry.clone(),
                    detail: format!(
                        "{doing}: the registry refuses a body this large (413 Payload Too Large); its limit is set by its operator"
                    ),
                    cause: Box::new(error),
                }
            }
            507 => {
                let error = status_error(method, url, response);
                Error::Refused {
                    registry: self.0.reference.registry.clone(),
                    detail: format!(
                        "{doing}: the registry is out of storage (507 Insufficient Storage)"
                    ),
                    cause: Box::new(error),
                }
            }
            _ => status_error(method, url, response),
        }
    }

    /// `POST …/blobs/uploads/`: a new upload session's URL.
    fn start_upload(&self, what: &str) -> Result<String> {
        let url = self.url("blobs/uploads/");
        let response = self.send("POST", &url, || {
            self.0.http.post(&url).header(CONTENT_LENGTH, "0")
        })?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.write_error(
                &format!("starting the upload of {what}"),
                "POST",
                &url,
                response,
            ));
        }
        Self::location(&response, "POST", &url)
    }

    /// How many bytes an upload session holds (`GET <location>`, `Range:
    /// 0-N`), or why it must start over.
    fn upload_offset(
        &self,
        location: &str,
        acknowledged: u64,
    ) -> std::result::Result<(String, u64), String> {
        let response = self
            .send_to("GET", location, || self.0.http.get(location))
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::NO_CONTENT && !response.status().is_success() {
            return Err(format!(
                "the registry answered {} for the upload's state",
                response.status()
            ));
        }
        let location =
            Self::location(&response, "GET", location).unwrap_or_else(|_| location.to_owned());
        let end = response
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.trim()
                    .strip_prefix("0-")
                    .and_then(|n| n.parse::<u64>().ok())
            });
        // `0-0` means one byte or none (the distribution registry writes
        // both so): what was acknowledged settles it.
        let held = match end {
            Some(0) => acknowledged.min(1),
            Some(n) => n + 1,
            None => acknowledged,
        };
        Ok((location, held.max(acknowledged)))
    }

    /// One blob up, from its first byte: the whole of it in the `PUT` when
    /// small, else in chunks with resume inside each chunk.
    fn upload_once(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
        session: Option<String>,
    ) -> std::result::Result<(), UploadError> {
        let digest = descriptor.digest().to_string();
        let mut location = match session {
            Some(l) => l,
            None => self.start_upload(what).map_err(UploadError::Fatal)?,
        };
        let mut source = open().map_err(UploadError::Fatal)?;
        let mut offset = 0u64;
        loop {
            let chunk = read_chunk(&mut source, what).map_err(UploadError::Fatal)?;
            let last = chunk.len() < CHUNK;
            if last && offset == 0 {
                // Small: the bytes travel with the closing PUT.
                return self
                    .finish(&location, &digest, what, chunk)
                    .map_err(UploadError::from_finish);
            }
            if chunk.is_empty() {
                // The blob ended on a chunk boundary: nothing is left to
                // PATCH (an empty range would be an inverted one).
                return self
                    .finish(&location, &digest, what, Bytes::new())
                    .map_err(UploadError::from_finish);
            }
            location = self.patch(&location, offset, chunk.clone(), what)?;
            offset += chunk.len() as u64;
            if last {
                return self
                    .finish(&location, &digest, what, Bytes::new())
                    .map_err(UploadError::from_finish);
            }
        }
    }

    /// Sends one chunk at `offset`; after a break, asks the registry what it
    /// holds and sends the rest of the chunk from there.
    fn patch(
        &self,
        location: &str,
        offset: u64,
        chunk: Bytes,
        what: &str,
    ) -> std::result::Result<String, UploadError> {
        let mut location = location.to_owned();
        let mut sent_from = 0usize;
        let mut breaks = 0u32;
        let mut refreshed = false;
        loop {
            let part = chunk.slice(sent_from..);
            let start = offset + sent_from as u64;
            let end = start + part.len() as u64 - 1;
            let url = location.clone();
            let result = self.send_patch_once(&url, start, end, part);
            match result {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    return Self::location(&response, "PATCH", &url).map_err(UploadError::Fatal);
                }
                // A token that expired during a long upload: take the new
                // challenge, get a fresh token once, send the chunk again.
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    refreshed = true;
                    self.take_challenge(&response).map_err(UploadError::Fatal)?;
                    continue;
                }
                Ok(response) if matches!(response.status().as_u16(), 401 | 403 | 413 | 507) => {
                    return Err(UploadError::Fatal(self.write_error(
                        &format!("uploading {what}"),
                        "PATCH",
                        &url,
                        response,
                    )));
                }
                Ok(response)
                    if response.status() == StatusCode::NOT_FOUND
                        || response.status().is_client_error() =>
                {
                    return Err(UploadError::Restart(format!(
                        "the registry answered {} to a chunk",
                        response.status()
                    )));
                }
                Ok(response) => warn!(
                    what,
                    status = response.status().as_u16(),
                    offset = start,
                    "a chunk was refused; asking the registry where the upload stands"
                ),
                Err(e) => {
                    warn!(what, error = %e, offset = start, "a chunk broke off; asking the registry where the upload stands")
                }
            }
            breaks += 1;
            if breaks > self.0.retry.resumes {
                return Err(UploadError::Restart(format!(
                    "{breaks} breaks in one chunk"
                )));
            }
            sleep(self.0.retry.backoff(breaks - 1));
            let (next, held) = self
                .upload_offset(&location, offset)
                .map_err(UploadError::Restart)?;
            let end_of_chunk = offset + chunk.len() as u64;
            if held < offset || held > end_of_chunk {
                return Err(UploadError::Restart(format!(
                    "the registry holds {held} bytes, outside the chunk {offset}..{end_of_chunk}"
                )));
            }
            debug!(what, held, "resuming the upload");
            location = next;
            sent_from = (held - offset) as usize;
            if sent_from == chunk.len() {
                return Ok(location);
            }
        }
    }

    fn send_patch_once(&self, url: &str, start: u64, end: u64, part: Bytes) -> Result<Response> {
        let build = || {
            self.0
                .http
                .patch(url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{start}-{end}"))
                .header(CONTENT_LENGTH, part.len().to_string())
                .body(part.clone())
        };
        // Once: a chunk that broke off may have landed in part, and only
        // the registry can say how much.
        if self.same_origin(url) {
            let auth = self.auth_header()?;
            self.send_once("PATCH", url, || match &auth {
                Some(v) => build().header(reqwest::header::AUTHORIZATION, v),
                None => build(),
            })
        } else {
            self.send_once("PATCH", url, build)
        }
    }

    /// `PUT <location>?digest=D`, with the last bytes (or none).
    fn finish(&self, location: &str, digest: &str, what: &str, body: Bytes) -> Result<()> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let response = self.send_to("PUT", &url, || {
            self.0
                .http
                .put(&url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, body.len().to_string())
                .body(body.clone())
        })?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(self.write_error(
                &format!("closing the upload of {what}"),
                "PUT",
                &url,
                response,
            ));
        }
        Ok(())
    }
}

/// How one upload attempt ended badly.
enum UploadError {
    /// Start the blob over (a fresh session, the source opened again):
    /// why.
    Restart(String),
    /// Give up: the source failed, or the registry refused.
    Fatal(Error),
}

impl UploadError {
    fn from_finish(error: Error) -> Self {
        match &error {
            // The registry checks the digest and size: a mismatch is the
            // source's fault (it was verified on the way), not the session's.
            Error::Http { .. } => Self::Restart(error.to_string()),
            Error::Status { status, .. } if *status >= 500 || *status == 404 => {
                Self::Restart(error.to_string())
            }
            _ => Self::Fatal(error),
        }
    }
}

/// Up to [`CHUNK`] bytes; fewer only at the end of the source.
fn read_chunk(source: &mut dyn Read, what: &str) -> Result<Bytes> {
    let mut chunk = Vec::with_capacity(CHUNK);
    source
        .take(CHUNK as u64)
        .read_to_end(&mut chunk)
        .map_err(|e| match crate::digest::integrity_error(&e) {
            Some(_) => crate::source::integrity_from_io(e),
            None => Error::io(what.to_owned(), e),
        })?;
    Ok(Bytes::from(chunk))
}

impl Destination for Remote {
    fn describe(&self) -> String {
        Remote::describe(self)
    }

    fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        let url = self.url(&format!("blobs/{}", descriptor.digest()));
        let response = self.send("HEAD", &url, || self.0.http.head(&url))?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.write_error(
                &format!("checking for blob {}", descriptor.digest()),
                "HEAD",
                &url,
                response,
            )),
        }
    }

    fn mount_blob(&self, descriptor: &Descriptor, from: &str) -> Result<Mount> {
        let url = self.url("blobs/uploads/");
        let digest = descriptor.digest().to_string();
        let response = self.send("POST", &url, || {
            self.0
                .http
                .post(&url)
                .query(&[("mount", digest.as_str()), ("from", from)])
                .header(CONTENT_LENGTH, "0")
        })?;
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            // Not mountable (not there, or no access to `from`): the
            // registry opened an ordinary upload instead.
            StatusCode::ACCEPTED => Ok(Mount::Upload(Self::location(&response, "POST", &url)?)),
            _ => Err(self.write_error(
                &format!("mounting blob {digest} from {from}"),
                "POST",
                &url,
                response,
            )),
        }
    }

    fn put_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        open: BlobOpener<'_>,
        session: Option<String>,
    ) -> Result<()> {
        let mut session = session;
        let mut restarts = 0;
        loop {
            match self.upload_once(descriptor, what, open, session.take()) {
                Ok(()) => return Ok(()),
                Err(UploadError::Fatal(e)) => return Err(e),
                Err(UploadError::Restart(why)) => {
                    restarts += 1;
                    if restarts >= self.0.retry.attempts {
                        return Err(Error::UploadFailed {
                            what: what.to_owned(),
                            attempts: restarts,
                            last: why,
                        });
                    }
                    warn!(what, reason = %why, restart = restarts, "starting the upload over");
                    sleep(self.0.retry.backoff(restarts - 1));
                }
            }
        }
    }

    fn put_manifest(&self, manifest: &RawManifest, reference: &str) -> Result<()> {
        let url = self.url(&format!("manifests/{reference}"));
        let body = Bytes::from(manifest.bytes.clone());
        let response = self.send("PUT", &url, || {
            self.0
                .http
                .put(&url)
                .header(CONTENT_TYPE, manifest.media_type.as_str())
                .body(body.clone())
        })?;
        if !response.status().is_success() {
            return Err(self.write_error(
                &format!("putting manifest {reference}"),
                "PUT",
                &url,
                response,
            ));
        }
        if let Some(digest) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && digest != manifest.digest.as_ref()
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest stored as {reference} at {}", self.describe()),
                expected: manifest.digest.to_string(),
                actual: digest.to_owned(),
            });
        }
        Ok(())
    }
}
