//! What is tried again, how often, and after how long.

use std::io;
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tracing::warn;

use super::Remote;
use super::client::{error_chain, http_error, status_error};
use crate::{Error, Result};

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
pub(super) fn is_connect_error(error: &Error) -> bool {
    matches!(error, Error::Http { source, .. } if source.is_connect())
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

impl Remote {
    /// One try, no retries (a probe whose failure is an answer).
    pub(super) fn send_once(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let response = build().send().map_err(|e| http_error(method, url, e))?;
        self.0.answered.store(true, Ordering::Relaxed);
        Ok(response)
    }

    /// Sends with retries on connection errors, 408/429/5xx, honouring
    /// `Retry-After`. Returns any other response, 401 included.
    pub(super) fn send_with_retries(
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
}
