//! The OCI distribution API client: one repository on one registry.
//!
//! Blocking reqwest, because the layer crate consumes a `std::io::Read` and
//! every layer already runs on its own worker thread: a blocking body is that
//! `Read` with no bridge in between. (reqwest's blocking client drives one
//! shared tokio runtime on a background thread.)
//!
//! The jobs are split by module: [`client`] builds the HTTP client and
//! turns answers into errors, [`retry`] decides what to try again,
//! [`token`] authenticates, [`body`] resumes broken-off downloads and
//! [`upload`] is the write side. This file opens a repository and reads
//! manifests and blobs from it.

mod body;
mod client;
mod mirrored;
mod retry;
mod token;
mod upload;

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use oci_spec::image::Descriptor;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use tracing::{debug, info_span, warn};

use crate::auth;
use crate::auth::Credentials;
use crate::digest::{check_digest, verify_bytes};
use crate::hosts::Endpoint;
use crate::manifest::{MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, RawManifest, is_foreign_layer};
use crate::options::{Options, PlainHttp, RetryPolicy};
use crate::reference::Reference;
use crate::transport::Transport;
use crate::{Error, Result};
use body::ResumingBody;
use client::{build_client, read_limited, status_error};
use retry::is_connect_error;
pub(crate) use token::Access;
use token::AuthState;

struct Inner {
    /// The tag's digest once a `HEAD` found it (asked once per source).
    head: Mutex<Option<Option<String>>>,
    /// Whether the registry has answered once: only then is a refused
    /// connection worth retrying.
    answered: AtomicBool,
    reference: Reference,
    http: Client,
    /// `scheme://host`.
    base: String,
    /// Where the API is: `scheme://host/v2` unless configured otherwise.
    api_root: String,
    /// `?ns=ORIGIN` on a mirror's requests; empty for the origin.
    query: String,
    /// Whether this host is a mirror (messages say so).
    mirror: bool,
    /// Whether it may be asked for tags (the probe asks `/v2/` if not).
    resolve: bool,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    access: Access,
    retry: RetryPolicy,
    foreign_urls: bool,
}

/// A repository on a registry. Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub(crate) struct Remote(Arc<Inner>);

impl Remote {
    /// Connects: finds the scheme (HTTPS, or plain HTTP where allowed), asks
    /// `/v2/` what authentication the registry wants, and finds credentials.
    ///
    /// A loopback registry is asked over plain HTTP first (what `docker`
    /// allows for loopback; the bytes never leave the host and the ping
    /// carries no credentials): one request instead of a failed TLS
    /// handshake and a second try. A TLS server answers that with 400 (Go's
    /// "client sent an HTTP request to an HTTPS server") or hangs up; then
    /// HTTPS is used, and its failure (e.g. an untrusted CA) is the story.
    pub(crate) fn open(endpoint: &Endpoint, opts: &Options, access: Access) -> Result<Self> {
        let reference = endpoint.reference.clone();
        let host = endpoint.host.clone();
        let _span =
            info_span!("registry", host = %host, repository = %reference.repository).entered();
        // `--creds` are the origin's; a mirror gets only what the auth
        // files hold for its own name.
        let creds = match (&opts.creds, endpoint.is_mirror()) {
            (Some(c), false) => Some(c.clone()),
            _ => auth::lookup(&opts.auth_files, &reference.registry, &reference.repository)?,
        };
        let schemes: &[&str] = match (
            endpoint.scheme,
            opts.plain_http,
            reference.is_loopback(),
            endpoint.insecure,
        ) {
            (Some("http"), ..) => &["http"],
            (Some(_), ..) => &["https"],
            (None, PlainHttp::Always, ..) => &["http"],
            (None, PlainHttp::Auto, true, _) => &["http", "https"],
            (None, PlainHttp::Auto, false, true) => &["https", "http"],
            (None, PlainHttp::Auto | PlainHttp::Never, ..) => &["https"],
        };
        // A mirror is asked once, briefly: one that fails is passed over.
        let (retry, stall) = if endpoint.is_mirror() {
            (
                RetryPolicy {
                    attempts: 1,
                    resumes: opts.retry.resumes.min(2),
                    ..opts.retry.clone()
                },
                opts.hosts.mirror_timeout(),
            )
        } else {
            (opts.retry.clone(), opts.stall_timeout)
        };
        let query = endpoint
            .mirror_of
            .as_ref()
            .map(|origin| format!("?ns={origin}"))
            .unwrap_or_default();
        let mut http_error = None;
        for scheme in schemes {
            let remote = Self(Arc::new(Inner {
                head: Mutex::new(None),
                answered: AtomicBool::new(false),
                reference: reference.clone(),
                http: build_client(opts, endpoint, stall, *scheme == "https")?,
                base: format!("{scheme}://{host}"),
                api_root: format!("{scheme}://{host}{}", endpoint.api_path),
                query: query.clone(),
                mirror: endpoint.is_mirror(),
                resolve: endpoint.resolve,
                creds: creds.clone(),
                auth: Mutex::new(AuthState::Anonymous),
                access: access.clone(),
                retry: retry.clone(),
                foreign_urls: opts.foreign_urls,
            }));
            let last = *scheme == schemes[schemes.len() - 1];
            // The plain-HTTP probe is asked once: a TLS server that hangs up
            // on it is an answer, not a fault to retry.
            match remote.probe(!last) {
                Ok(status) if status == StatusCode::BAD_REQUEST && !last => {
                    debug!(host = %host, "the loopback registry refused plain HTTP; trying HTTPS");
                }
                Ok(status) => {
                    debug!(scheme, status = status.as_u16(), "registry answered");
                    return Ok(remote);
                }
                // A mirror that does not answer plain HTTP in time is not
                // given a second timeout over HTTPS: it is passed over.
                Err(e @ Error::Http { .. })
                    if endpoint.is_mirror()
                        && matches!(&e, Error::Http { source, .. } if source.is_timeout()) =>
                {
                    return Err(e);
                }
                Err(e @ Error::Http { .. }) if !last => {
                    debug!(host = %host, error = %e, "plain HTTP failed on a loopback registry; trying HTTPS");
                    http_error = Some(e);
                }
                // HTTPS failed too: when plain HTTP could not even connect,
                // nothing listens, and that is the clearer story.
                Err(e) => {
                    return Err(match http_error {
                        Some(first) if is_connect_error(&first) && is_connect_error(&e) => first,
                        _ => e,
                    });
                }
            }
        }
        unreachable!("the last scheme always returns")
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/{}/{tail}{}",
            self.0.api_root, self.0.reference.repository, self.0.query
        )
    }

    fn describe(&self) -> String {
        if self.0.mirror {
            format!("mirror {}", self.0.reference)
        } else {
            self.0.reference.to_string()
        }
    }

    /// The first request: `HEAD` of the tag's manifest, which tells the
    /// scheme, the authentication (a 401 carries the challenge, as `/v2/`'s
    /// would) and, when anonymous, the tag's digest, so that a warm pull
    /// needs no other request (containerd's resolver starts the same way).
    /// Anything else (a pinned digest, a 404 that may hide a private
    /// repository, an odd status) asks `/v2/` as before.
    fn probe(&self, once: bool) -> Result<StatusCode> {
        if self.0.reference.digest.is_some() || !self.0.resolve {
            return self.ping(once);
        }
        let url = self.url(&format!(
            "manifests/{}",
            self.0.reference.manifest_reference()
        ));
        let request = || self.0.http.head(&url).header(ACCEPT, MANIFEST_ACCEPT);
        let response = if once {
            self.send_once("HEAD", &url, request)?
        } else {
            self.send_with_retries("HEAD", &url, request)?
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            self.take_challenge(&response)?;
        } else if status.is_success() {
            let digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            *self.0.head.lock().expect("head lock poisoned") = Some(digest);
        } else if status != StatusCode::BAD_REQUEST {
            return self.ping(once);
        }
        Ok(status)
    }

    /// `GET /v2/`: 200 means anonymous; 401 carries the challenge.
    fn ping(&self, once: bool) -> Result<StatusCode> {
        let url = format!("{}/", self.0.api_root);
        let response = if once {
            self.send_once("GET", &url, || self.0.http.get(&url))?
        } else {
            self.send_with_retries("GET", &url, || self.0.http.get(&url))?
        };
        if response.status() == StatusCode::UNAUTHORIZED {
            self.take_challenge(&response)?;
        }
        Ok(response.status())
    }

    fn get_manifest(&self, reference: &str, media_type_hint: Option<&str>) -> Result<RawManifest> {
        let url = self.url(&format!("manifests/{reference}"));
        let response = self.send("GET", &url, || {
            self.0.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                reference: self.describe(),
                detail: format!(": the registry has no manifest {reference}"),
            });
        }
        if !response.status().is_success() {
            return Err(status_error("GET", &url, response));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let bytes = read_limited(
            response,
            MAX_MANIFEST_BYTES,
            &format!("manifest {reference} of {}", self.describe()),
            &url,
        )?;
        let media_type = content_type.or_else(|| media_type_hint.map(str::to_owned));
        Ok(RawManifest::new(media_type.as_deref(), bytes))
    }

    /// `HEAD` a tag for its digest (Docker Hub does not count HEADs against
    /// its pull limit). `None` when the registry does not say.
    fn head_digest(&self, tag: &str) -> Result<Option<String>> {
        let url = self.url(&format!("manifests/{tag}"));
        let response = self.send("HEAD", &url, || {
            self.0.http.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                reference: self.describe(),
                detail: format!(": the registry has no tag {tag:?}"),
            });
        }
        if !response.status().is_success() {
            return Ok(None);
        }
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    fn cached_head_digest(&self, tag: &str) -> Result<Option<String>> {
        let mut head = self.0.head.lock().expect("head lock poisoned");
        if let Some(known) = head.as_ref() {
            return Ok(known.clone());
        }
        let found = self.head_digest(tag)?;
        *head = Some(found.clone());
        Ok(found)
    }

    /// A blob from byte `offset` on (a mirror taking over a stream another
    /// host broke off).
    pub(crate) fn blob_from(
        &self,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>> {
        check_digest(descriptor.digest())?;
        let url = self.url(&format!("blobs/{}", descriptor.digest()));
        let mut response = self.open_blob_at(&url, offset)?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK if offset > 0 => {
                // No Range support: skip what was read already.
                let skipped =
                    std::io::copy(&mut (&mut response).take(offset), &mut std::io::sink())
                        .map_err(|e| Error::io(url.clone(), e))?;
                if skipped != offset {
                    return Err(Error::io(
                        url,
                        std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                    ));
                }
            }
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound {
                    reference: self.describe(),
                    detail: format!(": the registry has no blob {}", descriptor.digest()),
                });
            }
            _ => return Err(status_error("GET", &url, response)),
        }
        Ok(Box::new(ResumingBody::starting_at(
            self.clone(),
            url,
            response,
            descriptor.size(),
            offset,
        )))
    }

    fn open_blob_at(&self, url: &str, offset: u64) -> Result<Response> {
        let response = self.send("GET", url, || {
            let req = self.0.http.get(url);
            if offset > 0 {
                req.header(RANGE, format!("bytes={offset}-"))
            } else {
                req
            }
        })?;
        Ok(response)
    }
}

/// Opens a registry repository for reading, through the mirrors the host
/// configuration gives it (lazily, each when first needed), or directly
/// (at once, so that a wrong name or a dead registry fails here).
pub(crate) fn open_source(reference: &Reference, opts: &Options) -> Result<Box<dyn Transport>> {
    let plan = opts.hosts.plan(reference)?;
    if let Some(file) = &plan.decided_by {
        debug!(file = %file.display(), hosts = plan.endpoints.len(), "hosts for {reference} from the mirror configuration");
    }
    match plan.endpoints.as_slice() {
        [only] if !only.is_mirror() => Ok(Box::new(Remote::open(only, opts, Access::Pull)?)),
        _ => Ok(Box::new(mirrored::Mirrored::new(reference, plan, opts))),
    }
}

/// Opens a registry repository for writing: the origin the host
/// configuration rewrites the reference to (mirrors are for reading), or
/// the reference's own registry.
pub(crate) fn open_destination(
    reference: &Reference,
    opts: &Options,
    access: Access,
) -> Result<Remote> {
    let plan = opts.hosts.plan(reference)?;
    let origin = plan
        .endpoints
        .iter()
        .find(|e| !e.is_mirror())
        .expect("a plan ends with its origin");
    Remote::open(origin, opts, access)
}

impl Transport for Remote {
    fn describe(&self) -> String {
        Remote::describe(self)
    }

    fn top(&self) -> Result<RawManifest> {
        let reference = &self.0.reference;
        if let Some(digest) = &reference.digest {
            let raw = self.get_manifest(digest.as_ref(), None)?;
            verify_bytes(&format!("manifest of {reference}"), digest, &raw.bytes)?;
            return Ok(raw);
        }
        let tag = reference.manifest_reference();
        // Resolve the tag to a digest, then fetch by digest so the bytes are
        // verifiable; registries that do not give the digest on HEAD are
        // fetched by tag.
        if let Some(digest) = self.cached_head_digest(&tag)? {
            let digest = crate::digest::parse_digest(&digest)?;
            let raw = self.get_manifest(digest.as_ref(), None)?;
            verify_bytes(&format!("manifest of {reference}"), &digest, &raw.bytes)?;
            return Ok(raw);
        }
        self.get_manifest(&tag, None)
    }

    fn top_digest(&self) -> Result<Option<oci_spec::image::Digest>> {
        if let Some(digest) = &self.0.reference.digest {
            return Ok(Some(digest.clone()));
        }
        let tag = self.0.reference.manifest_reference();
        self.cached_head_digest(&tag)?
            .map(|d| crate::digest::parse_digest(&d))
            .transpose()
    }

    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        check_digest(descriptor.digest())?;
        let raw = self.get_manifest(
            descriptor.digest().as_ref(),
            Some(descriptor.media_type().as_ref()),
        )?;
        verify_bytes(
            &format!("manifest of {}", self.describe()),
            descriptor.digest(),
            &raw.bytes,
        )?;
        Ok(raw)
    }

    fn blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        check_digest(descriptor.digest())?;
        let digest = descriptor.digest().to_string();
        let media_type = descriptor.media_type().to_string();
        if self.0.foreign_urls
            && is_foreign_layer(&media_type)
            && let Some(urls) = descriptor.urls().as_ref()
        {
            for url in urls
                .iter()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            {
                match self.0.http.get(url).send() {
                    Ok(r) if r.status().is_success() => {
                        let body =
                            ResumingBody::new(self.clone(), url.clone(), r, descriptor.size());
                        return Ok(Box::new(body));
                    }
                    Ok(r) => warn!(
                        url,
                        status = r.status().as_u16(),
                        "foreign layer URL failed"
                    ),
                    Err(e) => warn!(url, error = %e, "foreign layer URL failed"),
                }
            }
        }
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.open_blob_at(&url, 0)?;
        if response.status() == StatusCode::NOT_FOUND {
            let hint = if is_foreign_layer(&media_type) {
                "; it is a foreign layer: pass --allow-foreign-layers to fetch it from its URLs"
            } else {
                ""
            };
            return Err(Error::NotFound {
                reference: self.describe(),
                detail: format!(": the registry has no blob {digest}{hint}"),
            });
        }
        if !response.status().is_success() {
            return Err(status_error("GET", &url, response));
        }
        Ok(Box::new(ResumingBody::new(
            self.clone(),
            url,
            response,
            descriptor.size(),
        )))
    }
}
