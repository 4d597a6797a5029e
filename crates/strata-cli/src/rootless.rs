//! Where an ordinary user's strata enters its user namespace, and what it
//! checks first: the one place the CLI acts on the probed privilege beyond
//! turning it into the libraries' options (`Context::layer_options`).

use anyhow::{Context as _, Result};
use strata_stack::{Store, StoreKind};
use strata_userns::{Holder, Mapping, Namespace, Privilege};
use tracing::warn;

use crate::Command;
use crate::context::Context;

/// For an ordinary user and a command that works on the store: checks the
/// store, then enters (starting if need be) the store's namespace.
///
/// # Errors
/// A root-made store; a store that refuses `user.*` xattrs; the
/// namespace's own refusals (no `newuidmap`, user namespaces disabled).
pub(crate) fn enter(command: &Command, ctx: &Context) -> Result<Option<Namespace>> {
    let Some(user) = ctx.privilege.user() else {
        return Ok(None);
    };
    if !command.in_namespace() {
        return Ok(None);
    }
    let root = ctx.store_root();
    Store::check_kind(&root, StoreKind::Rootless)?;
    if command.writes_layers() {
        if user.mapping() == Mapping::Single {
            warn!(
                "{} has no subuid/subgid range: files keep the image's owners only in the user.containers.override_stat xattr (flatten and commit restore them; a mount shows them all as root). To add one, {}",
                user.label(),
                user.range_hint()
            );
        }
        strata_userns::check_user_xattrs(&root)?;
    }
    let namespace = Namespace::enter(&root.join("ns"), user).with_context(|| {
        format!(
            "entering strata's user namespace for the store at {} as {}",
            root.display(),
            user.label()
        )
    })?;
    Ok(Some(namespace))
}

/// The holder the process works under: the one it entered, or (inside
/// `strata unshare`) the one named in the environment.
pub(crate) fn holder(ctx: &Context, namespace: Option<&Namespace>) -> Option<Holder> {
    if let Some(namespace) = namespace {
        return Some(namespace.holder());
    }
    if !matches!(ctx.privilege, Privilege::Namespaced { .. }) {
        return None;
    }
    std::env::var(crate::commands::unshare::HOLDER_ENV)
        .ok()
        .and_then(|id| Holder::from_id(&id))
        .filter(Holder::alive)
}

/// Whether mounts still live in `holder`'s namespace (then it keeps
/// running). When the store cannot be read, yes: a holder is never stopped
/// under a mount.
pub(crate) fn mounts_need(ctx: &Context, holder: Holder) -> bool {
    let Ok(Some(store)) = ctx.existing_store() else {
        return true;
    };
    let id = holder.id();
    store.mounts().map_or(true, |mounts| {
        mounts
            .iter()
            .any(|m| !m.kept && m.holder.as_deref() == Some(id.as_str()))
    })
}
