//! A new image from a base image and one more layer: the config with the
//! new diff_id, a history entry and the user's `--change` edits, and a
//! manifest in the base's format family (OCI stays OCI, Docker schema 2
//! stays Docker). Pure, on JSON values, so that what the base holds and
//! strata does not know (labels, annotations, fields of newer specs) is
//! carried over untouched.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use strata_layer::Compression;

/// One `--change KEY=VALUE`, as `podman commit --change` and `buildah
/// config` take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `CMD=…`: a JSON array (`["/bin/sh","-c"]`) or a shell form string.
    Cmd(Vec<String>),
    /// `ENTRYPOINT=…`, as `CMD`.
    Entrypoint(Vec<String>),
    /// `ENV=K=V`: sets K (replacing an earlier K).
    Env(String, String),
    /// `WORKDIR=/path`.
    Workdir(String),
    /// `USER=name[:group]`.
    User(String),
    /// `LABEL=K=V`.
    Label(String, String),
    /// `EXPOSE=80[/tcp]`.
    Expose(String),
}

impl std::str::FromStr for Change {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (key, value) = text.split_once('=').with_context(|| {
            format!("--change {text:?}: expected KEY=VALUE, e.g. CMD=[\"/bin/sh\"]")
        })?;
        let pair = |what: &str| -> Result<(String, String)> {
            let (k, v) = value.split_once('=').with_context(|| {
                format!("--change {text:?}: {what} takes NAME=VALUE, e.g. {key}=name=value")
            })?;
            if k.is_empty() {
                bail!("--change {text:?}: the {what} name is empty");
            }
            Ok((k.to_owned(), v.to_owned()))
        };
        Ok(match key.to_ascii_uppercase().as_str() {
            "CMD" => Self::Cmd(command_form(value, text)?),
            "ENTRYPOINT" => Self::Entrypoint(command_form(value, text)?),
            "ENV" => {
                let (k, v) = pair("ENV")?;
                Self::Env(k, v)
            }
            "LABEL" => {
                let (k, v) = pair("LABEL")?;
                Self::Label(k, v)
            }
            "WORKDIR" => Self::Workdir(value.to_owned()),
            "USER" => Self::User(value.to_owned()),
            "EXPOSE" => {
                let port = if value.contains('/') {
                    value.to_owned()
                } else {
                    format!("{value}/tcp")
                };
                let (number, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                if number.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto) {
                    bail!("--change {text:?}: EXPOSE takes PORT[/tcp|udp|sctp], e.g. EXPOSE=8080");
                }
                Self::Expose(port)
            }
            other => bail!(
                "--change {text:?}: {other} is not one of CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE"
            ),
        })
    }
}

/// `["a","b"]` (exec form) or a string run by `/bin/sh -c` (shell form),
/// as a Dockerfile reads them.
fn command_form(value: &str, text: &str) -> Result<Vec<String>> {
    if value.trim_start().starts_with('[') {
        return serde_json::from_str(value)
            .with_context(|| format!("--change {text:?}: not a JSON array of strings"));
    }
    if value.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), value.into()])
}

/// What the new layer is, for the config and the manifest.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// The tar's digest.
    pub diff_id: String,
    /// The blob's digest.
    pub digest: String,
    /// The blob's size.
    pub size: u64,
    /// Its compression.
    pub compression: Compression,
}

/// The history entry's fields.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// RFC 3339 time.
    pub created: String,
    /// `-m`.
    pub created_by: Option<String>,
    /// `--author`.
    pub author: Option<String>,
}

/// The base's config with the layer appended, the history entry and the
/// changes applied.
///
/// # Errors
/// A config that is not a JSON object with `rootfs.diff_ids`.
pub fn new_config(
    base: &str,
    layer: &NewLayer,
    history: &History,
    changes: &[Change],
) -> Result<Vec<u8>> {
    let mut config: Value =
        serde_json::from_str(base).context("parsing the base image's config")?;
    let root = config
        .as_object_mut()
        .context("the base image's config is not a JSON object")?;
    root.get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .context("the base image's config has no rootfs.diff_ids")?
        .push(json!(layer.diff_id));
    root.insert("created".into(), json!(history.created));
    if let Some(author) = &history.author {
        root.insert("author".into(), json!(author));
    }
    let mut entry = Map::new();
    entry.insert("created".into(), json!(history.created));
    if let Some(by) = &history.created_by {
        entry.insert("created_by".into(), json!(by));
    }
    if let Some(author) = &history.author {
        entry.insert("author".into(), json!(author));
    }
    entry.insert("comment".into(), json!("strata commit"));
    match root.get_mut("history").and_then(Value::as_array_mut) {
        Some(list) => list.push(Value::Object(entry)),
        None => {
            root.insert("history".into(), json!([entry]));
        }
    }
    let settings = root
        .entry("config")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("the base image's config.config is not a JSON object")?;
    for change in changes {
        apply_change(settings, change);
    }
    Ok(serde_json::to_vec(&config).expect("a JSON value serialises"))
}

fn apply_change(settings: &mut Map<String, Value>, change: &Change) {
    let object = |settings: &mut Map<String, Value>, key: &str| -> Map<String, Value> {
        settings
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    match change {
        Change::Cmd(cmd) => {
            settings.insert("Cmd".into(), json!(cmd));
        }
        Change::Entrypoint(entrypoint) => {
            settings.insert("Entrypoint".into(), json!(entrypoint));
        }
        Change::Env(key, value) => {
            let mut env: Vec<Value> = settings
                .get("Env")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let prefix = format!("{key}=");
            env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
            env.push(json!(format!("{key}={value}")));
            settings.insert("Env".into(), Value::Array(env));
        }
        Change::Workdir(dir) => {
            settings.insert("WorkingDir".into(), json!(dir));
        }
        Change::User(user) => {
            settings.insert("User".into(), json!(user));
        }
        Change::Label(key, value) => {
            let mut labels = object(settings, "Labels");
            labels.insert(key.clone(), json!(value));
            settings.insert("Labels".into(), Value::Object(labels));
        }
        Change::Expose(port) => {
            let mut ports = object(settings, "ExposedPorts");
            ports.insert(port.clone(), json!({}));
            settings.insert("ExposedPorts".into(), Value::Object(ports));
        }
    }
}

/// Whether a manifest is Docker schema 2 (else OCI).
fn is_docker(manifest: &Value) -> bool {
    manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
}

/// The media type of a new layer on `base` (a manifest), in its family.
///
/// # Errors
/// A manifest that does not parse, or zstd on a Docker schema 2 base (that
/// format has no zstd layer type).
pub fn layer_media_type(base: &str, compression: Compression) -> Result<&'static str> {
    let manifest: Value =
        serde_json::from_str(base).context("parsing the base image's manifest")?;
    Ok(match (is_docker(&manifest), compression) {
        (true, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
        (true, Compression::Zstd) => bail!(
            "the base is a Docker schema 2 image, which has no zstd layers: commit with --compression gzip, or start from an OCI image"
        ),
        (false, compression) => compression.oci_media_type(),
    })
}

/// The base's manifest with the new config and the layer appended.
///
/// # Errors
/// A manifest without `layers`, or a layer type its family lacks.
pub fn new_manifest(
    base: &str,
    config_digest: &str,
    config_size: u64,
    layer: &NewLayer,
) -> Result<Vec<u8>> {
    let media_type = layer_media_type(base, layer.compression)?;
    let mut manifest: Value =
        serde_json::from_str(base).context("parsing the base image's manifest")?;
    let root = manifest
        .as_object_mut()
        .context("the base image's manifest is not a JSON object")?;
    let config = root
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .context("the base image's manifest has no config")?;
    config.insert("digest".into(), json!(config_digest));
    config.insert("size".into(), json!(config_size));
    root.get_mut("layers")
        .and_then(Value::as_array_mut)
        .context("the base image's manifest has no layers")?
        .push(json!({
            "mediaType": media_type,
            "digest": layer.digest,
            "size": layer.size,
        }));
    Ok(serde_json::to_vec(&manifest).expect("a JSON value serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(compression: Compression) -> NewLayer {
        NewLayer {
            diff_id: "sha256:d".into(),
            digest: "sha256:b".into(),
            size: 7,
            compression,
        }
    }

    #[test]
    fn changes_parse_as_podman_takes_them() {
        let parse = |s: &str| s.parse::<Change>().unwrap();
        assert_eq!(
            parse(r#"CMD=["/bin/app","-v"]"#),
            Change::Cmd(vec!["/bin/app".into(), "-v".into()])
        );
        assert_eq!(
            parse("ENTRYPOINT=exec app"),
            Change::Entrypoint(vec!["/bin/sh".into(), "-c".into(), "exec app".into()])
        );
        assert_eq!(
            parse("ENV=PATH=/opt/bin:/bin"),
            Change::Env("PATH".into(), "/opt/bin:/bin".into())
        );
        assert_eq!(
            parse("label=a.b=c"),
            Change::Label("a.b".into(), "c".into())
        );
        assert_eq!(parse("EXPOSE=8080"), Change::Expose("8080/tcp".into()));
        for bad in ["CMD", "FROM=x", "ENV=novalue", "EXPOSE=http", "CMD=[1,2]"] {
            let err = bad.parse::<Change>().unwrap_err().to_string();
            assert!(err.contains(bad.split('=').next().unwrap()), "{bad}: {err}");
        }
    }

    #[test]
    fn the_config_gains_the_layer_history_and_changes_and_keeps_the_rest() {
        let base = r#"{"architecture":"amd64","os":"linux","x-unknown":1,
            "config":{"Env":["PATH=/bin","A=1"],"Cmd":["/bin/sh"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:a"]},
            "history":[{"created_by":"base"}]}"#;
        let history = History {
            created: "2026-01-01T00:00:00Z".into(),
            created_by: Some("install app".into()),
            author: Some("me".into()),
        };
        let changes = [
            "ENV=A=2",
            "WORKDIR=/srv",
            "LABEL=k=v",
            "EXPOSE=53/udp",
            "USER=app",
        ]
        .map(|c| c.parse().unwrap());
        let out: Value = serde_json::from_slice(
            &new_config(base, &layer(Compression::Gzip), &history, &changes).unwrap(),
        )
        .unwrap();
        assert_eq!(out["rootfs"]["diff_ids"], json!(["sha256:a", "sha256:d"]));
        assert_eq!(out["history"][1]["created_by"], "install app");
        assert_eq!(out["history"][1]["author"], "me");
        assert_eq!(out["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(out["config"]["Cmd"], json!(["/bin/sh"]));
        assert_eq!(out["config"]["WorkingDir"], "/srv");
        assert_eq!(out["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(out["config"]["ExposedPorts"], json!({"53/udp": {}}));
        assert_eq!(out["x-unknown"], 1);
    }

    #[test]
    fn the_manifest_stays_in_its_family() {
        let oci = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":1},
            "layers":[]}"#;
        let out: Value = serde_json::from_slice(
            &new_manifest(oci, "sha256:n", 9, &layer(Compression::Zstd)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(out["config"]["digest"], "sha256:n");
        assert_eq!(
            out["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let docker = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":1},
            "layers":[]}"#;
        let out: Value = serde_json::from_slice(
            &new_manifest(docker, "sha256:n", 9, &layer(Compression::Gzip)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let err = new_manifest(docker, "sha256:n", 9, &layer(Compression::Zstd)).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
