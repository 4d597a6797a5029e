//! Reading through mirrors: a [`HostPlan`]'s hosts, in order, each asked
//! only what it may be asked (a `digest-only` mirror, or a hosts.toml host
//! without `resolve`, never sees a tag), the origin last.
//!
//! Hosts are opened when first needed, so an origin that is down does not
//! stop a pull a mirror can serve. A mirror that fails (does not connect
//! or answer within the mirror timeout, answers 404 or 5xx, or serves a
//! manifest that does not match its digest) is passed over for the rest of
//! the pull, with a warning that names it. Blobs are verified by the
//! caller whoever serves them; [`Transport::blob_served`] says who did.

use std::io::Read;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::image::{Descriptor, Digest};
use tracing::{info, warn};

use super::{Access, Remote};
use crate::hosts::{Endpoint, HostPlan};
use crate::manifest::RawManifest;
use crate::options::Options;
use crate::reference::Reference;
use crate::transport::Transport;
use crate::{Error, Result};

struct Host {
    endpoint: Endpoint,
    remote: OnceLock<std::result::Result<Remote, String>>,
    passed_over: AtomicBool,
}

/// A repository behind mirrors.
pub(crate) struct Mirrored {
    reference: Reference,
    hosts: Vec<Host>,
    options: Options,
}

/// What a request needs of a host.
#[derive(Clone, Copy)]
enum Need {
    /// A tag resolved.
    Tag,
    /// Content by digest.
    Digest,
}

impl Mirrored {
    pub(crate) fn new(reference: &Reference, plan: HostPlan, options: &Options) -> Self {
        Self {
            reference: reference.clone(),
            hosts: plan
                .endpoints
                .into_iter()
                .map(|endpoint| Host {
                    endpoint,
                    remote: OnceLock::new(),
                    passed_over: AtomicBool::new(false),
                })
                .collect(),
            options: options.clone(),
        }
    }

    fn open<'a>(&self, host: &'a Host) -> Result<&'a Remote> {
        let opened = host.remote.get_or_init(|| {
            Remote::open(&host.endpoint, &self.options, Access::Pull).map_err(|e| chain(&e))
        });
        opened.as_ref().map_err(|e| Error::NotFound {
            reference: host.endpoint.reference.to_string(),
            detail: format!(": {e}"),
        })
    }

    /// Runs `op` on each host that may serve `need`, in order, until one
    /// succeeds; a failing mirror is passed over, the origin's error is
    /// the answer.
    fn each<T>(
        &self,
        need: Need,
        what: &str,
        op: impl Fn(&Remote) -> Result<T>,
    ) -> Result<(T, &Endpoint)> {
        let by_digest = self.reference.digest.is_some();
        let mut last_error = None;
        for host in &self.hosts {
            let e = &host.endpoint;
            let allowed = match need {
                Need::Tag if by_digest => e.pull,
                Need::Tag => e.resolve,
                Need::Digest => e.pull,
            };
            if !allowed || host.passed_over.load(Ordering::Relaxed) {
                continue;
            }
            let result = self.open(host).and_then(&op);
            match result {
                Ok(v) => return Ok((v, e)),
                Err(err) if e.is_mirror() => {
                    warn!(mirror = %e.host, error = %chain(&err), "passing over a mirror for the rest of this pull ({what})");
                    host.passed_over.store(true, Ordering::Relaxed);
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotFound {
            reference: self.reference.to_string(),
            detail: ": no configured host may serve it".into(),
        }))
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl Transport for Mirrored {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn top(&self) -> Result<RawManifest> {
        let (raw, host) = self.each(Need::Tag, "the manifest", Transport::top)?;
        info!(host = %host.host, "manifest served");
        Ok(raw)
    }

    fn top_digest(&self) -> Result<Option<Digest>> {
        if let Some(d) = &self.reference.digest {
            return Ok(Some(d.clone()));
        }
        self.each(Need::Tag, "the tag", Transport::top_digest)
            .map(|(d, _)| d)
    }

    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        self.each(Need::Digest, "a platform manifest", |r| {
            r.manifest(descriptor)
        })
        .map(|(m, _)| m)
    }

    fn blob(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        self.blob_served(descriptor).map(|(r, _)| r)
    }

    fn blob_served(
        &self,
        descriptor: &Descriptor,
    ) -> Result<(Box<dyn Read + Send>, Option<String>)> {
        let (reader, host) = self.each(Need::Digest, "a blob", |r| r.blob(descriptor))?;
        Ok((reader, host.is_mirror().then(|| host.host.clone())))
    }
}
