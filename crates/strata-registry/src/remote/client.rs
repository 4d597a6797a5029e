//! The HTTP client and how its answers become errors.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::warn;

use crate::hosts::Endpoint;
use crate::options::Options;
use crate::{Error, Result};

pub(super) fn http_error(method: &'static str, url: &str, source: reqwest::Error) -> Error {
    Error::Http {
        method,
        url: url.to_owned(),
        source,
    }
}

pub(super) fn status_error(method: &'static str, url: &str, response: Response) -> Error {
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

/// An error and its causes on one line, for log messages.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Debian's and Ubuntu's bundle of the system's trusted CAs (local ones included).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The HTTP client. `system_roots` adds the system's CA bundle (a file read
/// and ~150 certificates parsed): a plain-HTTP loopback registry skips it.
///
/// `endpoint` adds what the host configuration says of this host (its CA
/// files, client certificate, headers, `insecure`); `stall` bounds the
/// connect and each wait for bytes (short for a mirror).
pub(crate) fn build_client(
    opts: &Options,
    endpoint: &Endpoint,
    stall: Duration,
    system_roots: bool,
) -> Result<Client> {
    let mut headers = HeaderMap::new();
    for (name, value) in &endpoint.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::ClientSetup {
            detail: format!("header name {name:?} configured for {}", endpoint.host),
            source: None,
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| Error::ClientSetup {
            detail: format!("header value {value:?} configured for {}", endpoint.host),
            source: None,
        })?;
        headers.append(name, value);
    }
    let mut builder = Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(stall.min(Duration::from_secs(30)))
        // In the blocking client this bounds the wait for headers and for each
        // read of the body: a stalled connection fails instead of hanging.
        .timeout(stall)
        .default_headers(headers)
        .danger_accept_invalid_certs(opts.insecure || endpoint.insecure);
    if let Some((cert, key)) = &endpoint.client {
        let mut pem = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
        if let Some(key) = key {
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| Error::io(key, e))?);
        }
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| Error::ClientSetup {
            detail: format!("{} is not a PEM certificate and key", cert.display()),
            source: Some(e),
        })?;
        builder = builder.identity(identity);
    }
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
    for path in opts.ca_files.iter().chain(&endpoint.ca_files) {
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

pub(super) fn read_limited(
    response: Response,
    limit: u64,
    what: &str,
    url: &str,
) -> Result<Vec<u8>> {
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
