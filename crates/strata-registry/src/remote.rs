//! The OCI distribution API client: ping, auth, manifests, blobs.
//!
//! Blocking reqwest, because the layer crate consumes a `std::io::Read` and
//! every layer already runs on its own worker thread: a blocking body is that
//! `Read` with no bridge in between. (reqwest's blocking client drives one
//! shared tokio runtime on a background thread.)

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oci_spec::image::Descriptor;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use tracing::{debug, info_span, warn};

use crate::auth::{self, Challenge, Credentials};
use crate::digest::{check_digest, verify_bytes};
use crate::manifest::{MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, RawManifest, is_foreign_layer};
use crate::reference::Reference;
use crate::source::{Options, PlainHttp, Transport};
use crate::{Error, Result};

/// How often and how patiently requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay, `Retry-After` included.
    pub max_delay: Duration,
    /// How many times a broken-off blob body is resumed with a Range request.
    pub resumes: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            resumes: 10,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay)
    }
}

#[derive(Debug)]
enum AuthState {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        token: Option<String>,
    },
}

struct Inner {
    /// The tag's digest once a `HEAD` found it (asked once per source).
    head: Mutex<Option<Option<String>>>,
    /// Whether the registry has answered once: only then is a refused
    /// connection worth retrying.
    answered: AtomicBool,
    reference: Reference,
    http: Client,
    base: String,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    retry: RetryPolicy,
    foreign_urls: bool,
}

/// A repository on a registry. Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub(crate) struct Remote(Arc<Inner>);

fn http_error(method: &'static str, url: &str, source: reqwest::Error) -> Error {
    Error::Http {
        method,
        url: url.to_owned(),
        source,
    }
}

fn status_error(method: &'static str, url: &str, response: Response) -> Error {
    let status = response.status().as_u16();
    let mut body = String::new();
    let _ = response.take(4096).read_to_string(&mut body);
    Error::Status {
        method,
        url: url.to_owned(),
        status,
        body,
    }
}

fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a transport error may go away by itself: refused, reset or timed
/// out connections. TLS failures (an untrusted certificate, a plain-HTTP
/// server on the other end) will not, so they fail at once.
///
/// A refused connection is transient only once the registry has answered:
/// on first contact it means nothing listens there (a wrong port), and
/// retrying would only make the user wait.
fn transient(error: &reqwest::Error, refused_is_transient: bool) -> bool {
    if error.is_timeout() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return (refused_is_transient && io.kind() == io::ErrorKind::ConnectionRefused)
                || matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::Interrupted
                );
        }
        if let Some(hyper) = e.downcast_ref::<reqwest::Error>()
            && (hyper.is_body() || hyper.is_decode())
        {
            return false;
        }
        source = e.source();
    }
    false
}

/// Whether an error is a failure to connect at all (nothing listens).
fn is_connect_error(error: &Error) -> bool {
    matches!(error, Error::Http { source, .. } if source.is_connect())
}

/// An error and its causes on one line, for log messages.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

/// Debian's and Ubuntu's bundle of the system's trusted CAs (local ones included).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The HTTP client. `system_roots` adds the system's CA bundle (a file read
/// and ~150 certificates parsed): a plain-HTTP loopback registry skips it.
pub(crate) fn build_client(opts: &Options, system_roots: bool) -> Result<Client> {
    let mut builder = Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // In the blocking client this bounds the wait for headers and for each
        // read of the body: a stalled connection fails instead of hanging.
        .timeout(opts.stall_timeout)
        .danger_accept_invalid_certs(opts.insecure);
    // Mozilla's roots are compiled in (webpki-roots); the system's bundle is
    // one file read, not the hundreds a certificate directory scan costs.
    let system_bundle = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_CA_BUNDLE));
    if let Some(pem) = system_roots
        .then(|| std::fs::read(&system_bundle).ok())
        .flatten()
    {
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Err(e) => {
                warn!(path = %system_bundle.display(), error = %e, "ignoring an unreadable system CA bundle")
            }
        }
    }
    for path in &opts.ca_files {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::ClientSetup {
                detail: format!("{} is not a PEM certificate bundle", path.display()),
                source: Some(e),
            })?;
        if certs.is_empty() {
            return Err(Error::ClientSetup {
                detail: format!("{} holds no PEM certificate", path.display()),
                source: None,
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Error::ClientSetup {
        detail: "building the HTTP client".into(),
        source: Some(e),
    })
}

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
    pub(crate) fn open(reference: Reference, opts: &Options) -> Result<Self> {
        let host = reference.api_host().to_owned();
        let _span =
            info_span!("registry", host = %host, repository = %reference.repository).entered();
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => auth::lookup(&opts.auth_files, &reference.registry, &reference.repository)?,
        };
        let schemes: &[&str] = match (opts.plain_http, reference.is_loopback()) {
            (PlainHttp::Always, _) => &["http"],
            (PlainHttp::Auto, true) => &["http", "https"],
            (PlainHttp::Auto | PlainHttp::Never, _) => &["https"],
        };
        let mut http_error = None;
        for scheme in schemes {
            let remote = Self(Arc::new(Inner {
                head: Mutex::new(None),
                answered: AtomicBool::new(false),
                reference: reference.clone(),
                http: build_client(opts, *scheme == "https")?,
                base: format!("{scheme}://{host}"),
                creds: creds.clone(),
                auth: Mutex::new(AuthState::Anonymous),
                retry: opts.retry.clone(),
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
        format!("{}/v2/{}/{tail}", self.0.base, self.0.reference.repository)
    }

    fn describe(&self) -> String {
        self.0.reference.to_string()
    }

    /// The first request: `HEAD` of the tag's manifest, which tells the
    /// scheme, the authentication (a 401 carries the challenge, as `/v2/`'s
    /// would) and, when anonymous, the tag's digest, so that a warm pull
    /// needs no other request (containerd's resolver starts the same way).
    /// Anything else (a pinned digest, a 404 that may hide a private
    /// repository, an odd status) asks `/v2/` as before.
    fn probe(&self, once: bool) -> Result<StatusCode> {
        if self.0.reference.digest.is_some() {
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
        let url = format!("{}/v2/", self.0.base);
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

    fn take_challenge(&self, response: &Response) -> Result<()> {
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let mut state = self.0.auth.lock().expect("auth lock poisoned");
        *state = match challenge {
            Some(Challenge::Basic) => AuthState::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => AuthState::Bearer {
                realm,
                service,
                token: None,
            },
            None => return Err(self.unauthorized("the registry asks for authentication in a way strata does not speak (no Basic or Bearer challenge)")),
        };
        Ok(())
    }

    fn unauthorized(&self, detail: &str) -> Error {
        Error::Unauthorized {
            registry: self.0.reference.registry.clone(),
            repository: self.0.reference.repository.clone(),
            detail: detail.to_owned(),
        }
    }

    fn wrong_credentials(&self) -> Error {
        match &self.0.creds {
            Some(c) => self.unauthorized(&format!(
                "401 Unauthorized for user {:?} (credentials from {}); check the username and password",
                c.username, c.origin
            )),
            None => self.unauthorized(
                "401 Unauthorized and no credentials were found; pass --creds USER:PASSWORD or log in with `docker login` / `skopeo login`",
            ),
        }
    }

    /// Fetches a pull token from the Bearer realm (Docker Hub's flow).
    fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String> {
        let scope = format!("repository:{}:pull", self.0.reference.repository);
        let build = || {
            let mut req = self.0.http.get(realm).query(&[("scope", scope.as_str())]);
            if let Some(s) = service {
                req = req.query(&[("service", s)]);
            }
            if let Some(c) = &self.0.creds {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            req
        };
        let response = self.send_with_retries("GET", realm, build)?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(self.wrong_credentials());
            }
            _ => return Err(status_error("GET", realm, response)),
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_limited(response, 1 << 20, "token reply", realm)?;
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|e| Error::json(format!("the token reply of {realm}"), e))?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.unauthorized(&format!(
                    "the token server {realm} answered without a token"
                ))
            })
    }

    /// The Authorization header the registry wants, fetching a token first
    /// when there is none yet.
    fn auth_header(&self) -> Result<Option<String>> {
        let mut state = self.0.auth.lock().expect("auth lock poisoned");
        match &mut *state {
            AuthState::Anonymous => Ok(None),
            AuthState::Basic => match &self.0.creds {
                Some(c) => Ok(Some(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{}:{}", c.username, c.password))
                ))),
                None => Err(self.wrong_credentials()),
            },
            AuthState::Bearer {
                realm,
                service,
                token,
            } => {
                if token.is_none() {
                    *token = Some(self.fetch_token(realm, service.as_deref())?);
                }
                Ok(token.as_ref().map(|t| format!("Bearer {t}")))
            }
        }
    }

    /// Sends with retries on connection errors, 408/429/5xx, honouring
    /// `Retry-After`. Returns any other response, 401 included.
    /// One try, no retries (a probe whose failure is an answer).
    fn send_once(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let response = build().send().map_err(|e| http_error(method, url, e))?;
        self.0.answered.store(true, Ordering::Relaxed);
        Ok(response)
    }

    fn send_with_retries(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let policy = &self.0.retry;
        let mut attempt = 0;
        loop {
            let last = attempt + 1 >= policy.attempts;
            match build().send() {
                Err(e) if !last && transient(&e, self.0.answered.load(Ordering::Relaxed)) => {
                    warn!(url, error = %error_chain(&e), attempt, "request failed, retrying");
                    sleep(policy.backoff(attempt));
                }
                Err(e) => return Err(http_error(method, url, e)),
                Ok(r) if retryable_status(r.status()) => {
                    let after = retry_after(r.headers());
                    if last {
                        if r.status() == StatusCode::TOO_MANY_REQUESTS {
                            return Err(Error::RateLimited {
                                url: url.to_owned(),
                                retry_after: after,
                            });
                        }
                        return Err(status_error(method, url, r));
                    }
                    let delay = after.map_or_else(|| policy.backoff(attempt), Duration::from_secs);
                    warn!(
                        url,
                        status = r.status().as_u16(),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    sleep(delay.min(policy.max_delay));
                }
                Ok(r) => {
                    self.0.answered.store(true, Ordering::Relaxed);
                    return Ok(r);
                }
            }
            attempt += 1;
        }
    }

    /// Sends an authorised request; on 401 takes the new challenge and
    /// fetches a fresh token once (tokens expire mid-pull).
    fn send(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut refreshed = false;
        loop {
            let auth = self.auth_header()?;
            let response = self.send_with_retries(method, url, || match &auth {
                Some(value) => build().header(AUTHORIZATION, value),
                None => build(),
            })?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if refreshed {
                return Err(self.wrong_credentials());
            }
            refreshed = true;
            self.take_challenge(&response)?;
        }
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

fn read_limited(response: Response, limit: u64, what: &str, url: &str) -> Result<Vec<u8>> {
    if let Some(len) = response.content_length()
        && len > limit
    {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            size: len,
            limit,
        });
    }
    let mut bytes = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Io {
            path: url.into(),
            source: e,
        })?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
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

/// A blob body that, when the connection breaks off before `size` bytes,
/// asks again with `Range: bytes=N-` and carries on from byte N.
struct ResumingBody {
    remote: Remote,
    url: String,
    size: u64,
    pos: u64,
    body: Response,
    resumes: u32,
}

impl ResumingBody {
    fn new(remote: Remote, url: String, body: Response, size: u64) -> Self {
        Self {
            remote,
            url,
            size,
            pos: 0,
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
