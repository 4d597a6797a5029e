//! Image references: Docker's normalised names and skopeo's transports.
//!
//! Parsing is pure: no I/O happens here, so every rule has a unit test.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::image::Digest;

use crate::digest::parse_digest;
use crate::{Error, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
pub(crate) const DOCKER_HUB_API: &str = "registry-1.docker.io";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A reference to an image in a registry, normalised as Docker does:
/// `alpine` is `docker.io/library/alpine:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/alpine`).
    pub repository: String,
    /// The tag, if the reference has one. `latest` is filled in only when the
    /// reference has neither tag nor digest.
    pub tag: Option<String>,
    /// The digest, if pinned. When both are given the digest wins and the tag
    /// is only informative, as with Docker.
    pub digest: Option<Digest>,
}

impl Reference {
    /// The host the distribution API is served from (Docker Hub's differs from
    /// its name).
    #[must_use]
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (`localhost`, 127.0.0.0/8,
    /// `[::1]`), where plain HTTP is allowed without asking.
    #[must_use]
    pub fn is_loopback(&self) -> bool {
        let host = host_without_port(&self.registry);
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    #[must_use]
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            input: input.to_owned(),
            reason: format!("{reason}; expected [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]"),
        };
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A tag separator is a ':' after the last '/'; earlier ones are ports.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(&format!(
                "tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
            )));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if !valid_host(&registry) {
            return Err(invalid(&format!(
                "registry {registry:?} must be HOST[:PORT] or [IPv6]:PORT"
            )));
        }
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty() {
            return Err(invalid("the repository name is empty"));
        }
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        for component in repository.split('/') {
            if !valid_path_component(component) {
                return Err(invalid(&format!(
                    "repository component {component:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
                )));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

fn valid_host(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, distribution's path component grammar.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// How a docker-save archive names the image to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveImage {
    /// A `RepoTags` entry, e.g. `busybox:latest` (normalised before comparing).
    Tag(String),
    /// The n-th image of `manifest.json`, written `@N` as skopeo does.
    Index(usize),
}

/// Where an image comes from: a registry, or a file or directory the user has.
/// The transport names are skopeo's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `alpine`, `ghcr.io/o/r:tag`, `docker://…`
    Registry(Reference),
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    OciDir {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if several.
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`: a tar of an OCI image layout.
    OciArchive {
        /// The tar file.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if several.
        tag: Option<String>,
    },
    /// `docker-archive:FILE[:NAME:TAG|:@N]`: a `docker save` tar.
    DockerArchive {
        /// The tar file.
        path: PathBuf,
        /// Which image, when the archive holds several.
        image: Option<ArchiveImage>,
    },
}

/// skopeo transports strata does not read; refused by name.
const UNSUPPORTED_TRANSPORTS: [&str; 5] = [
    "dir",
    "containers-storage",
    "docker-daemon",
    "ostree",
    "sif",
];
/// Every transport prefix: a registry whose host is one of these prints with
/// `docker://`, so that what is printed parses back to the same image.
const TRANSPORTS: [&str; 8] = [
    "oci",
    "oci-archive",
    "docker-archive",
    "dir",
    "containers-storage",
    "docker-daemon",
    "ostree",
    "sif",
];

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_tag = |f: &mut fmt::Formatter<'_>, t: &str, p: &PathBuf, tag: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            if let Some(tag) = tag {
                write!(f, ":{tag}")?;
            }
            Ok(())
        };
        match self {
            Self::Registry(r)
                if TRANSPORTS.contains(&r.registry.split(':').next().unwrap_or("")) =>
            {
                write!(f, "docker://{r}")
            }
            Self::Registry(r) => write!(f, "{r}"),
            Self::OciDir { path, tag } => with_tag(f, "oci", path, tag),
            Self::OciArchive { path, tag } => with_tag(f, "oci-archive", path, tag),
            Self::DockerArchive { path, image } => {
                write!(f, "docker-archive:{}", path.display())?;
                match image {
                    Some(ArchiveImage::Tag(t)) => write!(f, ":{t}"),
                    Some(ArchiveImage::Index(i)) => write!(f, ":@{i}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        // Path and name are split at the first ':' after the transport, as
        // skopeo does: paths with ':' cannot be named this way.
        let split = |rest: &str| -> Result<(PathBuf, Option<String>)> {
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t.to_owned())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(invalid("the path is empty; expected TRANSPORT:PATH[:TAG]"));
            }
            if tag.as_deref() == Some("") {
                return Err(invalid(
                    "the tag after the path is empty; expected TRANSPORT:PATH[:TAG]",
                ));
            }
            Ok((PathBuf::from(path), tag))
        };
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split(rest)?;
            return Ok(Self::OciDir { path, tag });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split(rest)?;
            return Ok(Self::OciArchive { path, tag });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, name) = split(rest)?;
            let image = match name {
                None => None,
                Some(n) => match n.strip_prefix('@') {
                    Some(i) => Some(ArchiveImage::Index(i.parse().map_err(|_| {
                        invalid("expected docker-archive:FILE:@N with N a number")
                    })?)),
                    None => {
                        // Validate it as a reference so typos are caught here.
                        n.parse::<Reference>()?;
                        Some(ArchiveImage::Tag(n))
                    }
                },
            };
            return Ok(Self::DockerArchive { path, image });
        }
        // After an explicit `docker://` a first ':' is a port ("dir:5000").
        let (rest, explicit) = match input.strip_prefix("docker://") {
            Some(rest) => (rest, true),
            None => (input, false),
        };
        if let Some((transport, _)) = rest.split_once(':')
            && !explicit
            && UNSUPPORTED_TRANSPORTS.contains(&transport)
        {
            return Err(invalid(&format!(
                "transport {transport:?} is not supported; use a registry reference, oci:DIR, oci-archive:FILE or docker-archive:FILE"
            )));
        }
        Ok(Self::Registry(rest.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Found by `just fuzz` (reference target): a registry host named like a
    /// transport printed as that transport's reference.
    #[test]
    fn a_registry_named_like_a_transport_prints_back_as_a_registry() {
        for input in [
            "docker://docker-archive:000000000000000000000000000000002/2b92427ae41e4649b9981b7852b855",
            "docker://oci:5000/x",
            "docker://dir:5000/x:1",
        ] {
            let image: ImageRef = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(matches!(image, ImageRef::Registry(_)), "{input}");
            let printed = image.to_string();
            assert!(printed.starts_with("docker://"), "{printed}");
            assert_eq!(printed.parse::<ImageRef>().unwrap(), image, "{input}");
        }
        assert!(
            "dir:5000/x".parse::<ImageRef>().is_err(),
            "without docker:// it is the dir transport"
        );
    }

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("library/alpine", "docker.io/library/alpine:latest"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            (
                "index.docker.io/library/alpine",
                "docker.io/library/alpine:latest",
            ),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            ("ghcr.io/o/r:tag", "ghcr.io/o/r:tag"),
            ("[::1]:5000/x:1", "[::1]:5000/x:1"),
            (
                "my-registry.example:443/a_b/c__d/e-f--g.h",
                "my-registry.example:443/a_b/c__d/e-f--g.h:latest",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_and_tags() {
        let pinned = r(&format!("alpine@{D}"));
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.manifest_reference(), D);
        let both = r(&format!("ghcr.io/o/r:v1@{D}"));
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert_eq!(both.manifest_reference(), D, "the digest wins over the tag");
        assert_eq!(r("localhost:5000/x").manifest_reference(), "latest");
    }

    #[test]
    fn api_host_and_loopback() {
        assert_eq!(r("alpine").api_host(), "registry-1.docker.io");
        assert_eq!(r("ghcr.io/o/r").api_host(), "ghcr.io");
        assert!(r("localhost:5000/x").is_loopback());
        assert!(r("127.0.0.2:5000/x").is_loopback());
        assert!(r("[::1]:5000/x").is_loopback());
        assert!(!r("ghcr.io/o/r").is_loopback());
        assert!(!r("alpine").is_loopback());
    }

    #[test]
    fn invalid_references_say_what_was_expected() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "a/-b",
            "alpine@sha256:1234",
            "alpine@sha256:../../x",
            "ghcr.io/",
            "x:tag:with:colons/y",
        ] {
            let err = bad.parse::<Reference>().expect_err(bad).to_string();
            assert!(err.contains("invalid"), "{bad}: {err}");
        }
        let err = "Alpine".parse::<Reference>().unwrap_err().to_string();
        assert!(
            err.contains("expected [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]"),
            "{err}"
        );
    }

    #[test]
    fn transports() {
        let cases: [(&str, ImageRef); 7] = [
            (
                "oci:/l",
                ImageRef::OciDir {
                    path: "/l".into(),
                    tag: None,
                },
            ),
            (
                "oci:./l:v1",
                ImageRef::OciDir {
                    path: "./l".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci-archive:i.tar",
                ImageRef::OciArchive {
                    path: "i.tar".into(),
                    tag: None,
                },
            ),
            (
                "oci-archive:i.tar:x",
                ImageRef::OciArchive {
                    path: "i.tar".into(),
                    tag: Some("x".into()),
                },
            ),
            (
                "docker-archive:s.tar",
                ImageRef::DockerArchive {
                    path: "s.tar".into(),
                    image: None,
                },
            ),
            (
                "docker-archive:s.tar:busybox:latest",
                ImageRef::DockerArchive {
                    path: "s.tar".into(),
                    image: Some(ArchiveImage::Tag("busybox:latest".into())),
                },
            ),
            (
                "docker-archive:s.tar:@1",
                ImageRef::DockerArchive {
                    path: "s.tar".into(),
                    image: Some(ArchiveImage::Index(1)),
                },
            ),
        ];
        for (input, want) in cases {
            let got: ImageRef = input.parse().unwrap();
            assert_eq!(got, want, "{input}");
            assert_eq!(got.to_string(), input);
        }
        assert_eq!(
            "docker://alpine".parse::<ImageRef>().unwrap(),
            ImageRef::Registry(r("alpine"))
        );
        for bad in [
            "oci:",
            "oci::tag",
            "docker-archive:x.tar:@x",
            "dir:/tmp/x",
            "containers-storage:x",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
