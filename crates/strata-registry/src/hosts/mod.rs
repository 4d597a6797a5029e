//! Host selection: which hosts a reference's requests go to, in order.
//!
//! Fleets point their nodes at mirrors and pull-through caches with the
//! files their other tools read: containers-registries.conf
//! ([`registries_conf`]) and containerd's hosts directory ([`hosts_toml`]).
//! [`HostConfig`] is read once (by the CLI) and travels in
//! [`crate::Options`]; [`HostConfig::plan`] turns a reference into a
//! [`HostPlan`]: the mirrors that may serve it, each with what it may be
//! asked (tags, digests), then the origin. The remote module walks the
//! plan; every byte is verified against the digests whoever serves it.
//!
//! When both files name a registry: an explicit `--hosts-dir` wins (the
//! user asked on the command line), else registries.conf wins over
//! `/etc/containerd/certs.d`.

pub mod hosts_toml;
pub mod registries_conf;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reference::Reference;
use crate::{Error, Result};
pub use registries_conf::PullFromMirror;

/// containerd's default hosts directory, used when it exists.
const CONTAINERD_HOSTS: &str = "/etc/containerd/certs.d";

/// The mirror configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// A configuration file that did not load: reported when a registry is
    /// first planned, so a pull from a local layout does not fail on it.
    broken: Option<(PathBuf, &'static str, String)>,
    registries: Vec<registries_conf::RegistryEntry>,
    hosts_dir: Option<PathBuf>,
    hosts_dir_first: bool,
    mirror_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            broken: None,
            registries: Vec::new(),
            hosts_dir: None,
            hosts_dir_first: false,
            mirror_timeout: Duration::from_secs(3),
        }
    }
}

/// One host a plan may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The reference as this host knows it: its registry name (for
    /// credentials and messages) and its repository; tag and digest are
    /// the user's.
    pub reference: Reference,
    /// `host[:port]` to connect to.
    pub host: String,
    /// The scheme, when the configuration fixes it.
    pub scheme: Option<&'static str>,
    /// The API root's path (`/v2` unless configured otherwise).
    pub api_path: String,
    /// Plain HTTP and any certificate allowed.
    pub insecure: bool,
    /// Extra roots for this host.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate (and key) for this host.
    pub client: Option<(PathBuf, Option<PathBuf>)>,
    /// Headers sent with every request to this host.
    pub headers: Vec<(String, String)>,
    /// May be asked for tags.
    pub resolve: bool,
    /// May serve manifests and blobs by digest.
    pub pull: bool,
    /// For a mirror: the origin registry, sent as `?ns=` (containerd's and
    /// Spegel's convention). `None` for the origin.
    pub mirror_of: Option<String>,
}

impl Endpoint {
    /// The origin as the reference names it, with nothing configured.
    #[must_use]
    pub fn origin(reference: &Reference) -> Self {
        Self {
            reference: reference.clone(),
            host: reference.api_host().to_owned(),
            scheme: None,
            api_path: "/v2".into(),
            insecure: false,
            ca_files: Vec::new(),
            client: None,
            headers: Vec::new(),
            resolve: true,
            pull: true,
            mirror_of: None,
        }
    }

    /// Whether this is a mirror (not the origin).
    #[must_use]
    pub fn is_mirror(&self) -> bool {
        self.mirror_of.is_some()
    }
}

/// Where one reference's requests go: the mirrors in order, the origin
/// last.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// Mirrors, then the origin.
    pub endpoints: Vec<Endpoint>,
    /// The file that decided it, if any.
    pub decided_by: Option<PathBuf>,
}

impl HostConfig {
    /// Reads registries.conf `files` and, when given, a hosts directory
    /// (`explicit`: named by the user, so it wins over registries.conf).
    ///
    /// # Errors
    /// A file that does not parse, naming it.
    pub fn load(files: &[PathBuf], hosts_dir: Option<&Path>, explicit: bool) -> Result<Self> {
        let (registries, broken) = match registries_conf::load(files) {
            Ok(r) => (r, None),
            Err(Error::InvalidLayout {
                path,
                format,
                detail,
            }) => (Vec::new(), Some((path, format, detail))),
            Err(e) => return Err(e),
        };
        Ok(Self {
            broken,
            registries,
            hosts_dir: hosts_dir.map(Path::to_owned),
            hosts_dir_first: explicit && hosts_dir.is_some(),
            ..Self::default()
        })
    }

    /// The files users already have: registries.conf from the usual places
    /// ([`registries_conf::usual_files`]), and `hosts_dir` or, without it,
    /// `/etc/containerd/certs.d` when it exists. An empty `hosts_dir`
    /// means none at all.
    ///
    /// # Errors
    /// As [`HostConfig::load`].
    pub fn usual(hosts_dir: Option<&Path>) -> Result<Self> {
        let default = Path::new(CONTAINERD_HOSTS);
        let (dir, explicit) = match hosts_dir {
            Some(d) if d.as_os_str().is_empty() => (None, false),
            Some(d) => (Some(d), true),
            None if default.is_dir() => (Some(default), false),
            None => (None, false),
        };
        Self::load(&registries_conf::usual_files(), dir, explicit)
    }

    /// The same, with another mirror timeout.
    #[must_use]
    pub fn with_mirror_timeout(self, mirror_timeout: Duration) -> Self {
        Self {
            mirror_timeout,
            ..self
        }
    }

    /// How long a mirror may take to connect or to answer before it is
    /// passed over for the rest of the pull.
    #[must_use]
    pub fn mirror_timeout(&self) -> Duration {
        self.mirror_timeout
    }

    /// The hosts for `reference`, in the order to try them.
    ///
    /// # Errors
    /// [`Error::Blocked`] for a blocked registry; a hosts.toml that does not
    /// parse; a rewritten location that is no reference.
    pub fn plan(&self, reference: &Reference) -> Result<HostPlan> {
        if let Some((path, format, detail)) = &self.broken {
            return Err(Error::InvalidLayout {
                path: path.clone(),
                format,
                detail: detail.clone(),
            });
        }
        let name = format!("{}/{}", reference.registry, reference.repository);
        let suffix = match (&reference.digest, &reference.tag) {
            (Some(d), _) => format!("@{d}"),
            (None, Some(t)) => format!(":{t}"),
            (None, None) => String::new(),
        };
        let entry = registries_conf::find(&self.registries, &name, &suffix);
        // A block is policy: it holds whichever file picks the hosts.
        if let Some(e) = entry
            && e.blocked
        {
            return Err(Error::Blocked {
                reference: reference.to_string(),
                prefix: e.prefix.clone(),
                file: e.file.clone(),
            });
        }
        let hosts = match &self.hosts_dir {
            Some(dir) => hosts_toml::lookup(dir, &reference.registry)?,
            None => None,
        };
        match (hosts, entry) {
            // An explicit hosts dir wins, but its `_default` does not
            // shadow what registries.conf says of this registry.
            (Some(h), _) if self.hosts_dir_first && !h.is_default => plan_from_hosts(reference, h),
            (_, Some(e)) => plan_from_registries(reference, &name, e),
            (Some(h), None) => plan_from_hosts(reference, h),
            (None, None) => Ok(HostPlan {
                endpoints: vec![Endpoint::origin(reference)],
                decided_by: None,
            }),
        }
    }
}

/// `host/repo…` (as registries.conf writes locations) into a reference
/// with the user's tag and digest.
fn located(name: &str, like: &Reference, file: &Path) -> Result<Reference> {
    let (registry, repository) = name.split_once('/').ok_or_else(|| Error::InvalidLayout {
        path: file.to_owned(),
        format: "containers-registries.conf (v2)",
        detail: format!("{name:?} (a location with the repository appended) names no repository"),
    })?;
    Ok(Reference {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        tag: like.tag.clone(),
        digest: like.digest.clone(),
    })
}

fn plan_from_registries(
    reference: &Reference,
    name: &str,
    entry: &registries_conf::RegistryEntry,
) -> Result<HostPlan> {
    let by_digest = reference.digest.is_some();
    let mut endpoints = Vec::new();
    for mirror in &entry.mirrors {
        let (resolve, pull) = match mirror.pull_from {
            PullFromMirror::All => (true, true),
            PullFromMirror::DigestOnly => (false, true),
            PullFromMirror::TagOnly if by_digest => continue,
            PullFromMirror::TagOnly => (true, true),
        };
        let at = located(
            &registries_conf::rewrite(&entry.prefix, &mirror.location, name),
            reference,
            &entry.file,
        )?;
        endpoints.push(Endpoint {
            host: at.api_host().to_owned(),
            reference: at,
            insecure: mirror.insecure,
            resolve,
            pull,
            mirror_of: Some(reference.registry.clone()),
            ..Endpoint::origin(reference)
        });
    }
    let origin = located(
        &registries_conf::rewrite(&entry.prefix, &entry.location, name),
        reference,
        &entry.file,
    )?;
    endpoints.push(Endpoint {
        insecure: entry.insecure,
        ..Endpoint::origin(&origin)
    });
    Ok(HostPlan {
        endpoints,
        decided_by: Some(entry.file.clone()),
    })
}

/// `scheme://host[:port][/path]` split.
fn split_url(url: &str) -> (&'static str, &str, &str) {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some((_, rest)) => ("https", rest),
        None => ("https", url),
    };
    match rest.find('/') {
        Some(i) => (scheme, &rest[..i], &rest[i..]),
        None => (scheme, rest, ""),
    }
}

fn plan_from_hosts(reference: &Reference, hosts: hosts_toml::RegistryHosts) -> Result<HostPlan> {
    let mut endpoints = Vec::new();
    for h in &hosts.hosts {
        if !h.pull && !h.resolve {
            continue;
        }
        let (scheme, host, path) = split_url(&h.url);
        let api_path = if h.override_path {
            path.to_owned()
        } else {
            format!("{path}/v2")
        };
        endpoints.push(Endpoint {
            reference: Reference {
                registry: host.to_owned(),
                ..reference.clone()
            },
            host: host.to_owned(),
            scheme: Some(scheme),
            api_path,
            insecure: h.skip_verify,
            ca_files: h.ca_files.clone(),
            client: h.client.clone(),
            headers: h.headers.clone(),
            resolve: h.resolve,
            pull: h.pull,
            mirror_of: Some(reference.registry.clone()),
        });
    }
    let mut origin = Endpoint::origin(reference);
    if let Some(server) = &hosts.server {
        let (scheme, host, path) = split_url(server);
        origin.host = host.to_owned();
        origin.scheme = Some(scheme);
        origin.api_path = format!("{path}/v2");
    }
    endpoints.push(origin);
    Ok(HostPlan {
        endpoints,
        decided_by: Some(hosts.file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> Reference {
        text.parse().unwrap()
    }

    fn config(
        conf: &str,
        hosts: Option<(&str, &str)>,
        explicit: bool,
    ) -> (HostConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registries.conf");
        std::fs::write(&file, conf).unwrap();
        let hosts_dir = dir.path().join("certs.d");
        if let Some((registry, text)) = hosts {
            std::fs::create_dir_all(hosts_dir.join(registry)).unwrap();
            std::fs::write(hosts_dir.join(registry).join("hosts.toml"), text).unwrap();
        }
        let cfg = HostConfig::load(&[file], hosts.map(|_| hosts_dir.as_path()), explicit).unwrap();
        (cfg, dir)
    }

    const CONF: &str = r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true
[[registry.mirror]]
location = "cache.example/hub"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.example"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "old.example/team"
location = "new.example/people"

[[registry]]
prefix = "blocked.example"
blocked = true
"#;

    #[test]
    fn mirrors_come_first_with_what_they_may_be_asked_then_the_origin() {
        let (cfg, _d) = config(CONF, None, false);
        let plan = cfg.plan(&reference("alpine:3")).unwrap();
        let hosts: Vec<(&str, &str, bool, bool)> = plan
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.host.as_str(),
                    e.reference.repository.as_str(),
                    e.resolve,
                    e.pull,
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.1:5001", "library/alpine", true, true),
                ("cache.example", "hub/library/alpine", false, true),
                ("tags.example", "library/alpine", true, true),
                ("registry-1.docker.io", "library/alpine", true, true),
            ]
        );
        assert_eq!(plan.endpoints[0].mirror_of.as_deref(), Some("docker.io"));
        assert!(plan.endpoints[0].insecure);
        assert!(!plan.endpoints[3].is_mirror());
        let by_digest = cfg
            .plan(&reference(
                "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ))
            .unwrap();
        assert!(
            by_digest.endpoints.iter().all(|e| e.host != "tags.example"),
            "a tag-only mirror is not used for a digest reference"
        );
    }

    #[test]
    fn a_wildcard_mirror_takes_the_matched_host_and_docker_hub_is_dialled_at_its_api() {
        let conf = "[[registry]]\nprefix = \"*.corp.example\"\n[[registry.mirror]]\nlocation = \"cache.corp.example/m\"\n\n[[registry]]\nprefix = \"quay.io\"\n[[registry.mirror]]\nlocation = \"docker.io/quay\"\n";
        let (cfg, _d) = config(conf, None, false);
        let plan = cfg.plan(&reference("git.corp.example:5000/a/b:1")).unwrap();
        assert_eq!(plan.endpoints[0].host, "cache.corp.example");
        assert_eq!(plan.endpoints[0].reference.repository, "m/a/b");
        assert_eq!(plan.endpoints[1].host, "git.corp.example:5000");
        let plan = cfg.plan(&reference("quay.io/x/y:1")).unwrap();
        assert_eq!(plan.endpoints[0].host, "registry-1.docker.io");
    }

    #[test]
    fn locations_rewrite_and_blocked_registries_name_the_file() {
        let (cfg, dir) = config(CONF, None, false);
        let plan = cfg.plan(&reference("old.example/team/app:1")).unwrap();
        assert_eq!(plan.endpoints.len(), 1);
        assert_eq!(plan.endpoints[0].host, "new.example");
        assert_eq!(plan.endpoints[0].reference.repository, "people/app");
        assert_eq!(plan.endpoints[0].reference.tag.as_deref(), Some("1"));
        let err = cfg
            .plan(&reference("blocked.example/x:1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocked")
                && err.contains(&dir.path().join("registries.conf").display().to_string()),
            "{err}"
        );
        let plain = cfg.plan(&reference("quay.io/a/b:1")).unwrap();
        assert_eq!(
            plain.endpoints,
            [Endpoint::origin(&reference("quay.io/a/b:1"))]
        );
    }

    #[test]
    fn an_explicit_hosts_dir_wins_over_registries_conf_and_else_loses() {
        let hosts = r#"
server = "http://127.0.0.1:6000"
[host."http://127.0.0.1:6001/base"]
  capabilities = ["pull"]
"#;
        let (cfg, _d) = config(CONF, Some(("docker.io", hosts)), true);
        let plan = cfg.plan(&reference("alpine:3")).unwrap();
        assert_eq!(plan.endpoints.len(), 2);
        let mirror = &plan.endpoints[0];
        assert_eq!(
            (
                mirror.host.as_str(),
                mirror.api_path.as_str(),
                mirror.scheme
            ),
            ("127.0.0.1:6001", "/base/v2", Some("http"))
        );
        assert!(mirror.pull && !mirror.resolve);
        assert_eq!(plan.endpoints[1].host, "127.0.0.1:6000");
        assert_eq!(
            plan.endpoints[1].reference.registry, "docker.io",
            "credentials stay the origin's name"
        );
        let (cfg, _d) = config(CONF, Some(("docker.io", hosts)), false);
        assert_eq!(
            cfg.plan(&reference("alpine:3")).unwrap().endpoints.len(),
            4,
            "registries.conf wins over certs.d"
        );
    }
}
