//! How to reach registries: the options every source and destination shares.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Credentials;
use crate::hosts::HostConfig;

/// When to speak plain HTTP to a registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PlainHttp {
    /// HTTPS, except for a loopback registry: plain HTTP first, then HTTPS
    /// when the port speaks TLS (`docker` allows HTTP for loopback too).
    #[default]
    Auto,
    /// Always HTTP (`--plain-http`).
    Always,
    /// Never HTTP, not even on loopback.
    Never,
}

/// How to reach registries. The defaults are what a user expects.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--plain-http`.
    pub plain_http: PlainHttp,
    /// `--ca-file`: extra PEM roots to trust.
    pub ca_files: Vec<PathBuf>,
    /// `--insecure`: accept any TLS certificate.
    pub insecure: bool,
    /// `--creds`; when `None`, [`Options::auth_files`] are searched.
    pub creds: Option<Credentials>,
    /// Auth files to search, in order (default: [`crate::auth_files`]).
    pub auth_files: Vec<PathBuf>,
    /// Retries and resumes.
    pub retry: RetryPolicy,
    /// How long a request may wait for headers, or a body for its next bytes.
    pub stall_timeout: Duration,
    /// Fetch foreign (non-distributable) layers from their `urls`.
    pub foreign_urls: bool,
    /// Mirrors, pull-through caches and rewrites (registries.conf,
    /// hosts.toml), read once by the caller. Default: none.
    pub hosts: HostConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            plain_http: PlainHttp::Auto,
            ca_files: Vec::new(),
            insecure: false,
            creds: None,
            auth_files: crate::auth::auth_files(),
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(60),
            foreign_urls: false,
            hosts: HostConfig::default(),
        }
    }
}

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
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay)
    }
}
