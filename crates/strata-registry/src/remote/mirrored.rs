//! Reading through mirrors: a [`HostPlan`]'s hosts, in order, each asked
//! only what it may be asked (a `digest-only` mirror, or a hosts.toml host
//! without `resolve`, never sees a tag), the origin last.
//!
//! Hosts are opened when first needed, so an origin that is down does not
//! stop a pull a mirror can serve. A mirror that fails (does not connect
//! or answer within the mirror timeout, answers 404 or 5xx, serves a
//! manifest that does not parse or match its digest, or breaks off a blob
//! it was serving) is passed over for the rest of the pull, with a warning
//! that names it; a blob it broke off goes on from the next host at the
//! same byte. Blobs are verified by the caller whoever serves them;
//! [`Transport::blob_served`] says who did.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, Digest};
use tracing::{info, warn};

use super::client::error_chain;
use super::{Access, Remote};
use crate::hosts::{Endpoint, HostPlan};
use crate::manifest::RawManifest;
use crate::options::Options;
use crate::reference::Reference;
use crate::transport::Transport;
use crate::{Error, Result};

struct Host {
    endpoint: Endpoint,
    /// Opened once it answered; a failed open is tried again only for the
    /// origin (a mirror that failed is passed over).
    remote: Mutex<Option<Remote>>,
    passed_over: AtomicBool,
}

struct Inner {
    reference: Reference,
    hosts: Vec<Host>,
    options: Options,
}

/// A repository behind mirrors. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Mirrored(Arc<Inner>);

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
        Self(Arc::new(Inner {
            reference: reference.clone(),
            hosts: plan
                .endpoints
                .into_iter()
                .map(|endpoint| Host {
                    endpoint,
                    remote: Mutex::new(None),
                    passed_over: AtomicBool::new(false),
                })
                .collect(),
            options: options.clone(),
        }))
    }

    fn open(&self, host: &Host) -> Result<Remote> {
        let mut slot = host.remote.lock().expect("host lock poisoned");
        if let Some(remote) = slot.as_ref() {
            return Ok(remote.clone());
        }
        let remote = Remote::open(&host.endpoint, &self.0.options, Access::Pull)?;
        *slot = Some(remote.clone());
        Ok(remote)
    }

    fn allowed(&self, host: &Host, need: Need) -> bool {
        let e = &host.endpoint;
        let ok = match need {
            Need::Tag if self.0.reference.digest.is_some() => e.pull,
            Need::Tag => e.resolve,
            Need::Digest => e.pull,
        };
        ok && !host.passed_over.load(Ordering::Relaxed)
    }

    fn pass_over(host: &Host, what: &str, error: &dyn std::error::Error) {
        warn!(mirror = %host.endpoint.host, error = %error_chain(error), "passing over a mirror for the rest of this pull ({what})");
        host.passed_over.store(true, Ordering::Relaxed);
    }

    /// Runs `op` on each host that may serve `need`, from host `from` on,
    /// until one succeeds; a failing mirror is passed over, the origin's
    /// error is the answer.
    fn each<T>(
        &self,
        need: Need,
        from: usize,
        what: &str,
        op: impl Fn(&Remote) -> Result<T>,
    ) -> Result<(T, usize)> {
        let mut last_error = None;
        for (i, host) in self.0.hosts.iter().enumerate().skip(from) {
            if !self.allowed(host, need) {
                continue;
            }
            match self.open(host).and_then(|r| op(&r)) {
                Ok(v) => return Ok((v, i)),
                Err(err) if host.endpoint.is_mirror() => {
                    Self::pass_over(host, what, &err);
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotFound {
            reference: self.0.reference.to_string(),
            detail: ": no configured host may serve it".into(),
        }))
    }
}

impl Transport for Mirrored {
    fn describe(&self) -> String {
        self.0.reference.to_string()
    }

    fn top(&self) -> Result<RawManifest> {
        let name = self.describe();
        // A mirror's answer must at least be a manifest: garbage from one is
        // passed over like a 404, not taken.
        let (raw, i) = self.each(Need::Tag, 0, "the manifest", |r| {
            let raw = r.top()?;
            raw.parse(&name)?;
            Ok(raw)
        })?;
        info!(host = %self.0.hosts[i].endpoint.host, "manifest served");
        Ok(raw)
    }

    fn top_digest(&self) -> Result<Option<Digest>> {
        if let Some(d) = &self.0.reference.digest {
            return Ok(Some(d.clone()));
        }
        self.each(Need::Tag, 0, "the tag", Transport::top_digest)
            .map(|(d, _)| d)
    }

    fn manifest(&self, descriptor: &Descriptor) -> Result<RawManifest> {
        self.each(Need::Digest, 0, "a platform manifest", |r| {
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
        let (reader, i) = self.each(Need::Digest, 0, "a blob", |r| r.blob(descriptor))?;
        let endpoint = &self.0.hosts[i].endpoint;
        let served_by = endpoint.is_mirror().then(|| endpoint.host.clone());
        if !endpoint.is_mirror() {
            return Ok((reader, None));
        }
        Ok((
            Box::new(Failover {
                mirrored: self.clone(),
                descriptor: descriptor.clone(),
                host: i,
                reader,
                pos: 0,
            }),
            served_by,
        ))
    }
}

/// A blob body from a mirror that, when the mirror breaks off (after its
/// own resumes), goes on from the next host at the same byte.
struct Failover {
    mirrored: Mirrored,
    descriptor: Descriptor,
    host: usize,
    reader: Box<dyn Read + Send>,
    pos: u64,
}

impl Read for Failover {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.mirrored.0.hosts[self.host].endpoint.is_mirror() => {
                    let host = &self.mirrored.0.hosts[self.host];
                    Mirrored::pass_over(host, "a blob broke off", &e);
                    let (pos, descriptor) = (self.pos, self.descriptor.clone());
                    let next = self
                        .mirrored
                        .each(Need::Digest, self.host + 1, "a blob", |r| {
                            r.blob_from(&descriptor, pos)
                        });
                    match next {
                        Ok((reader, i)) => {
                            info!(host = %self.mirrored.0.hosts[i].endpoint.host, offset = pos, "the blob goes on from another host");
                            self.reader = reader;
                            self.host = i;
                        }
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
