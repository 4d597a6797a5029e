//! What the process may do, probed once.

use std::path::Path;

use crate::subid::{self, SubIds};

/// How image ids land on host ids in strata's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Namespace id 0 is the user, 1.. are the subuid/subgid range: every
    /// image owner below the range's size is kept (mapped).
    Ranges,
    /// Only the user is mapped (to 0): files cannot have the image's owners,
    /// which are recorded in an xattr instead.
    Single,
}

/// An ordinary user, and what the system grants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The real uid.
    pub uid: u32,
    /// The real gid.
    pub gid: u32,
    /// The login name (`/etc/passwd`), which `/etc/subuid` usually names.
    pub name: Option<String>,
    /// The subuid range.
    pub uids: Option<SubIds>,
    /// The subgid range.
    pub gids: Option<SubIds>,
}

impl User {
    fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let name = login_name(Path::new("/etc/passwd"), uid);
        Self {
            uid,
            gid,
            uids: subid::lookup(Path::new("/etc/subuid"), name.as_deref(), uid),
            gids: subid::lookup(Path::new("/etc/subgid"), name.as_deref(), uid),
            name,
        }
    }

    /// Ranges when both a subuid and a subgid range exist, else single.
    #[must_use]
    pub fn mapping(&self) -> Mapping {
        if self.uids.is_some() && self.gids.is_some() {
            Mapping::Ranges
        } else {
            Mapping::Single
        }
    }

    /// The name for messages and hints (the uid without one).
    #[must_use]
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uid.to_string())
    }

    /// What to run to give the user a range (for the single-mapping warning).
    #[must_use]
    pub fn range_hint(&self) -> String {
        format!(
            "as root: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}`",
            self.label()
        )
    }
}

/// What the process may do. Decided once, at start, and passed down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Root in the initial user namespace: owners, devices, `trusted.*`
    /// xattrs, mounts.
    Root,
    /// Root inside a user namespace (strata's own, entered by
    /// `strata unshare`, or another tool's): owners as far as the mapping
    /// goes, overlay mounts with `userxattr`; no devices, no `trusted.*`.
    Namespaced {
        /// What the namespace maps.
        mapping: Mapping,
    },
    /// An ordinary user: work on the store happens in strata's namespace.
    User(User),
}

impl Privilege {
    /// Looks at the process: its euid, its user namespace's id map, and
    /// for an ordinary user the subuid/subgid ranges.
    #[must_use]
    pub fn probe() -> Self {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let mapped = mapped_ids(&uid_map);
        if rustix::process::geteuid().is_root() {
            // The initial namespace maps every id to itself.
            if mapped == Some(u64::from(u32::MAX)) && uid_map.split_whitespace().nth(1) == Some("0")
            {
                return Self::Root;
            }
            let mapping = if mapped.unwrap_or(0) > 1 {
                Mapping::Ranges
            } else {
                Mapping::Single
            };
            return Self::Namespaced { mapping };
        }
        Self::User(User::current())
    }

    /// Whether anything but root in the initial namespace.
    #[must_use]
    pub fn is_rootless(&self) -> bool {
        !matches!(self, Self::Root)
    }

    /// How ids map, for a rootless process (`None` for root).
    #[must_use]
    pub fn mapping(&self) -> Option<Mapping> {
        match self {
            Self::Root => None,
            Self::Namespaced { mapping } => Some(*mapping),
            Self::User(user) => Some(user.mapping()),
        }
    }

    /// Whether device nodes can be made: only root in the initial namespace.
    #[must_use]
    pub fn makes_devices(&self) -> bool {
        matches!(self, Self::Root)
    }

    /// The ordinary user, who must enter strata's namespace before working
    /// on the store; `None` for root, in a namespace or not.
    #[must_use]
    pub fn user(&self) -> Option<&User> {
        match self {
            Self::User(user) => Some(user),
            _ => None,
        }
    }
}

/// How many ids an id map maps (`None` when it cannot be read).
fn mapped_ids(map: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for line in map.lines() {
        let count: u64 = line.split_whitespace().nth(2)?.parse().ok()?;
        total += count;
        any = true;
    }
    any.then_some(total)
}

fn login_name(passwd: &Path, uid: u32) -> Option<String> {
    let text = std::fs::read_to_string(passwd).ok()?;
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        (parts.nth(1)? == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_count_what_they_map() {
        assert_eq!(
            mapped_ids("         0          0 4294967295\n"),
            Some(4_294_967_295)
        );
        assert_eq!(mapped_ids("0 1000 1\n1 100000 65536\n"), Some(65537));
        assert_eq!(mapped_ids(""), None);
    }

    #[test]
    fn login_names_come_from_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(login_name(&passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(login_name(&passwd, 1001), None);
    }

    #[test]
    fn the_probe_sees_this_process() {
        let p = Privilege::probe();
        assert_eq!(p.is_rootless(), !rustix::process::geteuid().is_root());
        if let Some(user) = p.user() {
            assert_eq!(user.uid, rustix::process::getuid().as_raw());
        }
    }
}
