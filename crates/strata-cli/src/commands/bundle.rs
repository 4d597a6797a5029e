//! `strata bundle IMAGE DIR`: an OCI runtime bundle (DIR/config.json and
//! DIR/rootfs) that `runc run` or `crun run` starts.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};
use strata_registry::ImageRef;

use crate::commands::flatten::{flatten_into, prepare_empty_dir};
use crate::context::Context;
use crate::output::Output;

/// Write an OCI runtime bundle: DIR/rootfs (flattened) and DIR/config.json
///
/// config.json is what `runc spec` writes (namespaces, mounts, capabilities),
/// with the image's entrypoint and cmd, env, working directory and user.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata bundle alpine:latest ./bundle && runc run -b ./bundle demo"
)]
pub struct BundleArgs {
    /// The image
    pub image: ImageRef,
    /// The bundle directory; created if missing, must be empty
    pub dir: PathBuf,
}

/// Looks `name` up in an /etc/passwd or /etc/group of the rootfs.
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name)).then(|| {
            Some((
                fields.get(2)?.parse().ok()?,
                fields.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
            ))
        })?
    })
}

/// `user`, `uid`, `user:group`, `uid:gid` → numeric ids, as runtimes need them.
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup_by_uid(rootfs, uid).unwrap_or(0)),
        Err(_) => lookup(rootfs, "etc/passwd", u)
            .with_context(|| format!("user {u:?} of the image config is not in its /etc/passwd"))?,
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(rootfs, "etc/group", g)
                .map(|(gid, _)| gid)
                .with_context(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

fn lookup_by_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
    })
}

/// The runtime spec for an image config and its flattened rootfs.
fn runtime_spec(config: &ImageConfiguration, rootfs: &Path) -> Result<Spec> {
    let image = config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = image.entrypoint().clone().unwrap_or_default();
    args.extend(image.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        args.push("sh".into());
    }
    let env = image.env().clone().unwrap_or_else(|| {
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
    });
    let cwd = image
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let (uid, gid) = resolve_user(image.user().as_deref().unwrap_or(""), rootfs)?;
    let mut spec = Spec::default();
    let defaults = spec.process().clone().unwrap_or_default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(defaults.capabilities().clone().unwrap_or_default())
        .rlimits(defaults.rlimits().clone().unwrap_or_default())
        .no_new_privileges(true)
        .build()?;
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()?,
    ));
    spec.set_hostname(Some("strata".into()));
    Ok(spec)
}

/// Runs the command.
pub fn run(args: &BundleArgs, ctx: &Context, out: &mut Output) -> Result<()> {
    prepare_empty_dir(&args.dir)?;
    let rootfs = args.dir.join("rootfs");
    let config_bytes = flatten_into(ctx, &args.image, &rootfs)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).context("parsing the image config")?;
    let spec = runtime_spec(&config, &rootfs)?;
    let path = args.dir.join("config.json");
    spec.save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    if ctx.store_args.json {
        out.json(&serde_json::json!({"bundle": dir, "args": spec.process().as_ref().and_then(|p| p.args().clone())}))
    } else {
        out.line(&dir.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("", dir.path()).unwrap(), (0, 0));
        assert_eq!(resolve_user("app", dir.path()).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("1000", dir.path()).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("app:staff", dir.path()).unwrap(), (1000, 50));
        assert_eq!(resolve_user("42:7", dir.path()).unwrap(), (42, 7));
        assert!(
            resolve_user("nobody", dir.path())
                .unwrap_err()
                .to_string()
                .contains("not in its /etc/passwd")
        );
    }
}
