//! containers-registries.conf v2 (podman, skopeo, buildah, CRI-O): the
//! `[[registry]]` tables with their mirrors.
//!
//! What is read: `prefix` / `location` (a reference under `prefix` is
//! rewritten to `location`, the longest matching prefix wins, `*.host`
//! wildcards match subdomains), `insecure`, `blocked`,
//! `mirror-by-digest-only`, and `[[registry.mirror]]` `location`,
//! `insecure`, `pull-from-mirror`. What is not: short names stay Docker's
//! (`alpine` is `docker.io/library/alpine`), so
//! `unqualified-search-registries` and `[aliases]` are not consulted: a
//! strata reference means what it means to `docker pull`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// When a mirror may be used, by how the user named the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    /// Always.
    #[default]
    All,
    /// Never asked for a tag: it serves what is named by digest (the
    /// manifests a tag resolves to, at the origin, and every blob).
    DigestOnly,
    /// Only for images named by tag.
    TagOnly,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Table {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorTable {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<PullFromMirror>,
}

/// One `[[registry]]` entry, with the file that defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// What references it applies to.
    pub prefix: String,
    /// What the prefix is rewritten to.
    pub location: String,
    /// Plain HTTP and any certificate allowed.
    pub insecure: bool,
    /// Pulls are refused.
    pub blocked: bool,
    /// Mirrors in order.
    pub mirrors: Vec<MirrorEntry>,
    /// The file it came from (for messages).
    pub file: PathBuf,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEntry {
    /// Host and optional namespace the matched prefix is rewritten to.
    pub location: String,
    /// Plain HTTP and any certificate allowed.
    pub insecure: bool,
    /// When it may be used.
    pub pull_from: PullFromMirror,
}

/// The files to read, in order: the first of `$CONTAINERS_REGISTRIES_CONF`,
/// `~/.config/containers/registries.conf`, `/etc/containers/registries.conf`
/// that exists, then the `*.conf` drop-ins of
/// `/etc/containers/registries.conf.d` and
/// `~/.config/containers/registries.conf.d` (not with
/// `$CONTAINERS_REGISTRIES_CONF`, which names the one file to use), each
/// directory in name order. Later entries for a prefix replace earlier ones.
#[must_use]
pub fn usual_files() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let user = home.as_ref().map(|h| h.join(".config/containers"));
    if let Some(file) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(file)];
    }
    let mut files = Vec::new();
    let mains = [
        user.as_ref().map(|u| u.join("registries.conf")),
        Some(PathBuf::from("/etc/containers/registries.conf")),
    ];
    if let Some(main) = mains.into_iter().flatten().find(|p| p.is_file()) {
        files.push(main);
    }
    for dir in [
        Some(PathBuf::from("/etc/containers/registries.conf.d")),
        user.map(|u| u.join("registries.conf.d")),
    ]
    .into_iter()
    .flatten()
    {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

/// Reads the `[[registry]]` entries of `files` (missing files are skipped).
///
/// # Errors
/// A file that cannot be read or is not registries.conf v2 TOML, or an
/// entry without prefix and location; the error names the file.
pub fn load(files: &[PathBuf]) -> Result<Vec<RegistryEntry>> {
    let mut entries: Vec<RegistryEntry> = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        for entry in parse(&text, path)? {
            entries.retain(|e| e.prefix != entry.prefix);
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn parse(text: &str, path: &Path) -> Result<Vec<RegistryEntry>> {
    let invalid = |detail: String| Error::InvalidLayout {
        path: path.to_owned(),
        format: "containers-registries.conf (v2)",
        detail,
    };
    let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    file.registry
        .into_iter()
        .map(|t| {
            let location = t
                .location
                .clone()
                .or_else(|| t.prefix.clone())
                .ok_or_else(|| invalid("a [[registry]] has neither prefix nor location".into()))?;
            let prefix = t.prefix.clone().unwrap_or_else(|| location.clone());
            let default_pull = if t.mirror_by_digest_only {
                PullFromMirror::DigestOnly
            } else {
                PullFromMirror::All
            };
            Ok(RegistryEntry {
                prefix: prefix.trim_end_matches('/').to_owned(),
                location: location.trim_end_matches('/').to_owned(),
                insecure: t.insecure,
                blocked: t.blocked,
                mirrors: t
                    .mirror
                    .into_iter()
                    .map(|m| MirrorEntry {
                        location: m.location.trim_end_matches('/').to_owned(),
                        insecure: m.insecure,
                        pull_from: m.pull_from_mirror.unwrap_or(default_pull),
                    })
                    .collect(),
                file: path.to_owned(),
            })
        })
        .collect()
}

/// How well `prefix` matches `name` (`registry/repository`): the prefix's
/// length when it does. A prefix matches the name itself or a name that
/// goes on after it with `/`; `*.example.com` matches any subdomain's
/// names.
pub(crate) fn match_len(prefix: &str, name: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or(name);
        return (host.ends_with(&format!(".{domain}"))).then_some(prefix.len());
    }
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
}

/// The entry whose prefix matches `name` longest.
pub(crate) fn find<'a>(entries: &'a [RegistryEntry], name: &str) -> Option<&'a RegistryEntry> {
    entries
        .iter()
        .filter_map(|e| match_len(&e.prefix, name).map(|n| (n, e)))
        .max_by_key(|(n, _)| *n)
        .map(|(_, e)| e)
}

/// `name` with `prefix` replaced by `location` (a wildcard prefix keeps
/// the name's host).
pub(crate) fn rewrite(prefix: &str, location: &str, name: &str) -> String {
    if prefix.starts_with("*.") {
        return name.to_owned();
    }
    format!("{location}{}", &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true
[[registry.mirror]]
location = "mirror.example/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io/team"
location = "internal.example/team"

[[registry]]
location = "blocked.example"
blocked = true

[[registry]]
prefix = "*.corp.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "cache.corp.example"
"#;

    fn entries() -> Vec<RegistryEntry> {
        parse(CONF, Path::new("/etc/containers/registries.conf")).unwrap()
    }

    #[test]
    fn the_longest_prefix_wins_at_path_boundaries() {
        let e = entries();
        assert_eq!(
            find(&e, "docker.io/library/alpine").unwrap().prefix,
            "docker.io"
        );
        assert_eq!(
            find(&e, "docker.io/team/app").unwrap().prefix,
            "docker.io/team"
        );
        assert_eq!(
            find(&e, "docker.io/teamwork/app").unwrap().prefix,
            "docker.io"
        );
        assert!(find(&e, "docker.iox/a").is_none());
        assert_eq!(
            find(&e, "git.corp.example/a/b").unwrap().prefix,
            "*.corp.example"
        );
        assert!(find(&e, "corp.example/a").is_none());
    }

    #[test]
    fn locations_rewrite_the_prefix_and_mirrors_keep_their_order_and_modes() {
        let e = entries();
        let team = find(&e, "docker.io/team/app").unwrap();
        assert_eq!(
            rewrite(&team.prefix, &team.location, "docker.io/team/app"),
            "internal.example/team/app"
        );
        let hub = find(&e, "docker.io/library/alpine").unwrap();
        assert_eq!(hub.mirrors.len(), 2);
        assert!(hub.mirrors[0].insecure);
        assert_eq!(hub.mirrors[0].pull_from, PullFromMirror::All);
        assert_eq!(hub.mirrors[1].pull_from, PullFromMirror::DigestOnly);
        assert_eq!(
            rewrite(
                &hub.prefix,
                &hub.mirrors[1].location,
                "docker.io/library/alpine"
            ),
            "mirror.example/hub/library/alpine"
        );
        let corp = find(&e, "git.corp.example/a").unwrap();
        assert_eq!(
            corp.mirrors[0].pull_from,
            PullFromMirror::DigestOnly,
            "mirror-by-digest-only is the default mode"
        );
        assert!(find(&e, "blocked.example/x").unwrap().blocked);
    }

    #[test]
    fn a_later_file_replaces_an_entry_of_the_same_prefix_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, CONF).unwrap();
        std::fs::write(
            &b,
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"other.example\"\n",
        )
        .unwrap();
        let e = load(&[a.clone(), b.clone(), dir.path().join("missing.conf")]).unwrap();
        let hub = find(&e, "docker.io/library/alpine").unwrap();
        assert_eq!(hub.location, "other.example");
        assert_eq!(hub.file, b);
        std::fs::write(&b, "[[registry]]\ninsecure = true\n").unwrap();
        let err = load(std::slice::from_ref(&b)).unwrap_err().to_string();
        assert!(
            err.contains("b.conf") && err.contains("neither prefix nor location"),
            "{err}"
        );
        std::fs::write(&b, "[[registry]\n").unwrap();
        assert!(
            load(&[b])
                .unwrap_err()
                .to_string()
                .contains("registries.conf")
        );
    }
}
