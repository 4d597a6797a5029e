//! Where credentials come from: `--creds`, containers' `auth.json` and
//! Docker's `config.json` (`auths`, `credsStore`, `credHelpers`).

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::reference::DOCKER_HUB;
use crate::{Error, Result};

/// The key Docker uses for Docker Hub in `config.json` and with helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The other spellings of Docker Hub found in auth files.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password, personal access token or helper secret.
    pub password: String,
    /// Where they came from, for error messages ("--creds", a file path, a helper).
    pub origin: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Credentials {
    /// Parses `--creds USER[:PASSWORD]`.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the username is empty.
    pub fn from_flag(text: &str) -> Result<Self> {
        let (username, password) = text.split_once(':').unwrap_or((text, ""));
        if username.is_empty() {
            return Err(Error::Credentials {
                registry: String::new(),
                from: "--creds".into(),
                detail: "expected USERNAME[:PASSWORD]".into(),
            });
        }
        Ok(Self {
            username: username.to_owned(),
            password: password.to_owned(),
            origin: "--creds".into(),
        })
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The auth files to consult, in order, as skopeo and Docker do:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`.
#[must_use]
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        files.push(run.join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(home) = &home {
        files.push(home.join(".config/containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(dir) => files.push(dir.join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// Finds credentials for `registry`/`repository` in `files` (see [`auth_files`]).
///
/// The first file that has an entry for the registry wins. Within a file a
/// `credHelpers` entry wins over `credsStore`, which wins over `auths`; in
/// `auths` the longest key matching `registry[/repository]` wins.
///
/// # Errors
/// [`Error::Credentials`] for a file that does not parse or a helper that fails.
pub(crate) fn lookup(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    for file in files {
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(file, e)),
        };
        let parsed: AuthFile = serde_json::from_slice(&text).map_err(|e| Error::Credentials {
            registry: registry.to_owned(),
            from: file.display().to_string(),
            detail: format!("not valid JSON: {e}"),
        })?;
        if let Some(c) = lookup_in_file(&parsed, file, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn lookup_in_file(
    file: &AuthFile,
    path: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let helper_key = if registry == DOCKER_HUB {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k) == registry)
        .map(|(_, v)| v)
        .or(file.creds_store.as_ref());
    if let Some(helper) = helper {
        return run_helper(helper, helper_key, registry);
    }
    let target = format!("{registry}/{repository}");
    let best = file
        .auths
        .iter()
        .filter(|(k, _)| {
            let k = normalise_key(k);
            target == k || target.starts_with(&format!("{k}/"))
        })
        .max_by_key(|(k, _)| normalise_key(k).len());
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    let bad = |detail: &str| Error::Credentials {
        registry: registry.to_owned(),
        from: path.display().to_string(),
        detail: detail.to_owned(),
    };
    let (username, password) = if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("the \"auth\" field is not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad("the \"auth\" field is not UTF-8"))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| bad("the \"auth\" field is not base64 of USER:PASSWORD"))?;
        (u.to_owned(), p.to_owned())
    } else if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        (u.clone(), p.clone())
    } else {
        // An empty entry (Docker writes these next to credsStore): no credentials.
        return Ok(None);
    };
    Ok(Some(Credentials {
        username,
        password,
        origin: path.display().to_string(),
    }))
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`;
/// `quay.io/org` stays.
fn normalise_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    let (host, rest) = key.split_once('/').unwrap_or((key, ""));
    let host = if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB
    } else {
        host
    };
    if rest.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{rest}")
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// Runs `docker-credential-NAME get` with the server URL on stdin.
fn run_helper(name: &str, server: &str, registry: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let fail = |detail: String| Error::Credentials {
        registry: registry.to_owned(),
        from: program.clone(),
        detail,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it ({e}); is it installed and on PATH?")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(format!("writing to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "it failed ({}): {}{}",
            out.status,
            stdout.trim(),
            stderr.trim()
        )));
    }
    let reply: HelperReply = serde_json::from_str(&stdout).map_err(|e| {
        fail(format!(
            "its reply is not JSON with Username and Secret: {e}"
        ))
    })?;
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
        origin: program,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn key_spellings() {
        for (k, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("http://localhost:5000/v2/", "localhost:5000"),
            ("quay.io/org", "quay.io/org"),
            ("https://ghcr.io", "ghcr.io"),
        ] {
            assert_eq!(normalise_key(k), want, "{k}");
        }
    }

    #[test]
    fn auths_base64_and_plain_fields() {
        let dir = tempfile::tempdir().unwrap();
        let auth = STANDARD.encode("alice:s3cr:et");
        let f = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        );
        let hub = lookup(std::slice::from_ref(&f), "docker.io", "library/alpine")
            .unwrap()
            .unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cr:et")
        );
        let local = lookup(std::slice::from_ref(&f), "127.0.0.1:5000", "x")
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "bob");
        assert_eq!(lookup(&[f], "ghcr.io", "x").unwrap(), None);
    }

    #[test]
    fn longest_namespace_wins_and_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.json",
            r#"{"auths":{"quay.io":{"username":"any","password":"1"},"quay.io/org":{"username":"org","password":"2"}}}"#,
        );
        let b = write(
            dir.path(),
            "b.json",
            r#"{"auths":{"quay.io":{"username":"b","password":"3"}}}"#,
        );
        let files = [dir.path().join("missing.json"), a, b];
        assert_eq!(
            lookup(&files, "quay.io", "org/app")
                .unwrap()
                .unwrap()
                .username,
            "org"
        );
        assert_eq!(
            lookup(&files, "quay.io", "organic/app")
                .unwrap()
                .unwrap()
                .username,
            "any"
        );
    }

    #[test]
    fn broken_files_and_helpers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "c.json", "{not json");
        let err = lookup(&[f], "r", "x").unwrap_err().to_string();
        assert!(
            err.contains("c.json") && err.contains("not valid JSON"),
            "{err}"
        );
        let f = write(
            dir.path(),
            "h.json",
            r#"{"credHelpers":{"r.example":"strata-test-missing"}}"#,
        );
        let err = lookup(&[f], "r.example", "x").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-strata-test-missing"),
            "{err}"
        );
    }

    #[test]
    fn creds_flag() {
        let c = Credentials::from_flag("u:p:q").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:q"));
        assert!(Credentials::from_flag(":p").is_err());
        assert!(
            !format!("{c:?}").contains("p:q"),
            "Debug must not print the password"
        );
    }
}
