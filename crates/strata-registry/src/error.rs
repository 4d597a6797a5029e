//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding an image or reading its bytes.
///
/// Variants carry the data a user needs to act: which reference, which URL,
/// which digest. Messages are lowercase and read well after "failed to …";
/// the source of each error is exposed through `source()`, not repeated in the
/// message, because the CLI prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text given as an image reference does not parse.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// What the user typed.
        input: String,
        /// What was wrong, and the form that was expected.
        reason: String,
    },

    /// A digest string is malformed or uses an algorithm strata does not verify.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as found.
        digest: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// `--platform` (or a platform in an index) does not parse.
    #[error(
        "invalid platform {input:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    )]
    InvalidPlatform {
        /// What the user typed.
        input: String,
    },

    /// Bytes did not hash to the digest that names them.
    #[error("{what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (e.g. "layer blob", "manifest").
        what: String,
        /// The digest the manifest or reference promised.
        expected: String,
        /// The digest of the bytes actually received.
        actual: String,
    },

    /// A blob was longer or shorter than its descriptor says.
    #[error("{what} {digest} size mismatch: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being read.
        what: String,
        /// The blob's digest.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The bytes received (so far, when too many).
        actual: u64,
    },

    /// A manifest or config is larger than strata will hold in memory.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A manifest kind strata cannot use.
    #[error("unsupported manifest media type {media_type:?} for {reference}{hint}")]
    UnsupportedManifest {
        /// The image.
        reference: String,
        /// The media type found.
        media_type: String,
        /// Extra advice, starting with "; " when present.
        hint: &'static str,
    },

    /// A layer of a media type strata does not know how to unpack.
    #[error("layer {digest} of {reference} has unsupported media type {media_type:?}")]
    UnsupportedLayer {
        /// The image.
        reference: String,
        /// The layer's digest.
        digest: String,
        /// The media type found.
        media_type: String,
    },

    /// The index has no manifest for the wanted platform.
    #[error("{reference} has no image for platform {wanted}; it has: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },

    /// The image (or tag) does not exist at the source.
    #[error("{reference} not found{detail}")]
    NotFound {
        /// The image.
        reference: String,
        /// Extra detail, starting with ": " when present.
        detail: String,
    },

    /// The registry wants credentials strata does not have or that it refused.
    #[error("{registry} refused access to {repository}: {detail}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// What happened and what to do about it.
        detail: String,
    },

    /// The registry keeps answering 429 Too Many Requests.
    #[error("rate limited by {url}{}", retry_after.map(|s| format!("; the registry asks to wait {s} s before retrying")).unwrap_or_default())]
    RateLimited {
        /// The URL that was refused.
        url: String,
        /// Seconds the registry asked to wait, from `Retry-After`.
        retry_after: Option<u64>,
    },

    /// The registry answered with an HTTP status strata cannot proceed on.
    #[error("{method} {url} returned {status}{}", body_excerpt(body))]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body (registries explain errors there).
        body: String,
    },

    /// The request did not get an HTTP answer (connect, TLS, or a broken body).
    #[error("{method} {url}")]
    Http {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// A TLS or client setup problem (e.g. a `--ca-file` that is not PEM).
    #[error("setting up the HTTP client: {detail}")]
    ClientSetup {
        /// What failed.
        detail: String,
        /// The underlying error, if any.
        #[source]
        source: Option<reqwest::Error>,
    },

    /// A credential helper or auth file failed.
    #[error("reading credentials for {registry} from {from}: {detail}")]
    Credentials {
        /// The registry host.
        registry: String,
        /// Where they were looked for (a file path or `docker-credential-*`).
        from: String,
        /// What went wrong.
        detail: String,
    },

    /// JSON that does not parse as what it should be.
    #[error("parsing {what}")]
    Json {
        /// What was being parsed (e.g. "manifest sha256:…").
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A local file (OCI layout, archive) could not be read.
    #[error("reading {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A blob upload kept breaking off and ran out of fresh starts.
    #[error("uploading {what} failed {attempts} times from the first byte; the last time: {last}")]
    UploadFailed {
        /// The blob and where it was going.
        what: String,
        /// How many uploads were started.
        attempts: u32,
        /// Why the last one ended.
        last: String,
    },

    /// The registry configuration blocks the reference.
    #[error("{reference} is blocked by the [[registry]] prefix {prefix:?} in {}", file.display())]
    Blocked {
        /// The image.
        reference: String,
        /// The entry's prefix.
        prefix: String,
        /// The registries.conf file.
        file: PathBuf,
    },

    /// A registry refused to store what was sent, for a reason the user's
    /// operator must address (too large, out of storage).
    #[error("{registry} refused the write: {detail}")]
    Refused {
        /// The registry host.
        registry: String,
        /// What was refused and why.
        detail: String,
        /// The registry's answer.
        #[source]
        cause: Box<Error>,
    },

    /// A local image layout or archive is not shaped as its format requires.
    #[error("{} is not a valid {format}: {detail}", path.display())]
    InvalidLayout {
        /// The file or directory.
        path: PathBuf,
        /// "OCI image layout", "docker-archive", …
        format: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn body_excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let cut: String = body.chars().take(300).collect();
    format!(": {cut}")
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }

    /// Whether this error means the bytes were not what their digest promised.
    /// Callers use it to choose an exit code and to discard partial output.
    #[must_use]
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. }
        )
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
