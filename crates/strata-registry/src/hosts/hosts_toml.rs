//! containerd's hosts directory: `DIR/<registry>/hosts.toml`, or
//! `DIR/_default/hosts.toml` for a registry without its own.
//!
//! Read: `server`; `[host."URL"]` tables in file order with `capabilities`
//! (`pull`: may serve content by digest; `resolve`: may turn a tag into a
//! digest), `ca`, `client` (a PEM file holding certificate and key, or a
//! `[cert, key]` pair), `skip_verify`, `header`, `override_path` (the URL
//! is the whole API root, no `/v2` added).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Deserialize)]
struct File {
    server: Option<String>,
    #[serde(default)]
    host: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostTable {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany<PathBuf>>,
    client: Option<Client>,
    #[serde(default)]
    skip_verify: bool,
    #[serde(default)]
    header: toml::Table,
    #[serde(default)]
    override_path: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(t) => vec![t],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Client {
    One(PathBuf),
    Pair(Vec<PathBuf>),
    Pairs(Vec<Vec<PathBuf>>),
}

/// One `[host."URL"]`, or the `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// `scheme://host[:port][/path]`.
    pub url: String,
    /// May serve content by digest.
    pub pull: bool,
    /// May resolve tags.
    pub resolve: bool,
    /// Extra roots.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, Option<PathBuf>)>,
    /// Accept any certificate.
    pub skip_verify: bool,
    /// Headers sent with every request to it.
    pub headers: Vec<(String, String)>,
    /// The URL is the API root (no `/v2` appended).
    pub override_path: bool,
}

/// What a hosts directory says about one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHosts {
    /// The mirrors, in file order.
    pub hosts: Vec<HostEntry>,
    /// The `server`, when given (else the registry itself).
    pub server: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// Whether it is `_default/hosts.toml` (not the registry's own).
    pub is_default: bool,
}

/// The hosts.toml for `registry` under `dir` (its own, else `_default`),
/// if there is one.
///
/// # Errors
/// A file that does not parse, naming it.
pub fn lookup(dir: &Path, registry: &str) -> Result<Option<RegistryHosts>> {
    for name in [registry, "_default"] {
        let path = dir.join(name).join("hosts.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return parse(&text, &path).map(|mut h| {
                    h.is_default = name == "_default";
                    Some(h)
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(None)
}

fn parse(text: &str, path: &Path) -> Result<RegistryHosts> {
    let invalid = |detail: String| Error::InvalidLayout {
        path: path.to_owned(),
        format: "containerd hosts.toml",
        detail,
    };
    let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let relative = |p: PathBuf| {
        if p.is_absolute() {
            p
        } else {
            path.parent().unwrap_or(Path::new("/")).join(p)
        }
    };
    let mut hosts = Vec::new();
    for (url, table) in file.host {
        let table: HostTable = table
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("[host.{url:?}]: {e}")))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(format!(
                "[host.{url:?}] is not an http:// or https:// URL"
            )));
        }
        let caps = table
            .capabilities
            .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
        let client = match table.client {
            None => None,
            Some(Client::One(p)) => Some((relative(p), None)),
            Some(Client::Pair(v)) => pair(v, &relative),
            Some(Client::Pairs(v)) => v.into_iter().next().and_then(|p| pair(p, &relative)),
        };
        let mut headers = Vec::new();
        for (name, value) in table.header {
            match value {
                toml::Value::String(s) => headers.push((name, s)),
                toml::Value::Array(values) => {
                    for v in values {
                        if let toml::Value::String(s) = v {
                            headers.push((name.clone(), s));
                        }
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "header {name:?} is a {}, not a string",
                        other.type_str()
                    )));
                }
            }
        }
        for (name, value) in &headers {
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            let valid_value = value
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            if !valid_name || !valid_value {
                return Err(invalid(format!(
                    "[host.{url:?}] header {name:?} = {value:?} is not a valid HTTP header"
                )));
            }
        }
        let ca_files: Vec<PathBuf> = table
            .ca
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(relative)
            .collect();
        for file in ca_files
            .iter()
            .chain(client.iter().flat_map(|(c, k)| std::iter::once(c).chain(k)))
        {
            if !file.is_file() {
                return Err(invalid(format!(
                    "[host.{url:?}] names {}, which is not a file",
                    file.display()
                )));
            }
        }
        hosts.push(HostEntry {
            url: url.trim_end_matches('/').to_owned(),
            pull: caps.iter().any(|c| c == "pull"),
            resolve: caps.iter().any(|c| c == "resolve"),
            ca_files,
            client,
            skip_verify: table.skip_verify,
            headers,
            override_path: table.override_path,
        });
    }
    if let Some(server) = &file.server
        && !has_host(server)
    {
        return Err(invalid(format!(
            "server {server:?} is not an http:// or https:// URL with a host"
        )));
    }
    Ok(RegistryHosts {
        hosts,
        server: file.server.map(|s| s.trim_end_matches('/').to_owned()),
        file: path.to_owned(),
        is_default: false,
    })
}

/// `http://HOST…` or `https://HOST…` with a non-empty host.
fn has_host(url: &str) -> bool {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

fn pair(
    v: Vec<PathBuf>,
    relative: &impl Fn(PathBuf) -> PathBuf,
) -> Option<(PathBuf, Option<PathBuf>)> {
    let mut it = v.into_iter();
    let cert = it.next()?;
    Some((relative(cert), it.next().map(relative)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keep_their_file_order_capabilities_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("docker.io");
        std::fs::create_dir_all(&reg).unwrap();
        std::fs::write(
            reg.join("hosts.toml"),
            r#"
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5002"]
  capabilities = ["pull"]
  skip_verify = true
  [host."http://127.0.0.1:5002".header]
    x-fleet = "node-1"

[host."https://cache.example/v2/hub"]
  capabilities = ["pull", "resolve"]
  ca = "cache-ca.pem"
  client = ["client.pem", "client.key"]
  override_path = true
"#,
        )
        .unwrap();
        for f in ["cache-ca.pem", "client.pem", "client.key"] {
            std::fs::write(reg.join(f), b"pem").unwrap();
        }
        let hosts = lookup(dir.path(), "docker.io").unwrap().unwrap();
        assert_eq!(
            hosts.server.as_deref(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(hosts.hosts.len(), 2);
        let first = &hosts.hosts[0];
        assert_eq!(first.url, "http://127.0.0.1:5002");
        assert!(first.pull && !first.resolve && first.skip_verify);
        assert_eq!(first.headers, [("x-fleet".to_owned(), "node-1".to_owned())]);
        let second = &hosts.hosts[1];
        assert!(second.pull && second.resolve && second.override_path);
        assert_eq!(second.ca_files, [reg.join("cache-ca.pem")]);
        assert_eq!(
            second.client,
            Some((reg.join("client.pem"), Some(reg.join("client.key"))))
        );
        assert!(lookup(dir.path(), "quay.io").unwrap().is_none());
    }

    #[test]
    fn the_default_applies_to_registries_without_their_own_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"http://m:1\"]\n",
        )
        .unwrap();
        let hosts = lookup(dir.path(), "quay.io").unwrap().unwrap();
        assert!(
            hosts.hosts[0].pull && hosts.hosts[0].resolve,
            "all capabilities by default"
        );
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"http://m:1\"]\n  ca = \"missing.pem\"\n",
        )
        .unwrap();
        let err = lookup(dir.path(), "quay.io").unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("not a file"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"http://m:1\".header]\n  x-a = \"a\\nb\"\n",
        )
        .unwrap();
        let err = lookup(dir.path(), "quay.io").unwrap_err().to_string();
        assert!(err.contains("not a valid HTTP header"), "{err}");
        std::fs::write(dir.path().join("_default/hosts.toml"), "[host.\"m:1\"]\n").unwrap();
        let err = lookup(dir.path(), "quay.io").unwrap_err().to_string();
        assert!(
            err.contains("_default/hosts.toml") && err.contains("not an http"),
            "{err}"
        );
    }
}
