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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
    let value: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if value.get("registries").is_some_and(toml::Value::is_table) {
        return Err(invalid(
            "it is in the v1 format ([registries.search], [registries.block], …), which strata does not read; rewrite it as v2 [[registry]] tables (containers-registries.conf(5))".into(),
        ));
    }
    let file: File = value
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let check = |what: &str, location: &str| -> Result<()> {
        if location.contains("://") {
            return Err(invalid(format!(
                "{what} {location:?} has a scheme; a location is HOST[:PORT][/PATH] (insecure = true allows plain HTTP)"
            )));
        }
        if location.is_empty() || location.starts_with('/') {
            return Err(invalid(format!("{what} {location:?} names no host")));
        }
        Ok(())
    };
    for t in &file.registry {
        let wildcard = t.prefix.as_deref().is_some_and(|p| p.starts_with("*."));
        if let Some(l) = &t.location
            && !(wildcard && l.is_empty())
        {
            check("location", l)?;
        }
        if wildcard && t.location.as_deref().is_some_and(|l| !l.is_empty()) {
            return Err(invalid(format!(
                "the wildcard prefix {:?} cannot have a location",
                t.prefix.as_deref().unwrap_or_default()
            )));
        }
        for m in &t.mirror {
            check("mirror location", &m.location)?;
        }
    }
    file.registry
        .into_iter()
        .map(|t| {
            let location = t
                .location
                .clone()
                .filter(|l| !l.is_empty())
                .or_else(|| t.prefix.clone())
                .ok_or_else(|| invalid("a [[registry]] has neither prefix nor location".into()))?;
            let prefix = t.prefix.clone().unwrap_or_else(|| location.clone());
            // A wildcard entry's own location is the matched host itself.
            let location = if prefix.starts_with("*.") {
                String::new()
            } else {
                location
            };
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

/// How well `prefix` matches `reference` (`registry/repository` and its
/// `:tag` or `@digest`): the prefix's length when it does. A prefix matches
/// the reference itself or one that goes on after it with `/`, `:` or
/// `@` (so a prefix may name a tag or digest); `*.example.com` matches any
/// subdomain's references, with or without a port.
pub(crate) fn match_len(prefix: &str, reference: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = reference.split('/').next().unwrap_or(reference);
        let host = host.split(':').next().unwrap_or(host);
        return (host.ends_with(&format!(".{domain}"))).then_some(prefix.len());
    }
    let rest = reference.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with(['/', ':', '@'])).then_some(prefix.len())
}

/// The entry whose prefix matches `name` + `suffix` (`:tag`, `@digest` or
/// nothing) longest.
pub(crate) fn find<'a>(
    entries: &'a [RegistryEntry],
    name: &str,
    suffix: &str,
) -> Option<&'a RegistryEntry> {
    let full = format!("{name}{suffix}");
    entries
        .iter()
        .filter_map(|e| match_len(&e.prefix, &full).map(|n| (n, e)))
        .max_by_key(|(n, _)| *n)
        .map(|(_, e)| e)
}

/// `name` (`registry/repository`) with the matched prefix replaced by
/// `location`. A wildcard prefix matched the host: a location replaces the
/// host; an empty one (the entry's own) keeps it. A prefix that named a tag
/// or digest rewrites the repository part it covers.
pub(crate) fn rewrite(prefix: &str, location: &str, name: &str) -> String {
    if prefix.starts_with("*.") {
        return match name.split_once('/') {
            Some((_, rest)) if !location.is_empty() => format!("{location}/{rest}"),
            _ => name.to_owned(),
        };
    }
    let covered = prefix.len().min(name.len());
    format!("{location}{}", &name[covered..])
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

    fn find_name<'a>(e: &'a [RegistryEntry], name: &str) -> Option<&'a RegistryEntry> {
        find(e, name, "")
    }

    fn entries() -> Vec<RegistryEntry> {
        parse(CONF, Path::new("/etc/containers/registries.conf")).unwrap()
    }

    #[test]
    fn the_longest_prefix_wins_at_path_boundaries() {
        let e = entries();
        assert_eq!(
            find_name(&e, "docker.io/library/alpine").unwrap().prefix,
            "docker.io"
        );
        assert_eq!(
            find_name(&e, "docker.io/team/app").unwrap().prefix,
            "docker.io/team"
        );
        assert_eq!(
            find_name(&e, "docker.io/teamwork/app").unwrap().prefix,
            "docker.io"
        );
        assert!(find_name(&e, "docker.iox/a").is_none());
        assert_eq!(
            find_name(&e, "git.corp.example/a/b").unwrap().prefix,
            "*.corp.example"
        );
        assert!(find_name(&e, "corp.example/a").is_none());
    }

    #[test]
    fn locations_rewrite_the_prefix_and_mirrors_keep_their_order_and_modes() {
        let e = entries();
        let team = find_name(&e, "docker.io/team/app").unwrap();
        assert_eq!(
            rewrite(&team.prefix, &team.location, "docker.io/team/app"),
            "internal.example/team/app"
        );
        let hub = find_name(&e, "docker.io/library/alpine").unwrap();
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
        let corp = find_name(&e, "git.corp.example/a").unwrap();
        assert_eq!(
            corp.mirrors[0].pull_from,
            PullFromMirror::DigestOnly,
            "mirror-by-digest-only is the default mode"
        );
        assert!(find_name(&e, "blocked.example/x").unwrap().blocked);
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
        let hub = find_name(&e, "docker.io/library/alpine").unwrap();
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
